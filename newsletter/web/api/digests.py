"""Admin API: store digest drafts (JSON, YAML or Markdown, DESIGN §5), edit and duplicate them, read them back;
editors and admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from newsletter import delivery, digest_index, digests, models, previews
from newsletter.web.api.deps import Editor
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute, described
from newsletter.web.api.params import SlugPath
from newsletter.web.api.schemas import NO_NUL, SLUG_PATTERN, DigestOut, DigestSummary, DuplicateIn, Published
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["digests"], route_class=ApiRoute)

# Content-Type -> source format; the body is read by the same parser as the CLI's files.
FORMATS: dict[str, digests.DigestFormat] = {
    "application/json": "json",
    "text/markdown": "md",
    "application/yaml": "yaml",
    "text/yaml": "yaml",
}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` written in place: an OpenAPI document has no `#/$defs`."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_SCHEMA = _inlined(digests.Digest.model_json_schema())
DIGEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A digest as JSON, YAML, or Markdown with front matter (the format of `digests publish`).",
        "content": {
            "application/json": {"schema": _SCHEMA},
            "application/yaml": {"schema": _SCHEMA},
            "text/yaml": {"schema": _SCHEMA},
            "text/markdown": {"schema": {"type": "string"}},
        },
    }
}
UNSUPPORTED: dict[int | str, dict[str, Any]] = {415: described("The Content-Type is not JSON, YAML or Markdown.")}


async def digest_body(request: Request) -> digests.Digest:
    """The request body parsed by its Content-Type; 415 for any other type, 422 naming each problem."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = FORMATS.get(media_type)
    if fmt is None:
        raise HTTPException(
            415, f"Content-Type {media_type or '(none)'!r} is not a digest format: use " + ", ".join(FORMATS)
        )
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise digests.InvalidDigest(f"the body is not UTF-8 text (byte {exc.start})") from None
    return digests.parse_digest(text, fmt)


DigestBody = Annotated[digests.Digest, Depends(digest_body)]


@router.post(
    "/digests",
    status_code=201,
    responses={**CONFLICT, **UNSUPPORTED},
    openapi_extra=DIGEST_BODY,
    summary="Store a digest draft; storing the same content again is a no-op (created: false)",
)
def publish(body: DigestBody, session: SessionDep, _: Editor) -> Published:
    stored, created = digests.publish(session, body)
    return Published(slug=stored.slug, created=created)


@router.put(
    "/digests/{slug}",
    responses={**NOT_FOUND, **CONFLICT, **UNSUPPORTED},
    openapi_extra=DIGEST_BODY,
    summary="Replace a draft's content; 409 once a campaign uses the digest (duplicate it to edit)",
)
def update(slug: SlugPath, body: DigestBody, session: SessionDep, _: Editor) -> DigestOut:
    return _out(session, digests.update(session, slug, body))


@router.post(
    "/digests/{slug}/duplicate",
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
    summary="A new editable draft with the same content, under `slug` or SLUG-copy",
)
def duplicate(slug: SlugPath, session: SessionDep, _: Editor, body: DuplicateIn | None = None) -> DigestOut:
    return _out(session, digests.duplicate(session, slug, body.slug if body else None))


def _out(session: SessionDep, digest: models.Digest) -> DigestOut:
    used = digests.campaigns_using(session, digest)
    return DigestOut.model_validate(
        {
            **{key: getattr(digest, key) for key in ("slug", "title", "date", "language", "intro", "preheader")},
            "published_at": digest.published_at,
            "updated_at": digest.updated_at,
            "frozen": bool(used),
            "campaigns": [campaign.id for campaign in used],
            "items": digest.items,
        }
    )


@router.get("/digests", summary="Digests (drafts and frozen), newest first, each with where it stands")
def list_digests(
    session: SessionDep,
    _: Editor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    q: Annotated[
        str | None, Query(max_length=digest_index.MAX_SEARCH, pattern=NO_NUL, description="Title search.")
    ] = None,
) -> list[DigestSummary]:
    shown = digest_index.page(session, search=q, limit=limit)
    return [
        DigestSummary(
            slug=row.slug,
            title=row.title,
            date=row.date,
            published_at=row.published_at,
            updated_at=row.updated_at,
            status=row.status,
            items=row.items,
        )
        for row in shown.rows
    ]


@router.get("/digests/{slug}", responses=NOT_FOUND, summary="One digest with its items")
def get_digest(session: SessionDep, _: Editor, slug: SlugPath) -> DigestOut:
    digest = session.scalar(
        select(models.Digest).where(models.Digest.slug == slug).options(selectinload(models.Digest.items))
    )
    if digest is None:
        raise delivery.DigestNotFound(slug)
    return _out(session, digest)


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
