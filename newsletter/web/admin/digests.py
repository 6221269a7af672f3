"""Digest pages: the table of drafts and sent digests, the editor (a form of items or the Markdown source,
saved as you go) with the email's live preview and the pre-send check, and a frozen digest read-only.

The preview is the email itself at its own URL with its own CSP (inline styles, https images, no script),
shown in `<iframe sandbox="">`: the page's CSP stays 'self' only. Without JavaScript every button is a
submit button that re-renders the page; with htmx the same handlers answer with the changed fragment.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import deliverability, digest_index, digests, previews
from newsletter.digests import DigestConflict, InvalidDigest, Unrepresentable
from newsletter.models import MailingList
from newsletter.web.admin.auth import Editor
from newsletter.web.admin.digest_form import DigestForm
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import EMAIL_PREVIEW_CSP, html_response, redirect, render
from newsletter.web.api.params import SlugPath
from newsletter.web.api.schemas import SLUG_PATTERN
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
BASE = "/admin/digests"
PAGE_SIZE = 25
WIDTHS = ("600", "320")
DARK_QUERY = "@media (prefers-color-scheme: dark)"

ListParam = Annotated[str | None, Query(alias="list", pattern=SLUG_PATTERN)]
WidthParam = Annotated[str, Query(pattern=r"^(600|320)$")]
SchemeParam = Annotated[str, Query(pattern=r"^(light|dark)$")]


async def posted_form(request: Request) -> dict[str, str]:
    """The form's text fields (the admin body limit has capped its size before it is read)."""
    form = await request.form()
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


Posted = Annotated[dict[str, str], Depends(posted_form)]


def _page(request: Request, template: str, **context: Any) -> Response:
    return render(request, template, base=BASE, **context)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


# --- the table -------------------------------------------------------------------------------------------


@router.get(BASE)
def digest_list(
    request: Request,
    session: SessionDep,
    me: Editor,
    q: Annotated[str | None, Query(max_length=digest_index.MAX_SEARCH)] = None,
    older: Annotated[str | None, Query(max_length=40)] = None,
    newer: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    shown = digest_index.page(session, search=q, older=older, newer=newer, limit=PAGE_SIZE)
    context: dict[str, Any] = {
        "page": shown,
        "q": q or "",
    }
    if is_htmx(request) and request.headers.get("HX-Target") == "digest-table":
        return _page(request, "digests/_table.html", **context)
    return _page(request, "digests/list.html", title="Digests", **context)


# --- a new draft -----------------------------------------------------------------------------------------


@router.get(f"{BASE}/new")
def new_digest(request: Request, me: Editor) -> Response:
    return _page(request, "digests/new.html", title="New digest", form=DigestForm.blank())


@router.post(f"{BASE}/new")
def create_digest(request: Request, session: SessionDep, me: Editor, posted: Posted) -> Response:
    form = DigestForm.posted(posted)
    action = posted.get("action", "save")
    if action != "save":
        form.apply(action)
        template = "digests/_items.html" if is_htmx(request) else "digests/new.html"
        return _page(request, template, title="New digest", form=form, slug=None)
    digest = form.validate()
    if digest is None:
        return _page(request, "digests/new.html", title="New digest", form=form, status_code=422)
    try:
        stored, created = digests.publish(session, digest)
    except DigestConflict as exc:
        form.problems["slug"] = str(exc)
        return _page(request, "digests/new.html", title="New digest", form=form, status_code=409)
    flash = "Draft created." if created else "A digest with exactly this content exists already: here it is."
    return redirect(request, f"{BASE}/{stored.slug}", flash=flash)


@router.post(f"{BASE}/new/markdown")
def create_from_markdown(request: Request, session: SessionDep, me: Editor, posted: Posted) -> Response:
    """A new draft from pasted Markdown (the format of `digests publish`)."""
    text = posted.get("markdown", "").replace("\r\n", "\n")
    try:
        stored, created = digests.publish(session, digests.parse_digest(text, "md"))
    except (InvalidDigest, DigestConflict) as exc:
        problems = list(exc.problems) if isinstance(exc, InvalidDigest) else [str(exc)]
        status = 422 if isinstance(exc, InvalidDigest) else 409
        return _page(
            request,
            "digests/new.html",
            title="New digest",
            form=DigestForm.blank(),
            markdown=text,
            markdown_errors=problems,
            status_code=status,
        )
    flash = "Draft created." if created else "A digest with exactly this content exists already: here it is."
    return redirect(request, f"{BASE}/{stored.slug}", flash=flash)


# --- the editor ------------------------------------------------------------------------------------------


def _lists(session: Session) -> list[MailingList]:
    return list(session.scalars(select(MailingList).order_by(MailingList.id)))


def preview_options(
    session: Session, slug: str, list_slug: str | None, width: str, scheme: str, version: str
) -> dict[str, Any]:
    """What the preview frame shows: for which list, how wide, light or dark, and its URL."""
    lists = _lists(session)
    chosen = list_slug if any(m.slug == list_slug for m in lists) else (lists[0].slug if lists else None)
    query = {"v": version[:12], "scheme": scheme, **({"list": chosen} if chosen else {})}
    return {
        "lists": lists,
        "list_slug": chosen,
        "width": width,
        "scheme": scheme,
        "src": f"{BASE}/{slug}/preview?{urlencode(query)}",
    }


def _editor_context(
    session: Session,
    stored_slug: str,
    *,
    list_slug: str | None = None,
    width: str = "600",
    scheme: str = "light",
) -> dict[str, Any]:
    stored = digests.get_published(session, stored_slug)
    model = digests.from_stored(stored)
    try:
        markdown, markdown_problem = digests.to_markdown(model), None
    except Unrepresentable as exc:
        markdown, markdown_problem = "", str(exc)
    return {
        "stored": stored,
        "slug": stored.slug,
        "model": model,
        "markdown": markdown,
        "markdown_problem": markdown_problem,
        "campaigns": digests.campaigns_using(session, stored),
        "preview": preview_options(session, stored.slug, list_slug, width, scheme, stored.content_hash),
    }


@router.get(BASE + "/{slug}")
def edit_digest(
    request: Request,
    session: SessionDep,
    me: Editor,
    slug: SlugPath,
    view: Annotated[str, Query(pattern=r"^(form|markdown)$")] = "form",
    list_slug: ListParam = None,
    width: WidthParam = "600",
    scheme: SchemeParam = "light",
    check: bool = False,
) -> Response:
    context = _editor_context(session, slug, list_slug=list_slug, width=width, scheme=scheme)
    if check:
        context["check"] = run_check(session, request, slug, context["preview"]["list_slug"])
    template = "digests/frozen.html" if context["campaigns"] else "digests/editor.html"
    return _page(
        request, template, title=context["model"].title, form=DigestForm.of(context["model"]), view=view, **context
    )


def _posted_preview(session: Session, slug: str, posted: dict[str, str], version: str) -> dict[str, Any]:
    """The preview as the editor's controls have it (sent along with every save), so a refresh keeps it."""
    width = posted.get("width") or "600"
    width = width if width in WIDTHS else "600"
    scheme = "dark" if posted.get("scheme") == "dark" else "light"
    return preview_options(session, slug, posted.get("list"), width, scheme, version)


@router.post(BASE + "/{slug}")
def save_digest(request: Request, session: SessionDep, me: Editor, slug: SlugPath, posted: Posted) -> Response:
    """The form's Save and its add/remove/move buttons; whatever valid content they leave is saved."""
    return _save_form(request, session, slug, posted, posted.get("action", "save"))


@router.post(BASE + "/{slug}/autosave")
def autosave_digest(request: Request, session: SessionDep, me: Editor, slug: SlugPath, posted: Posted) -> Response:
    """The form saved as you type (htmx, debounced): the save status, the preview and each field's error."""
    return _save_form(request, session, slug, posted, "autosave")


def _save_form(request: Request, session: Session, slug: str, posted: dict[str, str], action: str) -> Response:
    form = DigestForm.posted(posted)
    if action not in ("save", "autosave"):
        form.apply(action)
    digest = form.validate(slug=slug)
    if digest is not None:
        digests.update(session, slug, digest)
        session.flush()
    htmx = is_htmx(request)
    if action == "save" and not htmx and digest is not None:
        return redirect(request, f"{BASE}/{slug}", flash="Saved.")
    context = _editor_context(session, slug)
    context.update(form=form, view="form", saved=digest is not None, fragment=htmx)
    context["preview"] = _posted_preview(session, slug, posted, context["stored"].content_hash)
    if htmx:
        template = "digests/_saved.html" if action == "autosave" else "digests/_items.html"
        return _page(request, template, **context)
    status = 200 if digest is not None else 422
    return _page(request, "digests/editor.html", title=form.top["title"] or slug, status_code=status, **context)


@router.post(BASE + "/{slug}/markdown")
def save_markdown(request: Request, session: SessionDep, me: Editor, slug: SlugPath, posted: Posted) -> Response:
    text = posted.get("markdown", "").replace("\r\n", "\n")
    problems: list[str] = []
    try:
        digests.update(session, slug, digests.parse_digest(text, "md"))
        session.flush()
    except InvalidDigest as exc:
        problems = list(exc.problems)
    if not problems and not is_htmx(request):
        return redirect(request, f"{BASE}/{slug}?view=markdown", flash="Saved.")
    context = _editor_context(session, slug)
    context.update(saved=not problems, markdown_errors=problems, view="markdown", fragment=is_htmx(request))
    context["preview"] = _posted_preview(session, slug, posted, context["stored"].content_hash)
    if is_htmx(request):
        return _page(request, "digests/_saved.html", form=None, **context)
    context["markdown"] = text  # what was typed, kept, beside what is wrong with it
    return _page(
        request,
        "digests/editor.html",
        title=context["model"].title,
        form=DigestForm.of(context["model"]),
        status_code=422,
        **context,
    )


# --- preview, check, duplicate ---------------------------------------------------------------------------


@router.get(BASE + "/{slug}/preview")
def preview(
    session: SessionDep,
    settings: SettingsDep,
    me: Editor,
    slug: SlugPath,
    list_slug: ListParam = None,
    scheme: SchemeParam = "light",
) -> Response:
    """The email exactly as the list's subscribers get it (the sending code composes it), for the frame."""
    try:
        shown = previews.preview_digest(session, settings, slug, list_slug)
    except previews.NoListToPreview as exc:
        return html_response(f"<p style='font-family:sans-serif'>{escape(str(exc))}</p>", csp=EMAIL_PREVIEW_CSP)
    html = shown.html.replace(DARK_QUERY, "@media all") if scheme == "dark" else shown.html
    return html_response(html, csp=EMAIL_PREVIEW_CSP)


@router.get(BASE + "/{slug}/frame")
def preview_frame(
    request: Request,
    session: SessionDep,
    me: Editor,
    slug: SlugPath,
    list_slug: ListParam = None,
    width: WidthParam = "600",
    scheme: SchemeParam = "light",
) -> Response:
    """The preview frame alone, when the list, width or dark mode changes (htmx)."""
    stored = digests.get_published(session, slug)
    options = preview_options(session, slug, list_slug, width, scheme, stored.content_hash)
    return _page(request, "digests/_frame.html", preview=options)


def run_check(session: Session, request: Request, slug: str, list_slug: str | None) -> dict[str, Any]:
    """The pre-send check for the panel: findings (most severe first) and the HTML size against Gmail's limit."""
    settings = request.app.state.settings
    if list_slug is None:
        return {"findings": [], "size": None, "no_list": True}
    shown = previews.preview_digest(session, settings, slug, list_slug, tracking=True)
    findings = deliverability.check(session, settings, slug, list_slug, spamassassin=False)
    return {
        "findings": findings,
        "errors": len(deliverability.errors(findings)),
        "size": len(shown.html.encode("utf-8")),
        "limit": deliverability.HTML_ERROR_BYTES,
        "warn": deliverability.HTML_WARNING_BYTES,
        "no_list": False,
    }


@router.get(BASE + "/{slug}/check")
def check_fragment(
    request: Request, session: SessionDep, me: Editor, slug: SlugPath, list_slug: ListParam = None
) -> Response:
    stored = digests.get_published(session, slug)
    options = preview_options(session, slug, list_slug, "600", "light", stored.content_hash)
    return _page(
        request, "digests/_check.html", check=run_check(session, request, slug, options["list_slug"]), slug=slug
    )


@router.post(BASE + "/{slug}/duplicate")
def duplicate(request: Request, session: SessionDep, me: Editor, slug: SlugPath) -> Response:
    copy = digests.duplicate(session, slug)
    return redirect(request, f"{BASE}/{copy.slug}", flash=f"This is a new draft, a copy of {slug}: edit away.")
