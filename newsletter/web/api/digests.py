"""Admin API: publish digests (DESIGN §5's JSON form) and read them back; editors and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from newsletter import delivery, digests, models, previews
from newsletter.web.api.deps import Editor
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute
from newsletter.web.api.params import SlugPath
from newsletter.web.api.schemas import SLUG_PATTERN, DigestOut, DigestSummary, Published
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["digests"], route_class=ApiRoute)


@router.post(
    "/digests",
    status_code=201,
    responses=CONFLICT,
    summary="Publish a digest; publishing the same content again is a no-op (created: false)",
)
def publish(body: digests.Digest, session: SessionDep, _: Editor) -> Published:
    # The body is validated by the same model as the CLI's files, so both report the same problems.
    stored, created = digests.publish(session, body)
    return Published(slug=stored.slug, created=created)


@router.get("/digests", summary="Published digests, newest first")
def list_digests(
    session: SessionDep, _: Editor, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DigestSummary]:
    item_count = (
        select(func.count(models.DigestItem.id))
        .where(models.DigestItem.digest_id == models.Digest.id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(models.Digest, item_count).order_by(models.Digest.date.desc(), models.Digest.id.desc()).limit(limit)
    )
    return [
        DigestSummary(slug=d.slug, title=d.title, date=d.date, published_at=d.published_at, items=count)
        for d, count in rows
    ]


@router.get("/digests/{slug}", responses=NOT_FOUND, summary="One digest with its items")
def get_digest(session: SessionDep, _: Editor, slug: SlugPath) -> DigestOut:
    digest = session.scalar(
        select(models.Digest).where(models.Digest.slug == slug).options(selectinload(models.Digest.items))
    )
    if digest is None:
        raise delivery.DigestNotFound(slug)
    return DigestOut.model_validate(digest, from_attributes=True)


@router.get(
    "/digests/{slug}/preview",
    # Errors stay JSON like every other route; only the 200 answer is the email itself.
    responses={**NOT_FOUND, 200: {"content": {"text/html": {}, "text/plain": {}}, "description": "The email."}},
    response_model=None,
    summary="The email exactly as a subscriber of the list would get it, for a sample recipient",
)
def preview(
    session: SessionDep,
    settings: SettingsDep,
    _: Editor,
    slug: SlugPath,
    list_slug: Annotated[str | None, Query(alias="list", pattern=SLUG_PATTERN)] = None,
    text: Annotated[bool, Query(description="The text part instead of the HTML.")] = False,
) -> Response:
    shown = previews.preview_digest(session, settings, slug, list_slug)
    if text:
        return PlainTextResponse(shown.text)
    return HTMLResponse(shown.html)
