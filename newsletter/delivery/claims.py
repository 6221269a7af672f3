"""A worker's hold on the ledger rows it claimed: renewed while it sends (the lease), given back when a
pause or cancel stops its group, and when the next retry of a range falls due."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.delivery.ledger import rowcount
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus


def _held_by(worker: str, campaign_id: int, first_id: int, last_id: int) -> tuple[Any, ...]:
    """The rows of a batch range that `worker` (its per-run claim token) still holds in `sending`: only the
    claim sets `claimed_by` and every write out of `sending` clears it (see ledger._PG_RECORD_SENT_SQL),
    so no status test, which would steer PostgreSQL to the partial index of sending rows (an entry for every
    row ever claimed until VACUUM) instead of the range's ids."""
    return (
        Delivery.campaign_id == campaign_id,
        Delivery.id.between(first_id, last_id),
        Delivery.claimed_by == worker,
    )


def renew_claims(bind: Session | Connection, campaign_id: int, first_id: int, last_id: int, worker: str) -> int:
    """Move the claim time of the rows this worker still holds in the range to now: the lease is "presumed
    dead when not renewed for this long", so a live worker on a slow server keeps its rows from the sweep.
    One statement for the whole group, run every fraction of the lease, not per message."""
    result = bind.execute(
        update(Delivery)
        .where(*_held_by(worker, campaign_id, first_id, last_id))
        .values(claimed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def release_claims(session: Session, campaign_id: int, first_id: int, last_id: int, worker: str) -> int:
    """Give back rows this worker claimed but did not try (pause/cancel arrived mid-batch)."""
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    target = DeliveryStatus.skipped if status == CampaignStatus.cancelled else DeliveryStatus.pending
    result = session.execute(
        update(Delivery)
        .where(*_held_by(worker, campaign_id, first_id, last_id))
        .values(status=target, attempts=Delivery.attempts - 1, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def next_retry_delay(session: Session, campaign_id: int, first_id: int, last_id: int) -> float | None:
    """Seconds until the earliest retry of the range is due; None when none is waiting."""
    earliest = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.campaign_id == campaign_id,
            Delivery.id.between(first_id, last_id),
            Delivery.status == DeliveryStatus.pending,
        )
    )
    if earliest is None:
        return None
    if earliest.tzinfo is None:  # SQLite aggregate results bypass the column type
        earliest = earliest.replace(tzinfo=dt.UTC)
    return max(0.0, (earliest - utcnow()).total_seconds())
