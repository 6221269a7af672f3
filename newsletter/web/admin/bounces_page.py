"""/admin/bounces (admins): the recent bounce and complaint reports — by mail or a provider's webhook —
with the campaign and subscriber they matched and what was done, newest first, paged by keyset; and how
many provider events are accepted but not applied yet (newsletter/providers/inbox.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from newsletter import bounces
from newsletter.models import EventType
from newsletter.providers import inbox
from newsletter.web.admin.auth import Admin
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
BOUNCES = "/admin/bounces"
PAGE = 50
SOURCES = {"mail": "bounce mail", "ses": "Amazon SES", "sendgrid": "SendGrid", "postmark": "Postmark",
           "mailgun": "Mailgun"}  # fmt: skip


@router.get(BOUNCES)
def bounces_page(
    request: Request,
    session: SessionDep,
    me: Admin,
    kind: Annotated[EventType | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    if kind not in (None, EventType.bounce, EventType.complaint):
        kind = None
    rows = bounces.recent(session, kind=kind, before_id=before, limit=PAGE + 1)
    older = rows[PAGE - 1].event_id if len(rows) > PAGE else None
    waiting, since = inbox.backlog(session)  # provider events accepted, not applied yet
    return render(
        request,
        "bounces.html",
        title="Bounces and complaints",
        rows=rows[:PAGE],
        kind=kind.value if kind else "",
        older=older,
        paged=before is not None,
        sources=SOURCES,
        waiting=waiting,
        waiting_since=since,
    )
