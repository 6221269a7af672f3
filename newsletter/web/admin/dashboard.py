"""The dashboard, /admin: what is sending now (live), how the last campaigns did, drafts waiting."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import stats
from newsletter.delivery import progress
from newsletter.models import Campaign, CampaignStatus
from newsletter.web.admin.auth import Editor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
POLL_SECONDS = 2


def sending_now(session: Session) -> list[dict[str, object]]:
    """Each campaign that is sending: its progress from `progress.campaign_progress` (one ledger scan)."""
    campaigns = session.scalars(
        select(Campaign).where(Campaign.status == CampaignStatus.sending).order_by(Campaign.id)
    ).all()
    rows = []
    for campaign in campaigns:
        state = progress.campaign_progress(session, campaign.id)
        rows.append({"campaign": campaign, "progress": state, "percent": _percent(state.done, state.total)})
    return rows


def _percent(part: int, whole: int) -> int:
    return round(100 * part / whole) if whole else 0


@router.get("/admin")
def dashboard(request: Request, session: SessionDep, me: Editor) -> Response:
    return render(
        request,
        "dashboard.html",
        title="Dashboard",
        sending=sending_now(session),
        recent=stats.list_campaigns(session, limit=10),
        poll_seconds=POLL_SECONDS,
    )


@router.get("/admin/sending-now")
def sending_fragment(request: Request, session: SessionDep, me: Editor) -> Response:
    """The "sending now" panel alone, which the dashboard polls with htmx while something is sending."""
    return render(request, "_sending_now.html", sending=sending_now(session), poll_seconds=POLL_SECONDS)
