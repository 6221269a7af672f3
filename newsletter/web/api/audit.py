"""Admin API: the audit log, newest first, filtered and paged by keyset (admins only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from newsletter import audit
from newsletter.web.api.deps import Admin
from newsletter.web.api.errors import ApiRoute
from newsletter.web.api.schemas import NO_NUL, AuditEntryOut, AuditPage
from newsletter.web.deps import SessionDep

router = APIRouter(tags=["audit"], route_class=ApiRoute)
Filter = Annotated[str | None, Query(max_length=255, pattern=NO_NUL)]


@router.get("/audit", summary="Who did what: newest first, `before` pages to older entries")
def audit_log(
    session: SessionDep,
    _: Admin,
    actor: Filter = None,
    action: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="campaign.send, or a family: campaign")
    ] = None,
    target: Annotated[
        str | None, Query(max_length=255, pattern=NO_NUL, description="campaign:12, or a kind: campaign:")
    ] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> AuditPage:
    # One more than asked for tells whether an older page exists.
    entries = audit.search(
        session, actor=actor, action=action, target=target, since=since, until=until, before_id=before, limit=limit + 1
    )
    more = len(entries) > limit
    entries = entries[:limit]
    items = [AuditEntryOut.model_validate(entry, from_attributes=True) for entry in entries]
    return AuditPage(items=items, next_before=entries[-1].id if more and entries else None)
