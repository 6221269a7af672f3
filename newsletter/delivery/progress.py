"""Where a campaign stands: its ledger rows per delivery status, and the progress built on it.

Readers that poll (the status command and its --wait bar, the campaign page, the report) read the
counters (`counters.read`, a few rows kept by triggers in every transaction that changes the ledger).
`tally` counts the same by scanning the campaign's ledger rows: the check the counters are tested against.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.delivery import CampaignNotFound, counters
from newsletter.delivery.ledger import RESENT_AFTER_UNKNOWN
from newsletter.models import Campaign, CampaignCount, CampaignStatus, Delivery, DeliveryStatus

RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Tally:
    """A campaign's ledger rows per status (every status present, zeros included) and what one scan adds."""

    counts: dict[str, int]
    sent_since: int  # rows sent at or after the `since` asked for (0 when none was)
    resent_after_unknown: int  # sent rows that may have arrived twice (UNKNOWN_POLICY=resend)
    last_sent_at: dt.datetime | None


def tally(session: Session, campaign_id: int, *, since: dt.datetime | None = None) -> Tally:
    """Count the campaign's ledger rows per status, in one scan."""
    counts = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    sent_since = resent = 0
    last_sent = None
    rows = session.execute(
        select(
            Delivery.status,
            func.count(),
            func.count().filter(Delivery.sent_at >= since) if since is not None else literal(0),
            func.count().filter(Delivery.smtp_text == RESENT_AFTER_UNKNOWN),
            func.max(Delivery.sent_at),
        )
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.status)
    )
    for status, count, sent_recently, resent_rows, latest in rows:
        counts[DeliveryStatus(status).value] = count
        if status == DeliveryStatus.sent:
            sent_since, resent = sent_recently, resent_rows
        if latest is not None and (last_sent is None or latest > last_sent):
            last_sent = latest
    if last_sent is not None and last_sent.tzinfo is None:  # SQLite aggregates bypass the column type
        last_sent = last_sent.replace(tzinfo=dt.UTC)
    return Tally(counts, sent_since, resent, last_sent)


@dataclass(frozen=True)
class Progress:
    """Where a campaign stands: counts per delivery status, the recent send rate and an ETA."""

    campaign_id: int
    status: CampaignStatus
    counts: dict[str, int]
    rate: float  # messages sent per second over the last minute (or since the start, if shorter)
    eta_seconds: float | None  # None when nothing is moving
    pause_reason: str | None
    resent_after_unknown: int
    last_error: str | None  # the latest reason a pending row is waiting for a retry, e.g. the server is down
    scheduled_at: dt.datetime | None = None  # when a scheduled campaign starts (read in the same query)
    created_at: dt.datetime | None = None
    last_sent_at: dt.datetime | None = None  # the latest row sent (from the counters)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return self.total - self.counts[DeliveryStatus.pending.value] - self.counts[DeliveryStatus.sending.value]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.campaign_id,
            "status": self.status.value,
            "counts": self.counts,
            "rate": round(self.rate, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "pause_reason": self.pause_reason,
            "resent_after_unknown": self.resent_after_unknown,
            "last_error": self.last_error,
        }


def campaign_progress(session: Session, campaign_id: int, now: dt.datetime | None = None) -> Progress:
    """Counts, rate and ETA in one small query whatever the campaign's size: the campaign's state with
    the latest retry reason, beside its counters (a row per counter status)."""
    now = now or utcnow()
    since = counters.tick_start(counters.tick_of(now - dt.timedelta(seconds=RATE_WINDOW_SECONDS)))
    rows = session.execute(
        select(
            *counters.sums(since),
            Campaign.status,
            Campaign.started_at,
            Campaign.pause_reason,
            _last_retry_reason(campaign_id),
            Campaign.scheduled_at,
            Campaign.created_at,
        )
        .select_from(Campaign)
        .outerjoin(CampaignCount, CampaignCount.campaign_id == Campaign.id)
        .where(Campaign.id == campaign_id)
        .group_by(Campaign.id, CampaignCount.status)
    ).all()
    if not rows:
        raise CampaignNotFound(campaign_id)
    status, started_at, pause_reason, last_error, scheduled_at, created_at = rows[0][4:]
    counted = counters.fold(rows)
    counts = counted.counts
    window = max((now - since).total_seconds(), 1.0)
    if started_at is not None:
        window = min(window, max((now - started_at).total_seconds(), 1.0))
    rate = counted.sent_since / window
    left = counts[DeliveryStatus.pending.value] + counts[DeliveryStatus.sending.value]
    moving = status == CampaignStatus.sending and rate > 0
    return Progress(
        campaign_id=campaign_id,
        status=status,
        counts=counts,
        rate=rate,
        eta_seconds=left / rate if moving else (0.0 if not left else None),
        pause_reason=pause_reason,
        resent_after_unknown=counted.resent_after_unknown,
        last_error=last_error,
        scheduled_at=scheduled_at,
        created_at=created_at,
        last_sent_at=counted.last_sent_at,
    )


def _last_retry_reason(campaign_id: int) -> Any:
    """The latest reason a pending row waits for a retry (e.g. the server is down), through
    ix_deliveries_retry_at: only rows waiting for a retry are read, not the campaign's pending rows."""
    return (
        select(Delivery.smtp_text)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status == DeliveryStatus.pending,
            Delivery.next_attempt_at.is_not(None),
        )
        .order_by(Delivery.next_attempt_at.desc())
        .limit(1)
        .scalar_subquery()
    )
