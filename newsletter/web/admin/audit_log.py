"""/admin/audit (admins): who did what, newest first, filtered by actor, action, target and date, paged
by keyset ("Older" carries the id of the last row shown)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from newsletter import audit
from newsletter.web.admin.auth import Admin
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
AUDIT = "/admin/audit"
PAGE = 50
Filter = Annotated[str, Query(max_length=255)]
# Where a target of the form kind:key has its page.
TARGET_PAGES = {"campaign": "/admin/campaigns/", "user": "/admin/users/", "list": "/admin/lists/",
                "subscriber": "/admin/subscribers/"}  # fmt: skip


def target_link(target: str | None) -> str | None:
    kind, _, key = (target or "").partition(":")
    base = TARGET_PAGES.get(kind)
    return base + key if base and key and "/" not in key else None


def _day(value: str, field: str, errors: dict[str, str]) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
    except ValueError:
        errors[field] = "Give a date as YYYY-MM-DD."
        return None


@router.get(AUDIT)
def audit_page(
    request: Request,
    session: SessionDep,
    me: Admin,
    actor: Filter = "",
    action: Filter = "",
    target: Filter = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    errors: dict[str, str] = {}
    start, end = _day(since, "since", errors), _day(until, "until", errors)
    if end is not None:
        end += dt.timedelta(days=1)  # "until" names the last day shown, whole
    entries: list[audit.AuditEntry] = []
    if not errors:
        try:
            entries = audit.search(
                session, actor=actor.strip() or None, action=action.strip() or None, target=target.strip() or None,
                since=start, until=end, before_id=before, limit=PAGE + 1,
            )  # fmt: skip
        except audit.InvalidAuditQuery as exc:
            errors["until"] = str(exc).capitalize() + "."
    filters = {"actor": actor, "action": action, "target": target, "since": since, "until": until}
    older = None
    if len(entries) > PAGE:
        entries = entries[:PAGE]
        older = f"{AUDIT}?" + urlencode({**{k: v for k, v in filters.items() if v}, "before": entries[-1].id})
    return render(
        request,
        "audit.html",
        title="Audit log",
        entries=entries,
        filters=filters,
        errors=errors,
        older=older,
        newest=f"{AUDIT}?" + urlencode({k: v for k, v in filters.items() if v}) if before else None,
        target_link=target_link,
        details=lambda entry: json.dumps(entry.details, ensure_ascii=False, sort_keys=True) if entry.details else "",
        status_code=422 if errors else 200,
    )
