"""Campaigns: create one, start it (render once, plan the ledger), pause, resume, cancel, finish, recover.

The ledger (`deliveries`, see ledger.py) is the single source of truth of who got what; sending.py is the
batch loop, composing.py builds each recipient's message, progress.py counts where a campaign stands.
Functions here never import Celery: they return what must happen next (batch ranges), the task enqueues.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, insert, select, update
from sqlalchemy.orm import Session

from newsletter import deliverability, digests, growth, logs, outbox, rendering, reputation, segments, templates
from newsletter.config import Settings
from newsletter.db import analyze, utcnow
from newsletter.delivery import counters, event_counters
from newsletter.delivery.ledger import RESENT_AFTER_UNKNOWN, BatchRange, batch_ranges, plan, planned_ranges, rowcount
from newsletter.delivery.scheduling import due_campaigns
from newsletter.digests import DigestNotFound
from newsletter.errors import Conflict, NotFound
from newsletter.lists import get_list
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    Link,
    MailingList,
    Template,
    campaign_lists,
    digest_campaigns,
)

# Re-exported: callers name them `delivery.BatchRange` and `delivery.DigestNotFound` with the lifecycle
# that returns and raises them; their homes are the ledger and digests.py.
__all__ = [
    "BatchRange",
    "CampaignError",
    "CampaignNotFound",
    "DigestNotFound",
    "SweepReport",
    "cancel",
    "create_campaign",
    "finish_if_done",
    "get_campaign",
    "non_openers_filter",
    "pause",
    "render_campaign",
    "resend_to_non_openers",
    "resume",
    "start",
    "sweep",
]


class CampaignError(Conflict):
    """A campaign request that cannot be carried out; the message says why."""


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: int) -> None:
        super().__init__(f"no campaign with id {campaign_id}")


# --- creating and scheduling ------------------------------------------------------------------------------


# long: its signature alone is fourteen lines, one keyword per choice the send flow, CLI and API offer
def create_campaign(
    session: Session,
    *,
    digest_slug: str,
    list_slugs: Sequence[str],
    subject: str | None = None,
    scheduled_at: dt.datetime | None = None,
    allow_repeat: bool = False,
    created_by: str | None = None,
    template: str | None = None,
    segment: str | None = None,
    segment_filter: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Campaign:
    """Create a campaign (scheduled when `scheduled_at` is given, else a draft that `start` sends), rendered
    with the uploaded `template` if named, else the first list's default template, else the bundled one. Its
    audience is its lists' subscribers in the named `segment` (its filter copied as it is now), or matching
    `segment_filter`, if either is given."""
    digest = digests.get_published(session, digest_slug)
    chosen = templates.get_template(session, template) if template is not None else None
    saved = segments.get_segment(session, segment) if segment is not None else None
    if saved is not None:
        segment_filter = saved.filter
    if not list_slugs:
        raise CampaignError("name at least one list to send to")
    lists = [get_list(session, slug) for slug in dict.fromkeys(list_slugs)]
    if chosen is None:
        chosen = templates.default_for(session, lists)
    if scheduled_at is not None:
        if scheduled_at.tzinfo is None:
            raise CampaignError("the send time needs a timezone, e.g. 2026-12-01T09:00:00+00:00")
        if scheduled_at <= (now or utcnow()):
            raise CampaignError(f"the send time {scheduled_at.isoformat()} is in the past")
    if not allow_repeat:
        _refuse_repeat(session, digest, lists)
    clean_subject = " ".join((subject or digest.title).split())
    if not clean_subject:
        raise CampaignError("the subject is empty")
    problems = deliverability.blocking_errors(
        digest, lists, clean_subject, template_source=chosen.source if chosen else None
    )
    if problems:
        raise CampaignError(
            f"digest {digest.slug!r} fails the pre-send check: "
            + "; ".join(problems)
            + " (see `newsletter digests check`)"
        )
    campaign = Campaign(
        digest_id=digest.id,
        template_id=chosen.id if chosen else None,
        subject=clean_subject[:500],
        status=CampaignStatus.scheduled if scheduled_at else CampaignStatus.draft,
        scheduled_at=scheduled_at.astimezone(dt.UTC) if scheduled_at else None,
        created_by=created_by,
        lists=lists,
        segment_id=saved.id if saved else None,
        segment_filter=segment_filter,
    )
    session.add(campaign)
    session.flush()
    return campaign


def resend_to_non_openers(
    session: Session,
    campaign_id: int,
    *,
    subject: str | None = None,
    scheduled_at: dt.datetime | None = None,
    created_by: str | None = None,
) -> Campaign:
    """A new campaign of the same digest, lists and template, to those of `campaign_id`'s recipients with a
    `sent` row and no open; whoever unsubscribed or was suppressed since is left out when it is planned."""
    first = get_campaign(session, campaign_id)
    if first.started_at is None:
        raise CampaignError(f"campaign {campaign_id} never started sending: there is nobody to resend to")
    if first.status not in (CampaignStatus.finished, CampaignStatus.cancelled):
        raise CampaignError(
            f"campaign {campaign_id} is {first.status.value}: resend to non-openers once it has finished sending"
        )
    return create_campaign(
        session,
        digest_slug=first.digest.slug,
        list_slugs=[m.slug for m in first.lists],
        subject=subject or first.subject,
        scheduled_at=scheduled_at,
        allow_repeat=True,
        created_by=created_by,
        template=template.name if (template := session.get(Template, first.template_id or 0)) else None,
        segment_filter=non_openers_filter(campaign_id),
    )


def non_openers_filter(campaign_id: int) -> dict[str, Any]:
    """The segment filter of "received campaign N and did not open it"."""
    return {"received": {"campaign": campaign_id, "opened": False}}


def _refuse_repeat(session: Session, digest: Digest, lists: Sequence[MailingList]) -> None:
    repeated = session.execute(
        select(MailingList.slug, Campaign.id)
        .join(campaign_lists, campaign_lists.c.list_id == MailingList.id)
        .join(Campaign, Campaign.id == campaign_lists.c.campaign_id)
        .where(
            Campaign.digest_id == digest.id,
            MailingList.id.in_([m.id for m in lists]),
            Campaign.status != CampaignStatus.cancelled,
        )
    ).first()
    if repeated is not None:
        raise CampaignError(
            f"digest {digest.slug!r} was already sent to list {repeated[0]!r} by campaign {repeated[1]}; "
            "pass --again to send it once more"
        )


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False, options: Sequence[Any] = ()) -> Campaign:
    """The campaign (from the session's identity map when it is there: a report asks for it several
    times, and each SELECT would fetch its HTML and text again); `options` e.g. defer those."""
    campaign = session.get(Campaign, campaign_id, with_for_update=lock or None, options=options)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    return campaign


# --- starting ---------------------------------------------------------------------------------------------


def start(session: Session, settings: Settings, campaign_id: int) -> list[BatchRange]:
    """Render once, materialise the ledger and return the batches to enqueue. Safe to run twice."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status in (CampaignStatus.draft, CampaignStatus.scheduled):
        render_campaign(session, settings, campaign)
        campaign.recipient_count = plan(session, campaign)
        # every claim and record of the campaign reads these new rows; plan them on fresh statistics
        analyze(session, "deliveries")
        campaign.planned_at = campaign.started_at = utcnow()
        campaign.status = CampaignStatus.sending
        session.flush()
        outbox.emit_campaign(session, "campaign.started", campaign.id)
        log_state(campaign.id, CampaignStatus.sending, recipients=campaign.recipient_count)
        ranges = planned_ranges(session, campaign.id, campaign.recipient_count, settings.batch_size)
    elif campaign.status == CampaignStatus.sending:
        ranges = batch_ranges(session, campaign.id, settings.batch_size)
    else:
        return []
    if not ranges:
        finish_if_done(session, campaign.id)
    return ranges


def render_campaign(session: Session, settings: Settings, campaign: Campaign) -> None:
    """Render the digest once for the whole campaign, registering its links for click tracking."""
    primary = campaign.lists[0]
    rendered = rendering.render_for_list(
        digests.from_stored(campaign.digest),
        primary,
        base_url=settings.base_url,
        template_source=templates.template_source(session, campaign.template_id),
    )
    campaign.html = rendered.html
    campaign.text = rendered.text
    if primary.tracking and rendered.links:
        # numbered in order of first appearance, as render_for_list numbered them
        session.execute(
            insert(Link),
            [{"campaign_id": campaign.id, "position": p, "url": u} for p, u in enumerate(rendered.links, start=1)],
        )


def finish_if_done(session: Session, campaign_id: int) -> bool:
    """A sending campaign with no row pending or sending is finished."""
    busy = session.scalar(
        select(Delivery.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.sending]),
        )
        .limit(1)
    )
    if busy is not None:
        return False
    result = session.execute(
        update(Campaign)
        # a sequence step's campaign never finishes: its step falls due for new subscribers while it is on
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.sending, digest_campaigns())
        .values(status=CampaignStatus.finished, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    finished = bool(rowcount(result))
    if finished:
        counts = counters.read(session, campaign_id).counts
        outbox.emit_campaign(session, "campaign.finished", campaign_id, counts=counts)
        log_state(campaign_id, CampaignStatus.finished)
    return finished


audit = logging.getLogger("newsletter.audit")
log = logging.getLogger(__name__)


def log_state(campaign_id: int, status: CampaignStatus, reason: str | None = None, **fields: Any) -> None:
    """The one structured line of each campaign state change."""
    why = f": {reason}" if reason else ""
    logs.event(
        log, "campaign_state", f"campaign {campaign_id} is {status.value}{why}",
        campaign=campaign_id, status=status.value, reason=reason, **fields,
    )  # fmt: skip


# --- pause, resume, cancel, recover -----------------------------------------------------------------------


def pause(session: Session, campaign_id: int, reason: str = "paused by an editor") -> Campaign:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.sending:
        raise CampaignError(f"campaign {campaign_id} is {campaign.status.value}, only a sending one can pause")
    campaign.status = CampaignStatus.paused
    campaign.pause_reason = reason
    session.flush()
    outbox.emit_campaign(session, "campaign.paused", campaign.id, reason=reason, by="editor")
    log_state(campaign_id, CampaignStatus.paused, reason)
    return campaign


def resume(session: Session, settings: Settings, campaign_id: int) -> list[BatchRange]:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.paused:
        raise CampaignError(f"campaign {campaign_id} is {campaign.status.value}, only a paused one can resume")
    if campaign.pause_reason and campaign.pause_reason.startswith(reputation.REASON_PREFIX):
        audit.warning("campaign %s resumed, overriding the %s", campaign_id, campaign.pause_reason)
    campaign.status = CampaignStatus.sending
    campaign.pause_reason = None
    session.flush()
    log_state(campaign_id, CampaignStatus.sending, "resumed")
    ranges = batch_ranges(session, campaign_id, settings.batch_size)
    if not ranges:
        finish_if_done(session, campaign_id)
    return ranges


def cancel(session: Session, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status in (CampaignStatus.finished, CampaignStatus.cancelled):
        raise CampaignError(f"campaign {campaign_id} is already {campaign.status.value}")
    campaign.status = CampaignStatus.cancelled
    campaign.finished_at = utcnow()
    session.flush()
    log_state(campaign_id, CampaignStatus.cancelled)
    skip_pending(session, campaign_id)
    # in this transaction, like the pause: the receivers learn of it only if the cancel commits; the
    # counts are the ledger's now (rows a worker holds in flight may still end sent or skipped)
    counts = counters.read(session, campaign_id).counts
    outbox.emit_campaign(session, "campaign.cancelled", campaign_id, counts=counts, by="editor")
    return campaign


def skip_pending(session: Session, campaign_id: int) -> int:
    """Mark a cancelled campaign's pending rows `skipped`, passing over rows a worker has locked.

    Waiting for them would deadlock: this transaction holds the campaign row, and a worker's statement
    that locked some pending rows may next need that row or a row this one reached first. A locked row is
    a claim in flight: the worker sends the group or gives it back as `skipped` (release_claims), and a
    row it put back to wait for a retry is left for the sweep, which calls this again."""
    pending = (
        select(Delivery.id)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.pending)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(pending))
        .values(status=DeliveryStatus.skipped, smtp_text="campaign cancelled")
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


@dataclass(frozen=True)
class SweepReport:
    unknown: int
    requeued: list[BatchRange]
    started: list[int]


def sweep(session: Session, settings: Settings, now: dt.datetime | None = None) -> SweepReport:
    """The periodic recovery pass: expire dead claims, re-enqueue lost work, start due scheduled campaigns."""
    now = now or utcnow()
    lease_expired = now - dt.timedelta(seconds=settings.claim_lease_seconds)
    stuck = and_(Delivery.status == DeliveryStatus.sending, Delivery.claimed_at < lease_expired)
    if settings.unknown_policy == "resend":
        values: dict[str, Any] = {"status": DeliveryStatus.pending, "smtp_text": RESENT_AFTER_UNKNOWN}
    else:
        values = {
            "status": DeliveryStatus.unknown,
            "smtp_text": "worker died while this message was in flight; it may or may not have been delivered",
        }
    unknown = rowcount(
        session.execute(
            update(Delivery).where(stuck).values(claimed_by=None, **values).execution_options(synchronize_session=False)
        )
    )

    left_behind = session.scalars(
        select(Campaign.id).where(
            Campaign.status == CampaignStatus.cancelled,
            exists().where(Delivery.campaign_id == Campaign.id, Delivery.status == DeliveryStatus.pending),
        )
    ).all()
    for campaign_id in left_behind:
        skip_pending(session, campaign_id)

    counters.compact(session, now)
    event_counters.compact(session)
    growth.prune(session, now.date())
    requeued: list[BatchRange] = []
    sending = session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.sending)).all()
    for campaign_id in sending:
        ranges = batch_ranges(session, campaign_id, settings.batch_size, due_only=True)
        requeued.extend(ranges)
        if not ranges:
            finish_if_done(session, campaign_id)
    return SweepReport(unknown=unknown, requeued=requeued, started=due_campaigns(session, now))
