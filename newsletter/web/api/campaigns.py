"""Admin API: campaigns — create and send, pause, resume, cancel, resend, statistics and the ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from newsletter import audit, delivery, previews, stats
from newsletter.delivery import progress
from newsletter.mailer import get_mailer
from newsletter.models import CampaignStatus, DeliveryStatus, EventType
from newsletter.web.api.deps import Editor, EditorActor, JobQueue
from newsletter.web.api.errors import CONFLICT, NOT_FOUND, ApiRoute, described
from newsletter.web.api.params import Cursor, RowId
from newsletter.web.api.schemas import (
    NO_NUL,
    SLUG_PATTERN,
    CampaignIn,
    CampaignReport,
    CampaignState,
    CampaignSummary,
    DeliveryPage,
    EventPage,
    HourOut,
    NonOpenersIn,
    ProgressOut,
    Reach,
    ResendIn,
    Resent,
    TestSendIn,
    TestSent,
    row_fields,
)
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["campaigns"], route_class=ApiRoute)


@router.get("/campaigns", summary="Campaigns, newest first")
def list_campaigns(
    session: SessionDep,
    _: Editor,
    status: CampaignStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=stats.MAX_PAGE)] = 100,
) -> list[CampaignSummary]:
    return [
        CampaignSummary(
            **row_fields(c, CampaignSummary, exclude={"digest", "recipients"}),
            digest=c.digest.slug,
            recipients=c.recipient_count,
        )
        for c in stats.list_campaigns(session, status=status, limit=limit)
    ]


@router.post(
    "/campaigns",
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Send a digest to lists, now or at a given time",
)
def create_campaign(
    body: CampaignIn, session: SessionDep, user: Editor, actor: EditorActor, jobs: JobQueue
) -> CampaignState:
    campaign = delivery.create_campaign(
        session,
        digest_slug=body.digest,
        list_slugs=body.lists,
        subject=body.subject,
        scheduled_at=body.at,
        allow_repeat=body.again,
        created_by=user.name,
        template=body.template,
        segment=body.segment,
    )
    audit.campaign_created(session, actor, campaign)
    state = CampaignState(id=campaign.id, status=campaign.status)
    session.commit()  # the task must see the campaign: enqueue only after commit
    if body.at is None:
        jobs.start_campaign(state.id)
    return state


@router.post(
    "/campaigns/test",
    responses={**NOT_FOUND, 422: described("Bad address."), 502: described("The mail server refused it.")},
    summary="Send one message of a digest to an address, marked as a test and recorded nowhere",
)
def send_test(body: TestSendIn, session: SessionDep, settings: SettingsDep, _: Editor) -> TestSent:
    mailer = get_mailer(settings.smtp_url, settings.outbox_dir)
    preview, result = previews.send_test(session, settings, mailer, body.digest, body.to, body.list)
    return TestSent(to=body.to, subject=preview.subject, smtp_code=result.code, smtp_text=result.text)


@router.get(
    "/campaigns/reach",
    responses=NOT_FOUND,
    summary="How many recipients a campaign to these lists would have, before creating it",
)
def reach(
    session: SessionDep,
    _: Editor,
    lists: Annotated[
        list[Annotated[str, Query(pattern=SLUG_PATTERN)]],
        Query(alias="list", max_length=100, description="Repeatable: ?list=a&list=b"),
    ] = [],  # noqa: B006 - FastAPI copies the default
    segment: Annotated[
        str | None, Query(max_length=100, pattern=NO_NUL, description="Only those in this segment")
    ] = None,
) -> Reach:
    return Reach(lists=list(dict.fromkeys(lists)), segment=segment, recipients=stats.reach(session, lists, segment))


@router.get("/campaigns/{campaign_id}", responses=NOT_FOUND, summary="Status and statistics of a campaign")
def get_campaign(session: SessionDep, _: Editor, campaign_id: RowId) -> CampaignReport:
    return CampaignReport.model_validate(stats.campaign_report(session, campaign_id))


@router.get(
    "/campaigns/{campaign_id}/deliveries",
    responses=NOT_FOUND,
    summary="The per-recipient ledger, filterable by status (e.g. ?status=failed), keyset-paged",
)
def deliveries(
    session: SessionDep,
    _: Editor,
    campaign_id: RowId,
    status: Annotated[
        list[DeliveryStatus] | None, Query(description="Repeatable: ?status=failed&status=unknown")
    ] = None,
    search: Annotated[str | None, Query(max_length=320, pattern=NO_NUL, description="The start of the address")] = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=stats.MAX_PAGE)] = 100,
) -> DeliveryPage:
    page = stats.ledger_page(session, campaign_id, statuses=status or [], search=search, after=after, limit=limit)
    return DeliveryPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.get(
    "/campaigns/{campaign_id}/progress",
    responses=NOT_FOUND,
    summary="Counts per status, send rate and ETA (cheap: read from counters, fit for polling)",
)
def campaign_progress(session: SessionDep, _: Editor, campaign_id: RowId) -> ProgressOut:
    return ProgressOut.model_validate(progress.campaign_progress(session, campaign_id).as_dict())


@router.get(
    "/campaigns/{campaign_id}/timeline",
    responses=NOT_FOUND,
    summary="Opens (estimates) and clicks per hour over the first seven days",
)
def timeline(session: SessionDep, _: Editor, campaign_id: RowId) -> list[HourOut]:
    return [
        HourOut(start=h.start, opens=h.opens, clicks=h.clicks) for h in stats.engagement_timeline(session, campaign_id)
    ]


@router.get(
    "/campaigns/{campaign_id}/events",
    responses={**NOT_FOUND, **CONFLICT},
    summary="The campaign's bounces, complaints or unsubscribes, newest first, keyset-paged",
)
def events(
    session: SessionDep,
    _: Editor,
    campaign_id: RowId,
    type: Annotated[
        EventType | None, Query(description="bounce, complaint or unsubscribe; all three if left out")
    ] = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=stats.MAX_PAGE)] = 50,
) -> EventPage:
    page = stats.campaign_events(session, campaign_id, type, after=after, limit=limit)
    return EventPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.post("/campaigns/{campaign_id}/pause", responses={**NOT_FOUND, **CONFLICT}, summary="Stop claiming recipients")
def pause(session: SessionDep, actor: EditorActor, campaign_id: RowId) -> CampaignState:
    campaign = delivery.pause(session, campaign_id)
    audit.record(session, actor, "campaign.pause", audit.campaign_target(campaign_id))
    return CampaignState(id=campaign.id, status=campaign.status)


@router.post("/campaigns/{campaign_id}/resume", responses={**NOT_FOUND, **CONFLICT}, summary="Carry on after a pause")
def resume(
    session: SessionDep, settings: SettingsDep, actor: EditorActor, jobs: JobQueue, campaign_id: RowId
) -> CampaignState:
    ranges = delivery.resume(session, settings, campaign_id)
    audit.record(session, actor, "campaign.resume", audit.campaign_target(campaign_id))
    status = delivery.get_campaign(session, campaign_id).status
    session.commit()
    jobs.enqueue_batches(ranges)
    return CampaignState(id=campaign_id, status=status)


@router.post(
    "/campaigns/{campaign_id}/cancel",
    responses={**NOT_FOUND, **CONFLICT},
    summary="Stop for good; recipients not yet sent to are skipped",
)
def cancel(session: SessionDep, actor: EditorActor, campaign_id: RowId) -> CampaignState:
    campaign = delivery.cancel(session, campaign_id)
    audit.record(session, actor, "campaign.cancel", audit.campaign_target(campaign_id))
    return CampaignState(id=campaign.id, status=campaign.status)


@router.post(
    "/campaigns/{campaign_id}/resend",
    responses={**NOT_FOUND, **CONFLICT},
    summary="Send again to failed and/or unknown recipients only (never to sent ones)",
)
def resend(
    body: ResendIn, session: SessionDep, settings: SettingsDep, actor: EditorActor, jobs: JobQueue, campaign_id: RowId
) -> Resent:
    moved, ranges = stats.resend(session, settings, campaign_id, body.statuses)
    statuses = ",".join(str(status) for status in body.statuses)
    audit.record(
        session, actor, "campaign.resend", audit.campaign_target(campaign_id), requeued=moved, statuses=statuses
    )
    status = delivery.get_campaign(session, campaign_id).status
    session.commit()
    jobs.enqueue_batches(ranges)
    return Resent(id=campaign_id, status=status, requeued=moved)


@router.post(
    "/campaigns/{campaign_id}/resend-non-openers",
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
    summary="A new campaign (maybe with another subject) to those who received this one and did not open it",
)
def resend_to_non_openers(
    body: NonOpenersIn, session: SessionDep, user: Editor, jobs: JobQueue, campaign_id: RowId
) -> CampaignState:
    campaign = delivery.resend_to_non_openers(
        session, campaign_id, subject=body.subject, scheduled_at=body.at, created_by=user.name
    )
    state = CampaignState(id=campaign.id, status=campaign.status)
    session.commit()  # the task must see the campaign: enqueue only after commit
    if body.at is None:
        jobs.start_campaign(state.id)
    return state
