"""Sequence pages: each list's welcome and follow-up emails, on or off, their steps with delay, subject and
Markdown body, per-step sent counts, and each step's preview in a sandboxed frame (its own URL and CSP, as
the digest preview). Editors read; admins change (the same domain functions as the CLI and the API).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from newsletter import lists, rendering, sequences
from newsletter.errors import Conflict, Invalid, NotFound
from newsletter.web.admin.auth import Admin, Editor
from newsletter.web.admin.digests import DARK_QUERY, Posted, SchemeParam, WidthParam
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import EMAIL_PREVIEW_CSP, html_response, redirect, render
from newsletter.web.api.params import SlugPath
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
BASE = "/admin/sequences"
SAMPLE_NAME = "Ada"
PositionPath = Annotated[int, Path(ge=1, le=1000)]


def _page(request: Request, template: str, **context: Any) -> Response:
    return render(request, template, base=BASE, **context)


def _totals(session: SessionDep, slug: str) -> list[dict[str, Any]]:
    return [
        {
            "status": s,
            "waiting": s.counts["pending"] + s.counts["sending"],
        }
        for s in sequences.status(session, slug)
    ]


@router.get(BASE)
def sequence_list(request: Request, session: SessionDep, me: Editor) -> Response:
    by_list = {s.list_id: s for s in sequences.all_sequences(session)}
    rows = [{"list": m, "sequence": by_list.get(m.id)} for m in lists.all_lists(session)]
    return _page(request, "sequences/list.html", title="Sequences", rows=rows)


@router.post(f"{BASE}/new")
def create_sequence(request: Request, session: SessionDep, me: Admin, posted: Posted) -> Response:
    slug = posted.get("list", "")
    try:
        sequences.create_sequence(session, slug)
    except (NotFound, Conflict) as exc:
        return redirect(request, BASE, flash=str(exc), kind="error")
    return redirect(request, f"{BASE}/{slug}", flash="Sequence created. Add its first step, the welcome email.")


def _sequence_page(
    request: Request,
    session: SessionDep,
    slug: str,
    *,
    form: dict[str, str] | None = None,
    problem: dict[str, str] | None = None,
    status_code: int = 200,
    **preview: str,
) -> Response:
    sequence = sequences.get_sequence(session, slug)
    shown = int(preview.get("step") or 1)
    return _page(
        request,
        "sequences/page.html",
        title=f"Sequence of {sequence.mailing_list.name}",
        sequence=sequence,
        slug=slug,
        steps=_totals(session, slug),
        form=form or {"subject": "", "delay": "0" if not sequence.steps else "3d", "body": ""},
        problem=problem or {},
        preview={
            "step": shown if sequence.steps and shown <= len(sequence.steps) else None,
            "width": preview.get("width", "600"),
            "scheme": preview.get("scheme", "light"),
        },
        status_code=status_code,
    )


@router.get(BASE + "/{slug}")
def sequence_page(
    request: Request,
    session: SessionDep,
    me: Editor,
    slug: SlugPath,
    step: Annotated[int | None, Query(ge=1, le=1000)] = None,
    width: WidthParam = "600",
    scheme: SchemeParam = "light",
) -> Response:
    return _sequence_page(request, session, slug, step=str(step or 1), width=width, scheme=scheme)


@router.post(BASE + "/{slug}/enable")
def enable(request: Request, session: SessionDep, me: Admin, slug: SlugPath) -> Response:
    try:
        sequences.enable(session, slug)
    except Conflict as exc:
        return redirect(request, f"{BASE}/{slug}", flash=str(exc), kind="error")
    return redirect(
        request,
        f"{BASE}/{slug}",
        flash="On: each subscriber who confirms from now on gets the steps. Existing and imported subscribers do not.",
    )


@router.post(BASE + "/{slug}/disable")
def disable(request: Request, session: SessionDep, me: Admin, slug: SlugPath) -> Response:
    sequences.disable(session, slug)
    return redirect(request, f"{BASE}/{slug}", flash="Off: no further step is sent; unsent messages were skipped.")


def _step_values(posted: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    form = {key: posted.get(key, "").replace("\r\n", "\n") for key in ("subject", "delay", "body")}
    values: dict[str, Any] = {
        "subject": form["subject"],
        "body": form["body"],
        "delay_hours": sequences.parse_delay(form["delay"] or "0"),
    }
    return form, values


@router.post(BASE + "/{slug}/steps")
def add_step(
    request: Request, session: SessionDep, settings: SettingsDep, me: Admin, slug: SlugPath, posted: Posted
) -> Response:
    form = {key: posted.get(key, "") for key in ("subject", "delay", "body")}
    try:
        form, values = _step_values(posted)
        step = sequences.add_step(session, settings, slug, **values)
    except sequences.InvalidStep as exc:
        session.rollback()
        problem = {exc.field: str(exc)}
        return _sequence_page(request, session, slug, form=form, problem=problem, status_code=422)
    return redirect(request, f"{BASE}/{slug}?step={step.position}", flash=f"Step {step.position} added.")


@router.get(BASE + "/{slug}/steps/{position}")
def step_page(
    request: Request,
    session: SessionDep,
    me: Editor,
    slug: SlugPath,
    position: PositionPath,
    width: WidthParam = "600",
    scheme: SchemeParam = "light",
) -> Response:
    step = sequences.get_step(session, slug, position)
    form = {"subject": step.subject, "delay": _delay_text(step.delay_hours), "body": step.body}
    return _step_page(request, session, slug, position, form, {}, width=width, scheme=scheme)


def _delay_text(hours: int) -> str:
    days, rest = divmod(hours, 24)
    return (f"{days}d" if days else "") + (f"{rest}h" if rest else "") or "0"


def _step_page(
    request: Request,
    session: SessionDep,
    slug: str,
    position: int,
    form: dict[str, str],
    problem: dict[str, str],
    *,
    status_code: int = 200,
    width: str = "600",
    scheme: str = "light",
) -> Response:
    step = sequences.get_step(session, slug, position)
    count = len(step.sequence.steps)
    return _page(
        request,
        "sequences/step.html",
        title=f"Step {position}: {step.subject}",
        slug=slug,
        step=step,
        count=count,
        form=form,
        problem=problem,
        preview={"step": position, "width": width, "scheme": scheme},
        status_code=status_code,
    )


@router.post(BASE + "/{slug}/steps/{position}")
def edit_step(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: Admin,
    slug: SlugPath,
    position: PositionPath,
    posted: Posted,
) -> Response:
    form = {key: posted.get(key, "") for key in ("subject", "delay", "body")}
    try:
        form, values = _step_values(posted)
        sequences.edit_step(session, settings, slug, position, **values)
    except sequences.InvalidStep as exc:
        session.rollback()
        return _step_page(request, session, slug, position, form, {exc.field: str(exc)}, status_code=422)
    return redirect(
        request,
        f"{BASE}/{slug}/steps/{position}",
        flash="Saved. Subscribers who got this step already are not sent it again.",
    )


@router.post(BASE + "/{slug}/steps/{position}/remove")
def remove_step(request: Request, session: SessionDep, me: Admin, slug: SlugPath, position: PositionPath) -> Response:
    sequences.remove_step(session, slug, position)
    return redirect(request, f"{BASE}/{slug}", flash=f"Step {position} removed; its unsent messages were skipped.")


@router.post(BASE + "/{slug}/steps/{position}/move")
def move_step(
    request: Request, session: SessionDep, me: Admin, slug: SlugPath, position: PositionPath, posted: Posted
) -> Response:
    try:
        sequences.move_step(session, slug, position, int(posted.get("to", "0") or 0))
    except (Invalid, ValueError) as exc:
        return redirect(request, f"{BASE}/{slug}", flash=str(exc), kind="error")
    return redirect(request, f"{BASE}/{slug}", flash="Step moved.")


@router.get(BASE + "/{slug}/steps/{position}/preview")
def preview(
    session: SessionDep,
    me: Editor,
    slug: SlugPath,
    position: PositionPath,
    scheme: SchemeParam = "light",
) -> Response:
    """The step's email as a subscriber gets it (placeholders filled with a sample reader), for the frame."""
    step = sequences.get_step(session, slug, position)
    shown = sequences.preview(session, slug, subject=step.subject, body=step.body)
    html = (
        shown.html.replace(rendering.NAME, SAMPLE_NAME)
        .replace(rendering.UNSUBSCRIBE_URL, "#")
        .replace(rendering.PREFERENCES_URL, "#")
    )
    html = html.replace(DARK_QUERY, "@media all") if scheme == "dark" else html
    return html_response(html, csp=EMAIL_PREVIEW_CSP)
