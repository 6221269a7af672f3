"""/admin/suppressions: the addresses never mailed (search, add one, a pasted list or a CSV file, remove
with a reason) and the blocked domains (add, remove with a reason); each row says why and since when."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from newsletter import addresses, audit, suppressions
from newsletter.models import SuppressionReason
from newsletter.web.admin.auth import Admin, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.api.params import MAX_ID
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
SUPPRESSIONS = "/admin/suppressions"
PAGE_SIZE = 50
MAX_PASTED = 1_000_000  # characters of a pasted list (the admin form's body cap is the real bound)
MAX_NOTE = 500


def _page(
    request: Request,
    session: Session,
    *,
    email: str = "",
    reason: str = "",
    after: int | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    chosen = SuppressionReason(reason) if reason in {r.value for r in SuppressionReason} else None
    page = suppressions.list_suppressions(session, reason=chosen, email=email or None, after=after, limit=PAGE_SIZE)
    return render(
        request,
        "suppressions/index.html",
        status_code=422 if errors else 200,
        title="Suppressions",
        page=page,
        email=email,
        reason=chosen.value if chosen else "",
        after=after,
        reasons=[r.value for r in SuppressionReason],
        domains=suppressions.blocked_domains(session),
        errors=errors or {},
        values=values or {},
    )


@router.get(SUPPRESSIONS)
def index(
    request: Request,
    session: SessionDep,
    me: Admin,
    email: Annotated[str, Query(max_length=320)] = "",
    reason: Annotated[str, Query(max_length=32)] = "",
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> Response:
    return _page(request, session, email=email, reason=reason, after=after)


def _note(value: object, me_name: str) -> str:
    text = " ".join(str(value or "").split())[:MAX_NOTE]
    return f"added by {me_name}" + (f": {text}" if text else "")


def _bulk_message(result: suppressions.BulkResult) -> str:
    message = f"Suppressed {result.added:,} address(es); {result.already:,} already were."
    if result.errors:
        shown = "; ".join(f"line {line}: {reason}" for line, reason in result.errors[:5])
        more = f" (and {len(result.errors) - 5} more)" if len(result.errors) > 5 else ""
        message += f" {len(result.errors)} line(s) were not addresses and were left out — {shown}{more}."
    return message


@router.post(SUPPRESSIONS + "/add")
async def add(request: Request, session: SessionDep, me: Admin) -> Response:
    form = await request.form()
    pasted = str(form.get("addresses", ""))[:MAX_PASTED]
    lines = [part.strip() for line in pasted.splitlines() for part in line.split(",") if part.strip()]
    values = {"addresses": pasted, "note": str(form.get("note", ""))[:MAX_NOTE]}
    if not lines:
        return _page(request, session, errors={"addresses": "Type or paste at least one address."}, values=values)
    if len(lines) == 1:
        try:
            entry, new = suppressions.add(session, lines[0], detail=_note(form.get("note"), me.name))
        except addresses.InvalidEmail as exc:
            return _page(request, session, errors={"addresses": f"{lines[0]}: {exc}"}, values=values)
        if new:
            audit.record(session, actor(request, me), "suppression.add", f"address:{entry.email}")
        flash = f"Suppressed {lines[0]}." if new else f"{lines[0]} was already suppressed; its first reason stays."
        return redirect(request, SUPPRESSIONS, flash=flash)
    result = suppressions.add_csv(session, io.StringIO("\n".join(lines)), detail=_note(form.get("note"), me.name))
    audit.record(session, actor(request, me), "suppression.add", None, added=result.added, already=result.already)
    return redirect(request, SUPPRESSIONS, flash=_bulk_message(result), kind="error" if result.errors else "success")


@router.post(SUPPRESSIONS + "/import")
async def import_csv(request: Request, session: SessionDep, me: Admin) -> Response:
    form = await request.form()
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            message = "Choose a CSV file: an email column, or the addresses in the first column."
            return _page(request, session, errors={"file": message})
        upload.file.seek(0)
        text = io.TextIOWrapper(upload.file, encoding="utf-8-sig", errors="replace", newline="")
        result = suppressions.add_csv(session, text, detail=_note(f"from {upload.filename}", me.name))
        details = {"file": upload.filename, "added": result.added, "already": result.already}
        audit.record(session, actor(request, me), "suppression.add", None, **details)
        text.detach()
    finally:
        await form.close()
    return redirect(request, SUPPRESSIONS, flash=_bulk_message(result), kind="error" if result.errors else "success")


@router.get(SUPPRESSIONS + "/remove")
def remove_form(
    request: Request, session: SessionDep, me: Admin, email: Annotated[str, Query(min_length=3, max_length=320)]
) -> Response:
    return _confirm(request, kind="address", target=email, error=None)


def _confirm(request: Request, *, kind: str, target: str, error: str | None) -> Response:
    consequence = (
        f"Remove {target} from the suppression list: it can be mailed again by every list it is confirmed on."
        if kind == "address"
        else f"Unblock {target}: addresses at this domain can subscribe, and be mailed, again."
    )
    return render(
        request,
        "suppressions/remove.html",
        status_code=422 if error else 200,
        title=f"Allow {target} again?",
        kind=kind,
        target=target,
        consequence=consequence,
        error=error,
    )


async def _reason(request: Request, me_name: str) -> str:
    text = " ".join(str((await request.form()).get("reason", "")).split())[:MAX_NOTE]
    return f"{me_name}: {text}" if text else ""


@router.post(SUPPRESSIONS + "/remove")
async def remove(request: Request, session: SessionDep, me: Admin) -> Response:
    email = str((await request.form()).get("email", ""))[:320]
    reason = await _reason(request, me.name)
    if not reason:
        return _confirm(request, kind="address", target=email, error="Say why, for whoever looks at this later.")
    try:
        suppressions.remove(session, email, by=reason)
        audit.record(session, actor(request, me), "suppression.remove", f"address:{email}", reason=reason)
    except (suppressions.SuppressionNotFound, addresses.InvalidEmail) as exc:
        return _confirm(request, kind="address", target=email, error=str(exc))
    return redirect(request, SUPPRESSIONS, flash=f"{email} can be mailed again.")


@router.post(SUPPRESSIONS + "/domains")
async def block_domain(request: Request, session: SessionDep, me: Admin) -> Response:
    form = await request.form()
    domain = str(form.get("domain", ""))[:255]
    try:
        entry, new = suppressions.block_domain(session, domain, detail=_note(form.get("note"), me.name))
        if new:
            audit.record(session, actor(request, me), "blocked_domain.add", f"domain:{entry.domain}")
    except suppressions.InvalidDomain as exc:
        values = {"domain": domain, "domain_note": str(form.get("note", ""))[:MAX_NOTE]}
        return _page(request, session, errors={"domain": str(exc)}, values=values)
    flash = (
        f"Blocked {entry.domain}: nobody there can subscribe or be mailed."
        if new
        else f"{entry.domain} was already blocked."
    )
    return redirect(request, SUPPRESSIONS, flash=flash)


@router.get(SUPPRESSIONS + "/domains/remove")
def unblock_form(
    request: Request, session: SessionDep, me: Admin, domain: Annotated[str, Query(min_length=1, max_length=255)]
) -> Response:
    return _confirm(request, kind="domain", target=domain, error=None)


@router.post(SUPPRESSIONS + "/domains/remove")
async def unblock_domain(request: Request, session: SessionDep, me: Admin) -> Response:
    domain = str((await request.form()).get("domain", ""))[:255]
    reason = await _reason(request, me.name)
    if not reason:
        return _confirm(request, kind="domain", target=domain, error="Say why, for whoever looks at this later.")
    try:
        suppressions.unblock_domain(session, domain, by=reason)
        audit.record(session, actor(request, me), "blocked_domain.remove", f"domain:{domain}", reason=reason)
    except (suppressions.DomainNotBlocked, suppressions.InvalidDomain) as exc:
        return _confirm(request, kind="domain", target=domain, error=str(exc))
    return redirect(request, SUPPRESSIONS, flash=f"Unblocked {domain}.")
