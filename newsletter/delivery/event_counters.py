"""The per-campaign counters of engagement events (`event_counts`, migration 0014): read them, fold them.

Triggers on `events` and `event_firsts` keep them in the transaction of every change, so they are exact;
`scan` (aggregates over the campaign's events, what every report view did before) is the check they are
tested against. A report reads a few hundred counter rows whatever the campaign's size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, distinct, func, or_, select, text
from sqlalchemy.orm import Session

from newsletter.db import is_postgres
from newsletter.models import Event, EventCount, EventType

HOUR = 3600  # as in migration 0014
SOFT_BOUNCE = "soft_bounce"  # pseudo-kind: bounces whose bounce_class is soft or soft_suppressed
SOFT_SUPPRESSED = "soft_suppressed"  # pseudo-kind: the soft bounces that reached the threshold
KINDS = (*(e.value for e in EventType), SOFT_BOUNCE, SOFT_SUPPRESSED)


@dataclass
class Engagement:
    """A campaign's events: per kind, per hour (opens and clicks), per link; and the deliveries that had
    each kind (`people`) and that clicked each link (`link_people`), exactly."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    people: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    link_clicks: dict[int, int] = field(default_factory=dict)
    link_people: dict[int, int] = field(default_factory=dict)
    hours: dict[tuple[int, str], int] = field(default_factory=dict)  # (Unix hour, open|click) -> events


_ENGAGED = (EventType.open.value, EventType.click.value)


def read(session: Session, campaign_id: int) -> Engagement:
    """Sum the campaign's counter rows (per shard) into its figures."""
    found = Engagement()
    rows = session.execute(
        select(
            EventCount.kind, EventCount.hour, EventCount.link_id, func.sum(EventCount.n), func.sum(EventCount.people)
        )
        .where(EventCount.campaign_id == campaign_id)
        .group_by(EventCount.kind, EventCount.hour, EventCount.link_id)
    )
    for kind, hour, link_id, n, people in rows:
        n, people = int(n), int(people)
        found.events[kind] = found.events.get(kind, 0) + n
        if link_id == 0:
            found.people[kind] = found.people.get(kind, 0) + people
        elif kind == EventType.click.value:
            found.link_clicks[link_id] = found.link_clicks.get(link_id, 0) + n
            found.link_people[link_id] = found.link_people.get(link_id, 0) + people
        if n and kind in _ENGAGED:
            found.hours[(hour, kind)] = found.hours.get((hour, kind), 0) + n
    # rows that sum to nothing (all their events gone) until the sweep drops them
    found.link_clicks = {k: v for k, v in found.link_clicks.items() if v or found.link_people.get(k)}
    found.link_people = {k: v for k, v in found.link_people.items() if k in found.link_clicks}
    found.hours = {k: v for k, v in found.hours.items() if v}
    return found


def figures_of(
    session: Session, campaign_ids: Sequence[int], *, people: Sequence[str] = (), events: Sequence[str] = ()
) -> dict[tuple[int, str], tuple[int, int]]:
    """(campaign, kind) -> (events, deliveries that had the kind) for many campaigns in one query: the
    people of the kinds in `people` (their overall rows only), the events of the kinds in `events` (every
    hour's rows)."""
    overall = and_(EventCount.hour == 0, EventCount.link_id == 0)
    rows = session.execute(
        select(
            EventCount.campaign_id,
            EventCount.kind,
            func.sum(EventCount.n),
            func.sum(EventCount.people).filter(overall),
        )
        .where(
            EventCount.campaign_id.in_(list(campaign_ids)),
            or_(and_(EventCount.kind.in_(list(people)), overall), EventCount.kind.in_(list(events))),
        )
        .group_by(EventCount.campaign_id, EventCount.kind)
    )
    return {(campaign_id, kind): (int(n or 0), int(ppl or 0)) for campaign_id, kind, n, ppl in rows}


def scan(session: Session, campaign_id: int) -> Engagement:
    """The same figures from the campaign's events themselves: the check for the counters (and what a
    report cost before them: a pass over every event of the campaign)."""
    found = Engagement()
    for kind, total, people in session.execute(
        select(Event.type, func.count(), func.count(distinct(Event.delivery_id)))
        .where(Event.campaign_id == campaign_id)
        .group_by(Event.type)
    ):
        found.events[EventType(kind).value] = total
        if kind in _ENGAGED:
            found.people[EventType(kind).value] = people
    for bounce_class, total in session.execute(
        select(Event.bounce_class, func.count())
        .where(Event.campaign_id == campaign_id, Event.type == EventType.bounce, Event.bounce_class.is_not(None))
        .group_by(Event.bounce_class)
    ):
        if bounce_class in ("soft", SOFT_SUPPRESSED):
            found.events[SOFT_BOUNCE] += total
        if bounce_class == SOFT_SUPPRESSED:
            found.events[SOFT_SUPPRESSED] += total
    for link_id, total, people in session.execute(
        select(Event.link_id, func.count(), func.count(distinct(Event.delivery_id)))
        .where(Event.campaign_id == campaign_id, Event.type == EventType.click, Event.link_id.is_not(None))
        .group_by(Event.link_id)
    ):
        if link_id is not None:  # (the query keeps only clicks on a link)
            found.link_clicks[link_id], found.link_people[link_id] = total, people
    for created, kind in session.execute(
        select(Event.created_at, Event.type).where(Event.campaign_id == campaign_id, Event.type.in_(_ENGAGED))
    ):
        key = (int(created.timestamp()) // HOUR, EventType(kind).value)
        found.hours[key] = found.hours.get(key, 0) + 1
    return found


def hour_of(moment: dt.datetime) -> int:
    return int(moment.timestamp()) // HOUR


def hour_start(hour: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(hour * HOUR, dt.UTC)


# PostgreSQL: the rows of connections that are gone move into shard 0 (live connections keep theirs, so
# folding never waits on a tracking hit or a sending worker).
_PG_FOLD = text("""
WITH gone AS (
    DELETE FROM event_counts
    WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
    RETURNING campaign_id, kind, hour, link_id, n, people
)
INSERT INTO event_counts AS ec (campaign_id, kind, hour, link_id, shard, n, people)
SELECT campaign_id, kind, hour, link_id, 0, sum(n), sum(people) FROM gone GROUP BY 1, 2, 3, 4
ON CONFLICT (campaign_id, kind, hour, link_id, shard)
    DO UPDATE SET n = ec.n + excluded.n, people = ec.people + excluded.people
""")


def compact(session: Session) -> None:
    """Fold counter rows no writer will touch again into shard 0 and drop empty ones (run by the sweep)."""
    if is_postgres(session):
        session.execute(_PG_FOLD)
    session.execute(text("DELETE FROM event_counts WHERE shard = 0 AND n = 0 AND people = 0"))
