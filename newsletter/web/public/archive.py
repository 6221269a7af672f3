"""The public archive of sent issues, each issue's page, and the Atom feed of the newest."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from feedgen.feed import FeedGenerator
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from newsletter import links, rendering
from newsletter.digests import from_stored
from newsletter.models import Campaign, CampaignStatus, Digest, MailingList, Visibility, campaign_lists
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.web.pages import not_found, pages, site_context
from newsletter.web.public import schema

router = APIRouter()


def _sent_campaigns() -> Any:
    """Campaigns that went out to a public list: a draft is not shown before its email is."""
    return (
        select(Campaign.id)
        .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
        .join(MailingList, MailingList.id == campaign_lists.c.list_id)
        .where(
            Campaign.status.in_([CampaignStatus.sending, CampaignStatus.finished]),
            MailingList.visibility == Visibility.public,
        )
    )


def _archived() -> Any:
    """Digests with a campaign that went out to a public list (frozen, then: what was sent stays shown)."""
    return select(Campaign.digest_id).where(Campaign.id.in_(_sent_campaigns()))


def archived_digests(session: Session, limit: int | None = None) -> list[Digest]:
    query = (
        select(Digest)
        .where(Digest.id.in_(_archived().scalar_subquery()))
        .options(selectinload(Digest.items))
        .order_by(Digest.date.desc(), Digest.id.desc())
    )
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def first_sent(session: Session, digests: list[Digest]) -> dict[int, dt.datetime]:
    """When each digest first went out: a draft may have been written weeks before it was sent, and the feed
    dates an issue by when readers got it."""
    rows = session.execute(
        select(Campaign.digest_id, func.min(func.coalesce(Campaign.started_at, Campaign.created_at)))
        .where(Campaign.digest_id.in_([digest.id for digest in digests]), Campaign.id.in_(_sent_campaigns()))
        .group_by(Campaign.digest_id)
    )
    return {digest_id: sent_at for digest_id, sent_at in rows if digest_id is not None}


@router.get(links.ARCHIVE, response_model=None, responses=schema.page({200: schema.answer("The archive", schema.HTML)}))
def archive(request: Request, session: SessionDep) -> Response:
    subscribable = session.scalars(
        select(MailingList).where(MailingList.visibility == Visibility.public).order_by(MailingList.name)
    ).all()
    return pages(request).render(
        "archive.html",
        title="Archive",
        digests=archived_digests(session),
        subscribe_lists=subscribable,
        format_date=rendering.format_date,
        robots="index",
        **site_context(request, session),
    )


@router.get(
    f"{links.ARCHIVE}/{{slug}}",
    response_model=None,
    responses=schema.page({200: schema.answer("An issue", schema.HTML)}),
)
def archived_digest(slug: str, request: Request, session: SessionDep) -> Response:
    digest = session.scalar(select(Digest).where(Digest.slug == slug, Digest.id.in_(_archived().scalar_subquery())))
    if digest is None:
        return not_found(request, session, "There is no such issue")
    return pages(request).render(
        "digest.html",
        title=digest.title,
        robots="index",
        **rendering.digest_page_context(from_stored(digest)),
        **site_context(request, session),
    )


@router.get(
    links.FEED,
    response_model=None,
    responses=schema.page({200: schema.answer("The Atom feed", "application/atom+xml")}),
)
def feed(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Atom feed of the archive: each entry carries the whole issue as HTML."""
    site = site_context(request, session)
    digests = archived_digests(session, limit=20)
    generator = FeedGenerator()
    generator.id(links.archive_url(settings.base_url))
    generator.title(site["publication"])
    generator.author({"name": site["publication"]})
    generator.link(href=links.archive_url(settings.base_url), rel="alternate")
    generator.link(href=links.feed_url(settings.base_url), rel="self")
    generator.language("en")
    sent_at = first_sent(session, digests)
    newest = max(sent_at.values(), default=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    generator.updated(newest)
    body = pages(request).environment.get_template("digest_body.html")
    for digest in reversed(digests):  # feedgen prepends: add oldest first so the newest leads
        url = links.archive_url(settings.base_url, digest.slug)
        entry = generator.add_entry()
        entry.id(url)
        entry.title(digest.title)
        entry.link(href=url, rel="alternate")
        entry.published(sent_at[digest.id])
        entry.updated(sent_at[digest.id])
        entry.content(body.render(**rendering.digest_page_context(from_stored(digest))), type="html")
    return Response(
        generator.atom_str(pretty=False),
        media_type="application/atom+xml",
        headers={"Cache-Control": "public, max-age=300"},
    )
