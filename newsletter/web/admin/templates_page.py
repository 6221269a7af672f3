"""/admin/templates (admins): upload a custom digest template (the sandboxed test render's error, with its
line, shown beside the field), preview it on any digest in the sandboxed preview frame, and choose each
list's default template."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import audit, lists, previews, templates
from newsletter.models import Digest
from newsletter.web.admin.auth import Admin, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import EMAIL_PREVIEW_CSP, html_response, redirect, render
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
TEMPLATES = "/admin/templates"
TemplateName = Annotated[str, Path(pattern=templates.NAME.pattern)]
DigestChoice = Annotated[str | None, Query(max_length=200)]


def _list_page(request: Request, session: Session, *, errors: dict[str, str] | None = None, **form: str) -> Response:
    stored = templates.list_templates(session)
    return render(
        request,
        "templates/list.html",
        title="Digest templates",
        stored=stored,
        used_by={t.id: templates.lists_using(session, t) for t in stored},
        lists=lists.all_lists(session),
        errors=errors or {},
        form={"name": "", "source": "", **form},
        max_chars=templates.MAX_SOURCE_CHARS,
        status_code=422 if errors else 200,
    )


@router.get(TEMPLATES)
def template_list(request: Request, session: SessionDep, me: Admin) -> Response:
    return _list_page(request, session)


def _source(source: str, upload: UploadFile | None) -> tuple[str, str | None]:
    """The template text: the uploaded file when one was chosen, else the text area; or why not."""
    if upload is None or not upload.filename:
        return source, None
    data = upload.file.read(templates.MAX_SOURCE_CHARS * 4 + 1)  # more is refused by save_template's limit
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return "", f"{upload.filename} is not UTF-8 text: save it as UTF-8 and upload it again."


@router.post(TEMPLATES)
def upload_template(
    request: Request,
    session: SessionDep,
    me: Admin,
    name: Annotated[str, Form(max_length=200)] = "",
    source: Annotated[str, Form(max_length=templates.MAX_SOURCE_CHARS * 4)] = "",
    file: UploadFile | None = None,
) -> Response:
    text, unreadable = _source(source, file)
    if unreadable:
        return _list_page(request, session, errors={"source": unreadable}, name=name, source=source)
    name = name.strip()
    try:
        saved = templates.save_template(session, name, text)
    except templates.InvalidTemplate as exc:
        session.rollback()
        field = "name" if not templates.NAME.match(name) else "source"
        return _list_page(request, session, errors={field: str(exc)}, name=name, source=text)
    audit.record(session, actor(request, me), "template.save", f"template:{saved.name}", characters=len(text))
    return redirect(
        request, f"{TEMPLATES}/{saved.name}", flash=f"Template {saved.name} saved: it rendered the sample digest."
    )


def _digests(session: Session) -> list[Any]:
    return list(session.execute(select(Digest.slug, Digest.title).order_by(Digest.id.desc()).limit(100)))


@router.get(TEMPLATES + "/{name}")
def template_page(
    request: Request, session: SessionDep, me: Admin, name: TemplateName, digest: DigestChoice = None
) -> Response:
    template = templates.get_template(session, name)
    choices = _digests(session)
    chosen = digest if digest in {c.slug for c in choices} else (choices[0].slug if choices else None)
    return render(
        request,
        "templates/page.html",
        title=f"Template {template.name}",
        stored=template,
        used_by=templates.lists_using(session, template),
        digests=choices,
        chosen=chosen,
        src=f"{TEMPLATES}/{name}/preview?digest={chosen}" if chosen else None,
    )


@router.get(TEMPLATES + "/{name}/preview")
def template_preview(
    session: SessionDep,
    settings: SettingsDep,
    me: Admin,
    name: TemplateName,
    digest: Annotated[str, Query(max_length=200)],
) -> Response:
    """The digest rendered with this template, as sent, for the sandboxed frame (its own CSP, no script)."""
    try:
        shown = previews.preview_digest(session, settings, digest, template=name)
    except previews.NoListToPreview as exc:
        return html_response(f"<p style='font-family:sans-serif'>{escape(str(exc))}</p>", csp=EMAIL_PREVIEW_CSP)
    return html_response(shown.html, csp=EMAIL_PREVIEW_CSP)


@router.post(TEMPLATES + "/defaults")
def set_default(
    request: Request,
    session: SessionDep,
    me: Admin,
    list_slug: Annotated[str, Form(alias="list", max_length=100)] = "",
    template: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    mailing_list = templates.set_list_default(session, list_slug, template or None)
    audit.record(
        session, actor(request, me), "list.update", f"list:{mailing_list.slug}", default_template=template or None
    )
    which = f"template {template}" if template else "the bundled template"
    return redirect(request, TEMPLATES, flash=f"Campaigns to {mailing_list.name} use {which} unless another is chosen.")
