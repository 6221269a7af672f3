"""Subscriber growth per UTC day (the dashboard's chart): the people who joined and who left each day.

A day's numbers are counted once and kept in `growth_days` with the PostgreSQL snapshot the count saw;
triggers on `subscriptions` (migration 0015) add a `growth_changes` row per (day, transaction) that
changed the day's joins or unsubscribes. A view reads the kept days whose snapshot saw every change
visible now (one query) and counts again, in one statement that also keeps the result, only the days that
are stale or were never counted: usually today, from the indexes on `confirmed_at` / `unsubscribed_at`.
The numbers are exactly those of `scan` (two GROUP BYs over the subscriptions, the check they are tested
against): a change still uncommitted is invisible to both, and once it commits the day is stale.
Writers only insert rows of their own transaction, so they never wait on each other or on a view; a
change drops the days its own transaction counted (a snapshot may show its own transaction as seen).
SQLite (one small database) counts on each view.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from newsletter.db import is_postgres, utcnow
from newsletter.models import CountedDay, GrowthChange, Subscription

HORIZON_DAYS = 366  # the longest period a view asks for; older kept days and changes are pruned


@dataclass(frozen=True)
class GrowthDay:
    day: dt.date
    joined: int  # people whose subscription was confirmed that day (UTC), on any list
    left: int  # people who unsubscribed that day

    @property
    def net(self) -> int:
        return self.joined - self.left


def subscriber_growth(session: Session, days: int, today: dt.date | None = None) -> list[GrowthDay]:
    """Joined and left per UTC day over the last `days` days (today included), every day present.

    A person counts once a day however many lists they joined or left."""
    today = today or utcnow().date()
    first = today - dt.timedelta(days=days - 1)
    window = [first + dt.timedelta(days=n) for n in range(days)]
    if not is_postgres(session):
        return scan(session, first, today)
    kept = _fresh_days(session, first, today)
    stale = [day for day in window if day not in kept]
    for first_stale, last_stale in _runs(stale):  # usually today alone; a first 90-day view after 30-day
        kept.update(_count_and_keep(session, first_stale, last_stale))  # ones: also the 60 days before them
    return [kept[day] for day in window]


def _runs(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as (first, last) spans: each is counted by one statement over its span only."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if runs and runs[-1][1] + dt.timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def scan(session: Session, first: dt.date, last: dt.date) -> list[GrowthDay]:
    """The same numbers from the subscriptions themselves (two GROUP BYs): the check the kept days are
    tested against, and the count on SQLite."""
    since = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    joined = _per_day(session, Subscription.confirmed_at, since)
    left = _per_day(session, Subscription.unsubscribed_at, since)
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [GrowthDay(day, joined.get(day, 0), left.get(day, 0)) for day in days]


def _per_day(session: Session, column: Any, since: dt.datetime) -> dict[dt.date, int]:
    # SQLite stores UTC text: date() reads its first ten characters
    day = func.date(func.timezone("UTC", column)) if is_postgres(session) else func.date(column)
    rows = session.execute(
        select(day, func.count(func.distinct(Subscription.subscriber_id))).where(column >= since).group_by(day)
    )
    counted = {}
    for value, count in rows:
        counted[value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))] = int(count)
    return counted


# The kept days between two dates whose snapshot saw every change visible to this statement.
_FRESH = text("""
SELECT g.day, g.joined, g.unsubscribed FROM growth_days g
WHERE g.day BETWEEN :first AND :last AND NOT EXISTS (
    SELECT 1 FROM growth_changes c
    WHERE c.day = g.day AND NOT pg_visible_in_snapshot(c.xid::text::xid8, g.snapshot::pg_snapshot))
""")

# One statement, so one snapshot: count the days from :first to :last, keep them with that snapshot, and
# return them. Another view keeping the same day at once waits for that view's commit, never for a writer.
_COUNT_AND_KEEP = text("""
WITH joined AS (
    SELECT (confirmed_at AT TIME ZONE 'UTC')::date AS day, count(DISTINCT subscriber_id) AS n
    FROM subscriptions WHERE confirmed_at >= :since AND confirmed_at < :until GROUP BY 1
), unsubscribed AS (
    SELECT (unsubscribed_at AT TIME ZONE 'UTC')::date AS day, count(DISTINCT subscriber_id) AS n
    FROM subscriptions WHERE unsubscribed_at >= :since AND unsubscribed_at < :until GROUP BY 1
), counted AS (
    SELECT d.day::date AS day, coalesce(j.n, 0) AS joined, coalesce(u.n, 0) AS unsubscribed
    FROM generate_series(CAST(:first AS date), CAST(:last AS date), interval '1 day') d(day)
    LEFT JOIN joined j ON j.day = d.day LEFT JOIN unsubscribed u ON u.day = d.day
), kept AS (
    INSERT INTO growth_days (day, joined, unsubscribed, snapshot, counted_by)
    SELECT day, joined, unsubscribed, pg_current_snapshot()::text, pg_current_xact_id()::text::bigint FROM counted
    ON CONFLICT (day) DO UPDATE SET joined = excluded.joined, unsubscribed = excluded.unsubscribed,
        snapshot = excluded.snapshot, counted_by = excluded.counted_by
)
SELECT day, joined, unsubscribed FROM counted
""")

# The changes a kept day's snapshot saw are of no use any more.
_FORGET_SEEN = text("""
DELETE FROM growth_changes c USING growth_days g
WHERE c.day = g.day AND g.day BETWEEN :first AND :last
    AND pg_visible_in_snapshot(c.xid::text::xid8, g.snapshot::pg_snapshot)
""")


def _fresh_days(session: Session, first: dt.date, last: dt.date) -> dict[dt.date, GrowthDay]:
    rows = session.execute(_FRESH, {"first": first, "last": last})
    return {day: GrowthDay(day, joined, left) for day, joined, left in rows}


def _count_and_keep(session: Session, first: dt.date, last: dt.date) -> dict[dt.date, GrowthDay]:
    since = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    params = {"first": first, "last": last, "since": since, "until": until}
    rows = session.execute(_COUNT_AND_KEEP, params).all()
    session.execute(_FORGET_SEEN, {"first": first, "last": last})
    return {day: GrowthDay(day, joined, left) for day, joined, left in rows}


def prune(session: Session, today: dt.date) -> None:
    """Drop kept days and changes older than any view shows (run by the sweep)."""
    oldest = today - dt.timedelta(days=HORIZON_DAYS)
    session.execute(delete(GrowthChange).where(GrowthChange.day < oldest))
    session.execute(delete(CountedDay).where(CountedDay.day < oldest))
