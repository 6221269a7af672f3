"""/admin/campaigns: all campaigns, and one campaign's page — live progress while it sends (polled with
htmx, read from the counters), pause / resume / cancel, then the report (opens and clicks over time, links,
bounces, complaints, unsubscribes, the per-recipient ledger) and "resend to failed / unknown".

The send flow (/admin/campaigns/new) is in sendflow.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, defer, joinedload

from newsletter import audit, delivery, stats
from newsletter.db import utcnow
from newsletter.delivery import event_counters, progress
from newsletter.models import Campaign, CampaignStatus, DeliveryStatus, EventType, Segment
from newsletter.web.admin.auth import Editor, actor
from newsletter.web.admin.errors import AdminRoute
from newsletter.web.admin.render import redirect, render
from newsletter.web.api.deps import JobQueue
from newsletter.web.api.params import MAX_ID, RowId
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(route_class=AdminRoute)
CAMPAIGNS = "/admin/campaigns"
PAGE_SIZE = 25
LEDGER_PAGE = 50
POLL_SECONDS = 2
PageCursor = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@router.get(CAMPAIGNS)
def campaign_list(
    request: Request, session: SessionDep, me: Editor, older: PageCursor = None, newer: PageCursor = None
) -> Response:
    rows = stats.list_campaigns(session, limit=PAGE_SIZE + 1, older_than=older, newer_than=newer)
    more = len(rows) > PAGE_SIZE  # beyond this page, in the direction asked for
    if newer is not None:  # the page just newer than a cursor, newest first: the extra row is the first
        campaigns = rows[1:] if more else rows
        newer_link, older_link = more, True
    else:
        campaigns = rows[:PAGE_SIZE]
        newer_link, older_link = older is not None, more
    return render(
        request,
        "campaigns/list.html",
        title="Campaigns",
        campaigns=campaigns,
        figures=stats.campaign_figures(session, [c.id for c in campaigns]),
        newer_link=campaigns[0].id if campaigns and newer_link else None,
        older_link=campaigns[-1].id if campaigns and older_link else None,
    )


def _ledger(session: Session, campaign_id: int, status: str, search: str, after: int | None) -> stats.LedgerPage:
    statuses = [DeliveryStatus(status)] if status else []
    return stats.ledger_page(session, campaign_id, statuses=statuses, search=search, after=after, limit=LEDGER_PAGE)


@dataclass(frozen=True)
class _Polled:
    """What the progress panel shows of the campaign itself."""

    id: int
    status: CampaignStatus
    scheduled_at: dt.datetime | None


STARTING_SECONDS = 300


def _starting(state: progress.Progress) -> bool:
    """A draft just sent from the send flow: the worker has yet to plan it, so the page polls until it
    sends (a draft nobody started stops polling after STARTING_SECONDS)."""
    return (
        state.status == CampaignStatus.draft
        and state.scheduled_at is None
        and state.created_at is not None
        and (utcnow() - state.created_at).total_seconds() < STARTING_SECONDS
    )


def _progress_fields(campaign: Campaign | _Polled, state: progress.Progress) -> dict[str, Any]:
    return {
        "campaign": campaign,
        "p": state,
        "percent": round(100 * state.done / state.total) if state.total else 0,
        "live": campaign.status == CampaignStatus.sending or _starting(state),
        "poll_seconds": POLL_SECONDS,
    }


@router.get(CAMPAIGNS + "/{campaign_id}")
def campaign_page(
    request: Request,
    session: SessionDep,
    me: Editor,
    campaign_id: RowId,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    search: Annotated[str, Query(max_length=320)] = "",
    after: PageCursor = None,
) -> Response:
    # the campaign with its digest and lists in one query, without its HTML and text (tens of KB)
    loads = [defer(Campaign.html), defer(Campaign.text), joinedload(Campaign.digest), joinedload(Campaign.lists)]
    campaign = delivery.get_campaign(session, campaign_id, options=loads)
    state = progress.campaign_progress(session, campaign_id)  # once, for the panel and the report's counts
    counted = event_counters.read(session, campaign_id)  # once, for the figures and the timeline
    report = stats.campaign_report(session, campaign_id, counted=counted, progress=state)
    started = campaign.started_at is not None
    return render(
        request,
        "campaigns/page.html",
        title=campaign.subject,
        report=report,
        timeline=stats.engagement_timeline(session, campaign_id, counted=counted) if started else [],
        events={kind.value: page for kind, page in stats.latest_events(session, campaign_id, _EVENT_KINDS, 20).items()}
        if started
        else {},
        ledger=_ledger(session, campaign_id, status.value if status else "", search, after) if started else None,
        status_filter=status.value if status else "",
        search=search,
        statuses=[s.value for s in DeliveryStatus],
        resendable=report["counts"]["failed"] + report["counts"]["unknown"],
        non_openers=stats.non_openers(session, campaign) if campaign.status in _RESENDABLE else None,
        audience=_audience(session, campaign),
        **_progress_fields(campaign, state),
    )


def _audience(session: Session, campaign: Campaign) -> str | None:
    """Who among the lists' subscribers the campaign is for, in words (None: all of them)."""
    if campaign.segment_filter is None:
        return None
    received = campaign.segment_filter.get("received", {})
    if set(campaign.segment_filter) == {"received"} and received.get("opened") is False:
        return f"those who did not open campaign #{received.get('campaign')}"
    segment = session.get(Segment, campaign.segment_id) if campaign.segment_id else None
    if segment is not None:
        return f"those in the segment {segment.name} (its filter when the campaign was created)"
    return "those matching the filter of a segment since deleted"


_EVENT_KINDS = (EventType.bounce, EventType.complaint, EventType.unsubscribe)
_RESENDABLE = (CampaignStatus.finished, CampaignStatus.cancelled)  # what resend to non-openers accepts


@router.get(CAMPAIGNS + "/{campaign_id}/progress")
def progress_fragment(
    request: Request,
    session: SessionDep,
    me: Editor,
    campaign_id: RowId,
    was: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """The live progress panel alone, polled by htmx every POLL_SECONDS while the campaign sends. When its
    status changed since the page was drawn (finished, paused, cancelled), the whole page reloads: the
    report and the buttons that fit the new status."""
    # Polled by every open campaign page: two small queries (the campaign's state with its progress, and
    # its counters) besides the sign-in's; the campaign row itself (its HTML, tens of KB) is not loaded.
    state = progress.campaign_progress(session, campaign_id)
    campaign = _Polled(campaign_id, state.status, state.scheduled_at)
    response = render(request, "campaigns/_progress.html", **_progress_fields(campaign, state))
    if was and was != campaign.status.value:
        response.headers["HX-Refresh"] = "true"
    return response


def _back(campaign_id: int) -> str:
    return f"{CAMPAIGNS}/{campaign_id}"


@router.post(CAMPAIGNS + "/{campaign_id}/pause")
def pause(request: Request, session: SessionDep, me: Editor, campaign_id: RowId) -> Response:
    delivery.pause(session, campaign_id, reason=f"paused by {me.name}")
    audit.record(session, actor(request, me), "campaign.pause", audit.campaign_target(campaign_id))
    return redirect(request, _back(campaign_id), flash="Paused: no more messages go out until you resume.")


@router.post(CAMPAIGNS + "/{campaign_id}/resume")
def resume(
    request: Request, session: SessionDep, settings: SettingsDep, jobs: JobQueue, me: Editor, campaign_id: RowId
) -> Response:
    ranges = delivery.resume(session, settings, campaign_id)
    audit.record(session, actor(request, me), "campaign.resume", audit.campaign_target(campaign_id))
    session.commit()  # the batch tasks must see the campaign sending
    jobs.enqueue_batches(ranges)
    return redirect(request, _back(campaign_id), flash="Resumed: sending carries on where it stopped.")


@router.get(CAMPAIGNS + "/{campaign_id}/cancel")
def cancel_confirmation(request: Request, session: SessionDep, me: Editor, campaign_id: RowId) -> Response:
    campaign = delivery.get_campaign(session, campaign_id)
    state = progress.campaign_progress(session, campaign_id)
    left = state.counts[DeliveryStatus.pending.value] + state.counts[DeliveryStatus.sending.value]
    return render(
        request,
        "campaigns/cancel.html",
        title=f"Cancel “{campaign.subject}”?",
        campaign=campaign,
        # not planned yet (draft, scheduled): those its lists would reach now
        left=left if campaign.planned_at else stats.campaign_reach(session, campaign),
        sent=state.counts[DeliveryStatus.sent.value],
    )


@router.post(CAMPAIGNS + "/{campaign_id}/cancel")
def cancel(request: Request, session: SessionDep, me: Editor, campaign_id: RowId) -> Response:
    delivery.cancel(session, campaign_id)
    audit.record(session, actor(request, me), "campaign.cancel", audit.campaign_target(campaign_id))
    return redirect(request, _back(campaign_id), flash="Cancelled: nobody else will get this campaign.")


@router.post(CAMPAIGNS + "/{campaign_id}/resend")
def resend(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    jobs: JobQueue,
    me: Editor,
    campaign_id: RowId,
    statuses: Annotated[list[str], Form(max_length=2)] = [],  # noqa: B006 - FastAPI copies the default
) -> Response:
    if not statuses:
        return redirect(
            request, _back(campaign_id), flash="Tick failed, unknown or both to choose whom to send to.", kind="error"
        )
    moved, ranges = stats.resend(session, settings, campaign_id, statuses)
    target = audit.campaign_target(campaign_id)
    audit.record(session, actor(request, me), "campaign.resend", target, requeued=moved, statuses=",".join(statuses))
    session.commit()
    jobs.enqueue_batches(ranges)
    return redirect(request, _back(campaign_id), flash=f"{moved:,} recipient(s) are in the queue again.")


@router.post(CAMPAIGNS + "/{campaign_id}/resend-non-openers")
def resend_to_non_openers(
    request: Request,
    session: SessionDep,
    jobs: JobQueue,
    me: Editor,
    campaign_id: RowId,
    subject: Annotated[str, Form(max_length=500)] = "",
    days: Annotated[int, Form(ge=0, le=60)] = 0,
) -> Response:
    """A new campaign to those who did not open this one, maybe with another subject, now or in N days."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(days=days) if days else None
    try:
        campaign = delivery.resend_to_non_openers(
            session, campaign_id, subject=subject.strip() or None, scheduled_at=at, created_by=me.name
        )
    except delivery.CampaignError as exc:
        session.rollback()
        return redirect(request, _back(campaign_id), flash=str(exc), kind="error")
    new_id = campaign.id
    session.commit()  # the task must see the campaign: enqueue only after commit
    if at is None:
        jobs.start_campaign(new_id)
        flash = "Sending to those who did not open the first one."
    else:
        flash = f"Scheduled for {at:%d %B %Y, %H:%M} UTC, to those who have not opened the first one by then."
    return redirect(request, _back(new_id), flash=flash)
