"""/admin/lists: every list with its counts, a new list, one list's settings (theme, tracking, CORS origins,
the subscribe form's fields) with the embed snippet of its form, the export of its subscribers, and delete
after the slug is typed. Validation is the domain's (newsletter.lists); its message goes beside the field."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from newsletter import audit, exports, i18n, lists
from newsletter.addresses import InvalidEmail, normalise_email
from newsletter.models import MailingList, OptIn, Visibility
from newsletter.subscribers import Search
from newsletter.web.admin.auth import Admin, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.api.lists import csv_response
from newsletter.web.api.params import SlugPath
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
LISTS = "/admin/lists"
TEXT_FIELDS = ("slug", "name", "description", "from_name", "from_email", "reply_to", "postal_address", "verp_address")
THEME_FIELDS = ("publication_name", "logo_url", "accent_color")
FIELDS = (
    *TEXT_FIELDS,
    *THEME_FIELDS,
    "language",
    "opt_in",
    "visibility",
    "tracking",
    "verp",
    "cors_origins",
    "form_fields",
)
MAX_FIELD = 10_000


async def _values(request: Request) -> dict[str, str]:
    """The submitted form as text (the CSRF check already parsed it), each field cut to a sane length."""
    form = await request.form()
    values = {name: str(form.get(name, ""))[:MAX_FIELD] for name in FIELDS}
    values["tracking"] = "on" if form.get("tracking") else ""
    values["verp"] = "on" if form.get("verp") else ""
    return values


def _values_of(mailing_list: MailingList) -> dict[str, str]:
    theme = mailing_list.theme or {}
    return {
        **{name: str(getattr(mailing_list, name) or "") for name in TEXT_FIELDS},
        **{name: str(theme.get(name, "")) for name in THEME_FIELDS},
        "language": mailing_list.language or "",
        "opt_in": mailing_list.opt_in.value,
        "visibility": mailing_list.visibility.value,
        "tracking": "on" if mailing_list.tracking else "",
        "verp": "on" if mailing_list.verp else "",
        "cors_origins": "\n".join(mailing_list.cors_origins or []),
        "form_fields": "\n".join(
            f"{f['name']}:{f.get('label', '')}{':required' if f.get('required') else ''}"
            for f in mailing_list.form_fields or []
        ),
    }


def _changes(values: dict[str, str]) -> dict[str, Any]:
    """The arguments of lists.update_list that the form's values stand for."""
    return {
        **{name: values[name] for name in TEXT_FIELDS if name not in ("slug", "reply_to")},
        "reply_to": values["reply_to"].strip() or None,
        "language": values["language"],  # blank clears it: the pages follow each reader's browser
        "opt_in": OptIn(values["opt_in"]) if values["opt_in"] in {o.value for o in OptIn} else OptIn.double,
        "visibility": Visibility(values["visibility"])
        if values["visibility"] in {v.value for v in Visibility}
        else Visibility.public,
        "tracking": bool(values["tracking"]),
        "verp": bool(values["verp"]),
        "theme": {name: values[name].strip() for name in THEME_FIELDS if values[name].strip()},
        "cors_origins": values["cors_origins"].splitlines(),
        "form_fields": [lists.parse_form_field(line) for line in values["form_fields"].splitlines() if line.strip()],
    }


def field_of(message: str) -> str:
    """Which form field a domain message is about (they start with the field's name)."""
    head = message.partition(":")[0].strip()
    if head.startswith("theme"):
        rest = message.partition(":")[2]
        return next((name for name in THEME_FIELDS if name in rest), "publication_name")
    if head.startswith(("slug", "a list with slug")):
        return "slug"
    return head if head in FIELDS else "name"


def problems(values: dict[str, str], changes: dict[str, Any], *, new: bool) -> dict[str, str]:
    """Every field's problem at once, each found by the domain's own check."""
    found: dict[str, str] = {}

    def check(field: str, run: Any) -> None:
        try:
            run()
        except (lists.InvalidList, InvalidEmail, i18n.InvalidLanguage) as exc:
            found[field_of(str(exc)) if isinstance(exc, lists.InvalidList) else field] = str(exc)

    if new and not lists.SLUG.match(values["slug"]):
        found["slug"] = "Use lowercase letters, digits and dashes (at most 100), such as weekly-digest."
    elif new and values["slug"] in lists.RESERVED_SLUGS:
        found["slug"] = f"{values['slug']!r} is taken by the admin's own pages; choose another, such as weekly-digest."
    if not " ".join(values["name"].split()):
        found["name"] = "Give the list a name; readers see it in the From line and the footer."
    check("from_email", lambda: normalise_email(values["from_email"]))
    if changes["reply_to"]:
        check("reply_to", lambda: normalise_email(changes["reply_to"]))
    check("language", lambda: i18n.check_language(values["language"]))
    check("cors_origins", lambda: lists.check_cors_origins(changes["cors_origins"]))
    check("form_fields", lambda: lists.check_form_fields(changes["form_fields"]))
    if "name" not in found:
        name = values["publication_name"] or values["name"]
        check("accent_color", lambda: lists.check_theme(changes["theme"], list_name=name, postal_address=""))
    return found


def _form_page(
    request: Request, session: Session, values: dict[str, str], errors: dict[str, str], list_: MailingList | None
) -> Response:
    context: dict[str, Any] = {}
    languages = language_choices("None: each reader's browser decides")
    if list_ is not None:
        settings = request.app.state.settings
        context = {
            "counts": lists.subscription_counts(session, list_.id),
            "action": f"{LISTS}/{list_.slug}",
            "subscribe_url": f"{settings.base_url}/subscribe/{list_.slug}",
            "form_fields": list_.form_fields or [],
            "statuses": exports.EXPORT_STATUSES,
            "language_label": dict(languages).get(list_.language or "", list_.language),
        }
    return render(
        request,
        "lists/form.html",
        status_code=422 if errors else 200,
        title=list_.name if list_ is not None else "New list",
        values=values,
        errors=errors,
        mailing_list=list_,
        languages=languages,
        **({"action": f"{LISTS}/new"} | context),
    )


def language_choices(blank: str) -> list[tuple[str, str]]:
    """The options of a language select: blank (what it means here), then every catalog found."""
    return [("", blank)] + [(code, f"{i18n.language_name(code)} ({code})") for code in i18n.available()]


@router.get(LISTS)
def list_index(request: Request, session: SessionDep, me: Admin) -> Response:
    everything = lists.all_lists(session)
    counts = {m.id: lists.subscription_counts(session, m.id) for m in everything}
    return render(request, "lists/index.html", title="Lists", lists=everything, counts=counts)


@router.get(LISTS + "/new")
def new_list_form(request: Request, session: SessionDep, settings: SettingsDep, me: Admin) -> Response:
    values = dict.fromkeys(FIELDS, "") | {"opt_in": "double", "visibility": "public"}
    values["tracking"] = "on" if settings.track_default else ""
    values["verp"] = "on"
    return _form_page(request, session, values, {}, None)


@router.post(LISTS + "/new")
async def create(request: Request, session: SessionDep, me: Admin) -> Response:
    values = await _values(request)
    changes = _changes(values)
    errors = problems(values, changes, new=True)
    if not errors:
        try:
            created = lists.create_list(
                session, slug=values["slug"], name=values["name"], from_email=values["from_email"]
            )
            lists.update_list(session, created.slug, **changes)
            audit.record(session, actor(request, me), "list.create", f"list:{created.slug}")
        except (lists.InvalidList, InvalidEmail) as exc:
            session.rollback()
            errors = {field_of(str(exc)): str(exc)}
    if errors:
        return _form_page(request, session, values, errors, None)
    return redirect(request, f"{LISTS}/{values['slug']}", flash=f"Created the list {values['name']}.")


@router.get(LISTS + "/{slug}")
def list_page(request: Request, session: SessionDep, me: Admin, slug: SlugPath) -> Response:
    mailing_list = lists.get_list(session, slug)
    return _form_page(request, session, _values_of(mailing_list), {}, mailing_list)


@router.post(LISTS + "/{slug}")
async def update(request: Request, session: SessionDep, me: Admin, slug: SlugPath) -> Response:
    mailing_list = lists.get_list(session, slug)
    values = await _values(request) | {"slug": slug}
    changes = _changes(values)
    errors = problems(values, changes, new=False)
    if not errors:
        try:
            lists.update_list(session, slug, **changes)
            audit.record(session, actor(request, me), "list.update", f"list:{slug}")
        except (lists.InvalidList, InvalidEmail) as exc:
            session.rollback()
            errors = {field_of(str(exc)): str(exc)}
    if errors:
        session.rollback()
        return _form_page(request, session, values, errors, lists.get_list(session, slug))
    return redirect(request, f"{LISTS}/{slug}", flash=f"Saved the settings of {mailing_list.name}.")


@router.get(LISTS + "/{slug}/delete")
def delete_confirmation(request: Request, session: SessionDep, me: Admin, slug: SlugPath) -> Response:
    return _delete_page(request, session, lists.get_list(session, slug), error=None)


def _delete_page(request: Request, session: Session, mailing_list: MailingList, error: str | None) -> Response:
    return render(
        request,
        "lists/delete.html",
        status_code=422 if error else 200,
        title=f"Delete {mailing_list.name}?",
        mailing_list=mailing_list,
        removal=lists.removal(session, mailing_list),
        error=error,
    )


@router.post(LISTS + "/{slug}/delete")
async def delete(request: Request, session: SessionDep, me: Admin, slug: SlugPath) -> Response:
    mailing_list = lists.get_list(session, slug)
    typed = str((await request.form()).get("confirm_slug", "")).strip()
    if typed != slug:
        return _delete_page(request, session, mailing_list, error=f"Type {slug} exactly to delete this list.")
    try:
        removed = lists.delete_list(session, slug)
        audit.record(
            session, actor(request, me), "list.delete", f"list:{slug}",
            subscriptions=removed.subscriptions, sequence_steps=removed.sequence_steps,
        )  # fmt: skip
    except lists.ListInUse as exc:
        session.rollback()
        return _delete_page(request, session, lists.get_list(session, slug), error=str(exc))
    sequence = " and its welcome sequence" if removed.sequence_steps else ""
    return redirect(request, LISTS, flash=f"Deleted the list {slug}, its subscriptions{sequence}.")


@router.get(LISTS + "/{slug}/export")
def export(
    request: Request,
    session: SessionDep,
    me: Admin,
    slug: SlugPath,
    status: Annotated[exports.ExportStatus, Query()] = "confirmed",
) -> StreamingResponse:
    lists.get_list(session, slug)
    audit.record(session, actor(request, me), "export.run", f"list:{slug}", status=status)
    return csv_response(request, Search(list_slug=slug), f"{slug}-{status}.csv", status=status)
