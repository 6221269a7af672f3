"""The public archive of sent issues (site-wide or one list's, paged), each issue's page, and the Atom feeds.

`/archive?list=SLUG&page=N` and `/feed.xml?list=SLUG` show one public list's issues; without `list`, all.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from newsletter import i18n, links, rendering
from newsletter.digests import from_stored
from newsletter.models import Campaign, CampaignStatus, Digest, MailingList, Visibility, campaign_lists
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.web.pages import list_context, not_found, pages, site_context
from newsletter.web.public import schema

router = APIRouter()
PER_PAGE = 10
INTRO_CHARS = 280  # an archive entry shows the start of the issue's intro
ListQuery = Query(None, alias="list", max_length=100, description="A public list's slug: only its issues")
PageQuery = Query(1, ge=1, le=100_000, description="The page of the archive, newest first")


def _sent_campaigns(list_id: int | None = None) -> Any:
    """Campaigns that went out to a public list (or to this one): a draft is not shown before its email is."""
    query = (
        select(Campaign.id)
        .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
        .join(MailingList, MailingList.id == campaign_lists.c.list_id)
        .where(
            Campaign.status.in_([CampaignStatus.sending, CampaignStatus.finished]),
            MailingList.visibility == Visibility.public,
        )
    )
    return query if list_id is None else query.where(MailingList.id == list_id)


def _archived(list_id: int | None = None) -> Any:
    """Digests with a campaign that went out to a public list (frozen, then: what was sent stays shown)."""
    return select(Campaign.digest_id).where(Campaign.id.in_(_sent_campaigns(list_id)))


def archived_digests(
    session: Session, limit: int | None = None, *, list_id: int | None = None, offset: int = 0
) -> list[Digest]:
    query = (
        select(Digest)
        .where(Digest.id.in_(_archived(list_id).scalar_subquery()))
        .options(selectinload(Digest.items))
        .order_by(Digest.date.desc(), Digest.id.desc())
        .offset(offset)
    )
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def archived_count(session: Session, list_id: int | None = None) -> int:
    return session.scalar(select(func.count()).where(Digest.id.in_(_archived(list_id).scalar_subquery()))) or 0


def latest_issue(session: Session, list_id: int) -> Digest | None:
    """The newest issue sent to a public list, for the subscribe and confirm pages to link to."""
    newest = archived_digests(session, 1, list_id=list_id)
    return newest[0] if newest else None


def public_list(session: Session, slug: str | None) -> MailingList | None:
    if not slug:
        return None
    return session.scalar(
        select(MailingList).where(MailingList.slug == slug, MailingList.visibility == Visibility.public)
    )


def _intro(digest: Digest) -> str:
    text = " ".join(rendering.intro_text(digest.intro or "").split())
    return text if len(text) <= INTRO_CHARS else text[:INTRO_CHARS].rsplit(" ", 1)[0] + "…"


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
def archive(
    request: Request, session: SessionDep, list_slug: str | None = ListQuery, page: int = PageQuery
) -> Response:
    one = public_list(session, list_slug)
    if list_slug and one is None:
        return not_found(request, session, i18n.N_("There is no such newsletter"))
    total = archived_count(session, one.id if one else None)
    pages_count = max(1, -(-total // PER_PAGE))
    if page > pages_count:
        return not_found(request, session, i18n.N_("There is no such page of the archive"))
    if one is not None:
        subscribable = [one]
        context = {**list_context(one, request), "archive_href": f"{links.ARCHIVE}?list={one.slug}"}
        context["feed_href"] = f"{links.FEED}?list={one.slug}"
    else:
        subscribable = list(
            session.scalars(
                select(MailingList).where(MailingList.visibility == Visibility.public).order_by(MailingList.name)
            )
        )
        context = site_context(request, session)
    gettext = i18n.translations(context["lang"]).gettext
    digests = archived_digests(session, PER_PAGE, list_id=one.id if one else None, offset=(page - 1) * PER_PAGE)
    return pages(request).render(
        "archive.html",
        title=gettext("Archive") if one is None else gettext("%(list)s: archive") % {"list": one.name},
        description=one.description if one else "",
        digests=[{"digest": digest, "intro": _intro(digest)} for digest in digests],
        page=page,
        pages_count=pages_count,
        subscribe_lists=subscribable,
        robots="index",
        **context,
    )


@router.get(
    f"{links.ARCHIVE}/{{slug}}",
    response_model=None,
    responses=schema.page({200: schema.answer("An issue", schema.HTML)}),
)
def archived_digest(slug: str, request: Request, session: SessionDep) -> Response:
    digest = session.scalar(select(Digest).where(Digest.slug == slug, Digest.id.in_(_archived().scalar_subquery())))
    if digest is None:
        return not_found(request, session, i18n.N_("There is no such issue"))
    home = _home_list(session, digest)
    context = list_context(home, request) if home is not None else site_context(request, session)
    # An issue's page is in the issue's language (its chrome matches the email), else the reader's.
    context["lang"] = i18n.supported(digest.language) or context["lang"]
    return pages(request).render(
        "digest.html",
        title=digest.title,
        robots="index",
        subscribe_lists=[home] if home is not None else [],
        **rendering.digest_page_context(from_stored(digest), context["lang"]),
        **context,
    )


def _home_list(session: Session, digest: Digest) -> MailingList | None:
    """The first public list an issue went to: its page wears that list's theme and offers its subscription."""
    return session.scalar(
        select(MailingList)
        .join(campaign_lists, campaign_lists.c.list_id == MailingList.id)
        .join(Campaign, Campaign.id == campaign_lists.c.campaign_id)
        .where(Campaign.id.in_(_sent_campaigns()), Campaign.digest_id == digest.id)
        .where(MailingList.visibility == Visibility.public)
        .order_by(MailingList.id)
        .limit(1)
    )


@router.get(
    links.FEED,
    response_model=None,
    responses=schema.page({200: schema.answer("The Atom feed", "application/atom+xml")}),
)
def feed(request: Request, session: SessionDep, settings: SettingsDep, list_slug: str | None = ListQuery) -> Response:
    """Atom feed of the archive (or of one list's): each entry carries the whole issue as HTML."""
    one = public_list(session, list_slug)
    if list_slug and one is None:
        return not_found(request, session, i18n.N_("There is no such newsletter"))
    site = list_context(one) if one is not None else site_context(request, session)
    language = i18n.supported(one.language if one else None) or i18n.DEFAULT
    digests = archived_digests(session, limit=20, list_id=one.id if one else None)
    query = f"?list={one.slug}" if one is not None else ""
    from feedgen.feed import FeedGenerator  # with lxml, ~5 MB that only the feed's requests need

    generator = FeedGenerator()
    generator.id(links.archive_url(settings.base_url) + query)
    generator.title(site["publication"] if one is None else one.name)
    generator.author({"name": site["publication"]})
    generator.link(href=links.archive_url(settings.base_url) + query, rel="alternate")
    generator.link(href=links.feed_url(settings.base_url) + query, rel="self")
    generator.language(language)
    sent_at = first_sent(session, digests)
    newest = max(sent_at.values(), default=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    generator.updated(newest)
    for digest in reversed(digests):  # feedgen prepends: add oldest first so the newest leads
        url = links.archive_url(settings.base_url, digest.slug)
        entry_language = i18n.supported(digest.language) or language
        body = pages(request).environment_for(entry_language).get_template("digest_body.html")
        entry = generator.add_entry()
        entry.id(url)
        entry.title(digest.title)
        entry.link(href=url, rel="alternate")
        entry.published(sent_at[digest.id])
        entry.updated(sent_at[digest.id])
        context = rendering.digest_page_context(from_stored(digest), entry_language)
        entry.content(body.render(**context), type="html")
    return Response(
        generator.atom_str(pretty=False),
        media_type="application/atom+xml",
        headers={"Cache-Control": "public, max-age=300"},
    )
