"""The dashboard, /admin: what is sending now (live), how the last campaigns did, how the audience grew,
and the digests waiting to be sent. Every figure comes from the domain: `delivery.progress` for the live
part, `stats.campaign_figures` for the recent campaigns, `growth.subscriber_growth`, `stats.unsent_digests`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from newsletter import growth, reputation, stats
from newsletter.delivery import progress
from newsletter.models import Campaign, CampaignStatus, digest_campaigns
from newsletter.web.admin.auth import Editor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import render
from newsletter.web.deps import SessionDep

router = APIRouter(route_class=AdminRoute)
POLL_SECONDS = 2
RECENT = 5
GROWTH_DAYS = (30, 90)
# Campaigns that went out (or are going out): the "recent campaigns" table skips drafts and schedules.
REPORTED = (CampaignStatus.sending, CampaignStatus.paused, CampaignStatus.finished, CampaignStatus.cancelled)


def sending_now(session: Session) -> list[dict[str, Any]]:
    """Each campaign that is sending: its progress from `progress.campaign_progress` (from the counters)."""
    campaigns = session.scalars(
        select(Campaign)
        .options(defer(Campaign.html), defer(Campaign.text))
        .where(Campaign.status == CampaignStatus.sending, digest_campaigns())
        .order_by(Campaign.id)
    ).all()
    rows = []
    for campaign in campaigns:
        state = progress.campaign_progress(session, campaign.id)
        rows.append({"campaign": campaign, "progress": state, "percent": _percent(state.done, state.total)})
    return rows


def recent_campaigns(session: Session) -> list[dict[str, Any]]:
    """The last campaigns that went out, with their rates (per message sent; opens are estimates): three
    queries for all of them, from the counters."""
    campaigns = session.scalars(
        select(Campaign)
        .options(defer(Campaign.html), defer(Campaign.text))
        .where(Campaign.status.in_(REPORTED), digest_campaigns())
        .order_by(Campaign.id.desc())
        .limit(RECENT)
    ).all()
    figures = stats.campaign_figures(session, [c.id for c in campaigns])
    rows = []
    for campaign in campaigns:
        f = figures[campaign.id]
        rows.append(
            {
                "campaign": campaign,
                "sent": f.sent,
                "open_rate": _rate(f.unique_opens, f.sent),
                "click_rate": _rate(f.unique_clicks, f.sent),
                "bounces": f.bounces,
                "unsubscribes": f.unsubscribes,
            }
        )
    return rows


def _percent(part: int, whole: int) -> int:
    return round(100 * part / whole) if whole else 0


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


@router.get("/admin")
def dashboard(
    request: Request, session: SessionDep, me: Editor, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> Response:
    days = days if days in GROWTH_DAYS else GROWTH_DAYS[0]
    per_day = growth.subscriber_growth(session, days)
    return render(
        request,
        "dashboard.html",
        title="Dashboard",
        breaker_alerts=reputation.alerts(session),  # templates/admin/_breaker_alert.html
        sending=sending_now(session),
        recent=recent_campaigns(session),
        growth=per_day,
        growth_totals={"joined": sum(d.joined for d in per_day), "left": sum(d.left for d in per_day)},
        days=days,
        day_choices=GROWTH_DAYS,
        drafts=stats.unsent_digests(session),
        poll_seconds=POLL_SECONDS,
    )


@router.get("/admin/sending-now")
def sending_fragment(request: Request, session: SessionDep, me: Editor) -> Response:
    """The "sending now" panel alone, which the dashboard polls with htmx while something is sending."""
    return render(request, "_sending_now.html", sending=sending_now(session), poll_seconds=POLL_SECONDS)
