"""The outbox: events written in the caller's transaction, so a webhook is sent for every committed change
and for no rolled-back one. The dispatcher (newsletter/webhooks.py) reads them after commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import event, func, insert, select, update
from sqlalchemy.orm import Session

from newsletter.db import is_postgres, utcnow
from newsletter.errors import NewsletterError
from newsletter.models import OutboxEvent

# What an endpoint can subscribe to (Standard Webhooks style `noun.verb` names).
EVENT_TYPES = (
    "subscriber.subscribed",
    "subscriber.confirmed",
    "subscriber.unsubscribed",
    "subscriber.bounced",
    "subscriber.complained",
    "campaign.started",
    "campaign.finished",
    "campaign.paused",
    "sequence.step_sent",
)

_EMITTED = "newsletter.outbox.emitted"
_after_commit: list[Callable[[], None]] = []


class UnknownEventType(NewsletterError):
    """An event type that is not one of EVENT_TYPES."""


def check_type(type_: str) -> str:
    if type_ not in EVENT_TYPES:
        raise UnknownEventType(f"unknown event type {type_!r}; known types: {', '.join(EVENT_TYPES)}")
    return type_


def emit(session: Session, type_: str, payload: Mapping[str, Any]) -> OutboxEvent:
    """Add an event to the caller's unit of work; it is sent only if that unit commits."""
    row = OutboxEvent(type=check_type(type_), payload=dict(payload), created_at=utcnow())
    session.add(row)
    session.info[_EMITTED] = True
    return row


def emit_many(session: Session, type_: str, payloads: Iterable[Mapping[str, Any]]) -> int:
    """Many events of one type in one INSERT (the delivery pipeline's bounces: one statement per group)."""
    now = utcnow()
    rows = [{"type": check_type(type_), "payload": dict(payload), "created_at": now} for payload in payloads]
    if rows:
        session.execute(insert(OutboxEvent), rows)
        session.info[_EMITTED] = True
    return len(rows)


def notify_on_commit(session: Session) -> None:
    """Wake the dispatcher when this unit of work commits (a redelivery, an endpoint enabled again)."""
    session.info[_EMITTED] = True


def on_commit(callback: Callable[[], None]) -> None:
    """Run `callback` after each commit of a session that emitted events (the worker enqueues a dispatch).

    Without one, or if it is lost, the periodic sweep dispatches what is left."""
    if callback not in _after_commit:
        _after_commit.append(callback)


@event.listens_for(Session, "after_commit")
def _notify(session: Session) -> None:
    if session.info.pop(_EMITTED, False):
        for callback in _after_commit:
            callback()


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_EMITTED, None)


def claim_undispatched(session: Session, *, limit: int, now: dt.datetime | None = None) -> list[OutboxEvent]:
    """The oldest undispatched events, marked dispatched in the caller's transaction (which also fans them
    out). On PostgreSQL concurrent dispatchers skip each other's rows; SQLite has one writer."""
    query = select(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None)).order_by(OutboxEvent.id).limit(limit)
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    events = list(session.scalars(query))
    if events:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([e.id for e in events]))
            .values(dispatched_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
    return events


def undispatched_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(OutboxEvent.dispatched_at.is_(None))) or 0
