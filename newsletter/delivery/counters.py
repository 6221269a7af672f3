"""The per-campaign counters of ledger rows per status (`campaign_counts`): read them, compact them.

Triggers on `deliveries` (migration 0006) write them in the transaction of every status change, so they
are exact; `progress.tally` (one scan of the ledger) is the check they are tested against. Reading is a
sum over a few rows per status: per connection that wrote (`shard`) and, for `sent`, per TICK_SECONDS.
The sweep folds the rows of closed connections and old ticks into shard 0, so the rows stay few.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from newsletter.db import is_postgres
from newsletter.models import CampaignCount, DeliveryStatus

TICK_SECONDS = 5  # as in migration 0006, which computes the ticks
RESENT = "resent"  # the pseudo-status: sent rows that may have arrived twice
KEEP_TICKS_SECONDS = 120  # `sent` ticks younger than this stay apart: the rate reads the last minute


def tick_of(moment: dt.datetime) -> int:
    return int(moment.timestamp()) // TICK_SECONDS


def tick_start(tick: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(tick * TICK_SECONDS, dt.UTC)


@dataclass(frozen=True)
class Counted:
    """A campaign's ledger rows per status (every status present, zeros included), from the counters."""

    counts: dict[str, int]
    sent_since: int  # rows sent in ticks at or after the `since` asked for (0 when none was)
    resent_after_unknown: int
    last_sent_at: dt.datetime | None


def read(session: Session, campaign_id: int, *, since: dt.datetime | None = None) -> Counted:
    """Sum the campaign's counter rows per status (a few rows, whatever the campaign's size)."""
    rows = session.execute(
        select(*sums(since)).where(CampaignCount.campaign_id == campaign_id).group_by(CampaignCount.status)
    )
    return fold(rows)


def sums(since: dt.datetime | None) -> tuple[Any, ...]:
    """The columns `fold` reads, per counter status: the status, its total, its rows sent at or after
    `since` and its latest sent_at (a caller may select them beside its own, grouped by the status)."""
    recent = func.sum(CampaignCount.n).filter(CampaignCount.tick >= tick_of(since)) if since is not None else None
    return (
        CampaignCount.status,
        func.sum(CampaignCount.n),
        recent if recent is not None else text("0"),
        func.max(CampaignCount.last_at),
    )


def fold(rows: Iterable[Sequence[Any]]) -> Counted:
    """The Counted of rows that start with the columns of `sums` (a row with status None: no counters)."""
    counts = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    sent_since = resent = 0
    last_sent = None
    for status, total, recently, latest, *_ in rows:
        if status is None:
            continue
        if status == RESENT:
            resent = int(total)
            continue
        counts[status] = int(total)
        if status == DeliveryStatus.sent.value:
            sent_since, last_sent = int(recently or 0), _aware(latest)
    return Counted(counts, sent_since, resent, last_sent)


def _aware(value: Any) -> dt.datetime | None:
    """An aggregate's timestamp, which SQLite hands back as text and naive."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# PostgreSQL: one statement moves the rows of connections that are gone (and old ticks) into shard 0.
# Live connections keep their rows, so compacting never waits on or deadlocks with a sending worker.
_PG_COMPACT = text("""
WITH gone AS (
    DELETE FROM campaign_counts
    WHERE (shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL))
       OR (shard = 0 AND tick <> 0 AND tick < :old_tick)
    RETURNING campaign_id, status, tick, n, last_at
)
INSERT INTO campaign_counts AS cc (campaign_id, status, tick, shard, n, last_at)
SELECT campaign_id, status, CASE WHEN tick < :old_tick THEN 0 ELSE tick END, 0, sum(n), max(last_at)
FROM gone
GROUP BY 1, 2, 3
ON CONFLICT (campaign_id, status, tick, shard)
    DO UPDATE SET n = cc.n + excluded.n, last_at = greatest(cc.last_at, excluded.last_at)
""")

_SQLITE_FOLD = text("""
INSERT INTO campaign_counts (campaign_id, status, tick, shard, n, last_at)
SELECT campaign_id, status, 0, 0, sum(n), max(last_at) FROM campaign_counts
WHERE tick <> 0 AND tick < :old_tick
GROUP BY campaign_id, status
ON CONFLICT (campaign_id, status, tick, shard) DO UPDATE SET n = n + excluded.n,
    last_at = max(coalesce(last_at, excluded.last_at), coalesce(excluded.last_at, last_at))
""")


def compact(session: Session, now: dt.datetime) -> None:
    """Fold counter rows no writer will touch again into shard 0, tick 0 (run by the sweep)."""
    old_tick = tick_of(now - dt.timedelta(seconds=KEEP_TICKS_SECONDS))
    if is_postgres(session):
        session.execute(_PG_COMPACT, {"old_tick": old_tick})
    else:
        session.execute(_SQLITE_FOLD, {"old_tick": old_tick})
        session.execute(delete(CampaignCount).where(CampaignCount.tick != 0, CampaignCount.tick < old_tick))
    session.execute(delete(CampaignCount).where(CampaignCount.n == 0, CampaignCount.shard == 0))
