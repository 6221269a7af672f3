"""Campaign reports: delivery counts, opens, clicks, unsubscribes and bounces, the per-recipient ledger, resends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, union_all, update
from sqlalchemy.orm import Session, defer, selectinload

from newsletter import delivery, segments
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery import counters, event_counters, ledger
from newsletter.delivery.progress import Progress
from newsletter.lists import get_list
from newsletter.models import (
    Campaign,
    CampaignCount,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    EventType,
    Link,
    MailingList,
    Subscriber,
    digest_campaigns,
)

RESENDABLE = (DeliveryStatus.failed, DeliveryStatus.unknown)
MAX_PAGE = 1000


def ledger_totals(session: Session, campaign: Campaign) -> tuple[dict[str, int], dt.datetime | None]:
    """Rows per delivery status and the latest sent_at, from the campaign's counters (no scan)."""
    counted = counters.read(session, campaign.id)
    return counted.counts, counted.last_sent_at


def _engagement(session: Session, campaign_id: int, counted: event_counters.Engagement | None) -> dict[str, Any]:
    """Events per kind, the deliveries that opened and clicked, clicks per link: from the event counters
    (a few hundred rows, whatever the campaign's size)."""
    counted = counted or event_counters.read(session, campaign_id)
    clicks = [
        {
            "url": url,
            "clicks": counted.link_clicks.get(link_id, 0),
            "unique_clicks": counted.link_people.get(link_id, 0),
        }
        for link_id, url in session.execute(
            select(Link.id, Link.url).where(Link.campaign_id == campaign_id).order_by(Link.position)
        )
    ]
    return {
        "events": counted.events,
        "unique_opens": counted.people[EventType.open.value],
        "unique_clickers": counted.people[EventType.click.value],
        "links": clicks,
    }


def campaign_report(
    session: Session,
    campaign_id: int,
    now: dt.datetime | None = None,
    *,
    counted: event_counters.Engagement | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Everything the campaign status command and API show, computed with a few aggregate queries
    (`counted`: the campaign's event counters, `progress`: its `campaign_progress`, when the caller read
    them already)."""
    campaign = delivery.get_campaign(session, campaign_id)
    if progress is not None:
        counts, last_sent = progress.counts, progress.last_sent_at
    else:
        counts, last_sent = ledger_totals(session, campaign)
    engaged = _engagement(session, campaign_id, counted)
    events, unique_opens, clicks = engaged["events"], engaged["unique_opens"], engaged["links"]
    unique_clickers = engaged["unique_clickers"]
    duration = None
    if campaign.started_at is not None:
        end = campaign.finished_at or (now or utcnow())
        duration = max(0.0, (end - campaign.started_at).total_seconds())
    rate = None
    if campaign.started_at is not None and last_sent is not None and counts[DeliveryStatus.sent.value]:
        seconds = max((last_sent - campaign.started_at).total_seconds(), 0.001)
        rate = round(counts[DeliveryStatus.sent.value] / seconds, 2)
    return {
        "id": campaign.id,
        "status": campaign.status.value,
        "subject": campaign.subject,
        "digest": campaign.digest.slug if campaign.digest is not None else None,  # None: a sequence step's
        "lists": [m.slug for m in campaign.lists],
        "scheduled_at": campaign.scheduled_at,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "pause_reason": campaign.pause_reason,
        "recipients": campaign.recipient_count,
        "counts": counts,
        "opens": events[EventType.open],
        "unique_opens": unique_opens,
        "clicks": events[EventType.click],
        "unique_clickers": unique_clickers,
        "links": clicks,
        "unsubscribes": events[EventType.unsubscribe],
        "bounces": events[EventType.bounce],
        "complaints": events[EventType.complaint],
        "soft_bounces": events[event_counters.SOFT_BOUNCE],
        "soft_bounce_suppressed": events[event_counters.SOFT_SUPPRESSED],
        "duration_seconds": duration,
        "send_rate_per_second": rate,
    }


def list_campaigns(
    session: Session,
    *,
    status: CampaignStatus | None = None,
    limit: int = 100,
    older_than: int | None = None,
    newer_than: int | None = None,
) -> list[Campaign]:
    """Campaigns newest first, keyset-paged by id: those older than one id, or the page just newer."""
    limit = max(1, min(limit, MAX_PAGE))
    # the page shows each campaign's digest and lists: load them in two queries, not two per campaign
    query = (
        select(Campaign)
        .options(
            defer(Campaign.html), defer(Campaign.text), selectinload(Campaign.digest), selectinload(Campaign.lists)
        )
        .where(digest_campaigns())  # a sequence step's campaign is shown with its sequence
    )
    if status is not None:
        query = query.where(Campaign.status == status)
    if newer_than is not None:
        # the `limit` campaigns just above the id, oldest first, then turned newest first
        newer = session.scalars(query.where(Campaign.id > newer_than).order_by(Campaign.id).limit(limit)).all()
        return list(reversed(newer))
    if older_than is not None:
        query = query.where(Campaign.id < older_than)
    return list(session.scalars(query.order_by(Campaign.id.desc()).limit(limit)))


@dataclass(frozen=True)
class CampaignFigures:
    sent: int
    unique_opens: int
    unique_clicks: int
    bounces: int = 0
    unsubscribes: int = 0

    def rate(self, part: int) -> float | None:
        return part / self.sent if self.sent else None


def campaign_figures(session: Session, campaign_ids: Sequence[int]) -> dict[int, CampaignFigures]:
    """Sent, readers who opened and who clicked, bounces and unsubscribes, for a page of campaigns at once,
    from the counters (two queries)."""
    ids = tuple(campaign_ids)
    sent = dict.fromkeys(ids, 0)
    if not ids:
        return {}
    for campaign_id, total in session.execute(
        select(CampaignCount.campaign_id, func.sum(CampaignCount.n))
        .where(CampaignCount.campaign_id.in_(ids), CampaignCount.status == DeliveryStatus.sent.value)
        .group_by(CampaignCount.campaign_id)
    ):
        sent[campaign_id] = int(total)
    opened, clicked, bounce, unsubscribe = (
        EventType.open.value,
        EventType.click.value,
        EventType.bounce.value,
        EventType.unsubscribe.value,
    )
    found = event_counters.figures_of(session, ids, people=[opened, clicked], events=[bounce, unsubscribe])
    return {
        i: CampaignFigures(
            sent[i],
            unique_opens=found.get((i, opened), (0, 0))[1],
            unique_clicks=found.get((i, clicked), (0, 0))[1],
            bounces=found.get((i, bounce), (0, 0))[0],
            unsubscribes=found.get((i, unsubscribe), (0, 0))[0],
        )
        for i in ids
    }


@dataclass
class LedgerPage:
    items: list[dict[str, Any]]
    next_cursor: int | None


def ledger_page(
    session: Session,
    campaign_id: int,
    *,
    statuses: Sequence[DeliveryStatus] = (),
    search: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> LedgerPage:
    """The per-recipient ledger in id order, filtered by status (e.g. who failed) and by the start of the
    address (case-insensitive; an index finds it among millions), keyset-paged."""
    delivery.get_campaign(session, campaign_id)
    limit = max(1, min(limit, MAX_PAGE))
    query = (
        select(Delivery, Subscriber.email, MailingList.slug)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(MailingList, MailingList.id == Delivery.list_id)
        .where(Delivery.campaign_id == campaign_id)
        .order_by(Delivery.id)
        .limit(limit + 1)
    )
    if statuses:
        query = query.where(Delivery.status.in_(list(statuses)))
    if search and search.strip():
        query = query.where(Subscriber.email.like(f"{_like_escaped(search.strip().lower())}%", escape="\\"))
    if after is not None:
        query = query.where(Delivery.id > after)
    rows = session.execute(query).all()
    items = [
        {
            "id": d.id,
            "subscriber_id": d.subscriber_id,
            "email": email,
            "list": slug,
            "status": d.status.value,
            "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at,
            "message_id": d.message_id,
            "smtp_code": d.smtp_code,
            "smtp_text": d.smtp_text,
            "sent_at": d.sent_at,
        }
        for d, email, slug in rows[:limit]
    ]
    return LedgerPage(items=items, next_cursor=rows[limit - 1][0].id if len(rows) > limit else None)


def resend(
    session: Session, settings: Settings, campaign_id: int, statuses: Sequence[DeliveryStatus | str]
) -> tuple[int, list[delivery.BatchRange]]:
    """Put failed and/or unknown recipients back in the queue; `sent` rows are never touched.

    Returns how many rows were requeued and the batches to enqueue (none while the campaign is paused:
    resume enqueues them). Recipients who unsubscribed or were suppressed meanwhile are skipped at claim.
    """
    wanted = []
    for status in statuses:
        try:
            value = DeliveryStatus(status)
        except ValueError:
            raise delivery.CampaignError(f"unknown delivery status {status!r}") from None
        if value not in RESENDABLE:
            raise delivery.CampaignError(
                f"only failed and unknown deliveries can be resent, not {value.value} "
                "(a sent message is never sent twice)"
            )
        wanted.append(value)
    if not wanted:
        raise delivery.CampaignError("name the statuses to resend: failed, unknown or both")
    campaign = delivery.get_campaign(session, campaign_id, lock=True)
    if campaign.status in (CampaignStatus.cancelled, CampaignStatus.draft, CampaignStatus.scheduled):
        raise delivery.CampaignError(f"campaign {campaign_id} is {campaign.status.value}: nothing to resend")
    moved = (
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.status.in_(wanted))
            .values(
                status=DeliveryStatus.pending,
                attempts=0,
                next_attempt_at=None,
                claimed_at=None,
                claimed_by=None,
                smtp_code=None,
                smtp_text=None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        or 0
    )
    if moved and campaign.status == CampaignStatus.finished:
        campaign.status = CampaignStatus.sending
        campaign.finished_at = None
        delivery.log_state(campaign_id, CampaignStatus.sending, f"resending {moved} deliveries")
    session.flush()
    if campaign.status != CampaignStatus.sending:
        return moved, []
    return moved, ledger.batch_ranges(session, campaign_id, settings.batch_size)


def unsent_digests(session: Session, limit: int = 5) -> list[Digest]:
    """Published digests no campaign uses yet (drafts waiting to be sent), newest first, with their items
    (loaded for all of them in one more query)."""
    used = select(Campaign.id).where(Campaign.digest_id == Digest.id).exists()
    query = select(Digest).options(selectinload(Digest.items)).where(~used)
    return list(session.scalars(query.order_by(Digest.date.desc(), Digest.id.desc()).limit(limit)))


def _like_escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def reach(session: Session, list_slugs: Sequence[str], segment: str | None = None) -> int:
    """The number of recipients a campaign to these lists would have if planned now (one per person,
    without the unconfirmed, suppressed, blocked or those at a blocked domain: `ledger.plan`'s selection),
    only those in the named segment if one is given."""
    lists = [get_list(session, slug) for slug in dict.fromkeys(list_slugs)]
    segment_filter = segments.get_segment(session, segment).filter if segment else None
    return ledger.reach(session, [m.id for m in lists], segment_filter)


def non_openers(session: Session, campaign: Campaign) -> int:
    """How many of a campaign's recipients a resend to non-openers would reach now."""
    return ledger.reach(session, [m.id for m in campaign.lists], delivery.non_openers_filter(campaign.id))


def campaign_reach(session: Session, campaign: Campaign) -> int:
    """How many recipients a campaign not yet planned would have now: its lists ∩ its segment filter."""
    return ledger.reach(session, [m.id for m in campaign.lists], campaign.segment_filter)


TIMELINE_DAYS = 7


@dataclass(frozen=True)
class Hour:
    start: dt.datetime
    opens: int
    clicks: int


def engagement_timeline(
    session: Session, campaign_id: int, *, counted: event_counters.Engagement | None = None
) -> list[Hour]:
    """Opens and clicks per hour over the campaign's first seven days, from its start to the last hour
    with an event (every hour between present, zeros included), from the event counters. Opens are
    estimates: mail clients and privacy proxies fetch the pixel without a reader, and many readers block it."""
    campaign = delivery.get_campaign(session, campaign_id)
    began = campaign.started_at or campaign.created_at
    first = event_counters.hour_of(began)
    end = first + TIMELINE_DAYS * 24
    hours = (counted or event_counters.read(session, campaign_id)).hours
    last = max((hour for hour, _ in hours if first <= hour < end), default=first)
    return [
        Hour(
            event_counters.hour_start(hour),
            hours.get((hour, EventType.open.value), 0),
            hours.get((hour, EventType.click.value), 0),
        )
        for hour in range(first, last + 1)
    ]


@dataclass
class EventPage:
    items: list[dict[str, Any]]
    next_cursor: int | None


REPORTED_EVENTS = (EventType.bounce, EventType.complaint, EventType.unsubscribe)


def campaign_events(
    session: Session, campaign_id: int, kind: EventType | None, *, after: int | None = None, limit: int = 50
) -> EventPage:
    """A campaign's bounces, complaints or unsubscribes (None: all three), newest first, with who and why,
    keyset-paged."""
    if kind is not None and kind not in REPORTED_EVENTS:
        raise delivery.CampaignError(f"only {', '.join(k.value for k in REPORTED_EVENTS)} are listed per campaign")
    delivery.get_campaign(session, campaign_id)
    limit = max(1, min(limit, MAX_PAGE))
    query = (
        select(Event.id, Event.type, Event.created_at, Event.detail, Subscriber.email)
        .outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.campaign_id == campaign_id, Event.type.in_([kind] if kind else REPORTED_EVENTS))
        .order_by(Event.id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Event.id < after)
    rows = session.execute(query).all()
    items = [
        {"id": i, "type": EventType(t).value, "at": at, "detail": detail, "email": email}
        for i, t, at, detail, email in rows[:limit]
    ]
    return EventPage(items=items, next_cursor=rows[limit - 1].id if len(rows) > limit else None)


def latest_events(
    session: Session, campaign_id: int, kinds: Sequence[EventType], limit: int
) -> dict[EventType, EventPage]:
    """The newest `limit` events of each kind (as `campaign_events` pages them), in one query: a UNION ALL
    of one index scan per kind."""
    delivery.get_campaign(session, campaign_id)
    parts = [
        select(Event.id, Event.type, Event.created_at, Event.detail, Subscriber.email)
        .outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.campaign_id == campaign_id, Event.type == kind)
        .order_by(Event.id.desc())
        .limit(limit + 1)
        .subquery()
        for kind in kinds
    ]
    found: dict[EventType, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    if parts:
        union = union_all(*(select(part) for part in parts)).subquery()
        for i, t, at, detail, email in session.execute(select(union).order_by(union.c.id.desc())):
            found[EventType(t)].append(
                {"id": i, "type": EventType(t).value, "at": at, "detail": detail, "email": email}
            )
    return {
        kind: EventPage(items=rows[:limit], next_cursor=rows[limit - 1]["id"] if len(rows) > limit else None)
        for kind, rows in found.items()
    }
