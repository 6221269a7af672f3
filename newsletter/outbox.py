"""The outbox: events written in the caller's transaction, so a webhook is sent for every committed change
and for no rolled-back one. The dispatcher (newsletter/webhooks.py) reads them after commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Text,
    bindparam,
    cast,
    delete,
    event,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from newsletter.db import is_postgres, utcnow
from newsletter.errors import NewsletterError
from newsletter.models import (
    Campaign,
    MailingList,
    OutboxEvent,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    WebhookEndpoint,
)

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
    "campaign.cancelled",
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


def subscriber_ref(subscriber: Subscriber) -> dict[str, Any]:
    return {"id": subscriber.id, "email": subscriber.email, "name": subscriber.name}


def list_ref(mailing_list: MailingList) -> dict[str, Any]:
    return {"id": mailing_list.id, "slug": mailing_list.slug, "name": mailing_list.name}


def emit_subscription(session: Session, type_: str, subscription: Subscription, **extra: Any) -> OutboxEvent:
    """A subscriber.* event about one subscription: who, which list, its status and how they joined."""
    payload = {
        "subscriber": subscriber_ref(subscription.subscriber),
        "list": list_ref(subscription.mailing_list),
        "status": subscription.status.value,
        "joined_via": subscription.source.value,
        **extra,
    }
    return emit(session, type_, payload)


def emit_bounce(
    session: Session, email: str, ids: tuple[int, int, int, int], *, hard: bool, suppressed: bool, detail: str
) -> OutboxEvent:
    """subscriber.bounced: a message to them bounced, hard (the address is gone) or soft. `ids`: the
    subscriber's, the list's, the campaign's and the delivery's."""
    return emit(session, "subscriber.bounced", report_payload(email, ids, suppressed, detail, bounce=hard))


def report_payload(
    email: str | None, ids: tuple[int, int, int, int], suppressed: bool, detail: str, *, bounce: bool | None = None
) -> dict[str, Any]:
    """What subscriber.bounced (`bounce`: hard True, soft False) and subscriber.complained (`bounce` None)
    say about the report, the recipient and their delivery (`ids` as for `emit_bounce`)."""
    subscriber_id, list_id, campaign_id, delivery_id = ids
    payload = {
        "subscriber": {"id": subscriber_id, "email": email},
        "list": {"id": list_id},
        "campaign": {"id": campaign_id},
        "delivery_id": delivery_id,
        **({"bounce": "hard" if bounce else "soft"} if bounce is not None else {}),
        "suppressed": suppressed,
        "detail": detail[:500],
    }
    return payload


def emit_campaign(session: Session, type_: str, campaign_id: int, **extra: Any) -> OutboxEvent:
    """A campaign.* event: its id, subject, status and recipients now (a read of one row)."""
    row = session.execute(
        select(
            Campaign.subject, Campaign.status, Campaign.recipient_count, Campaign.started_at, Campaign.finished_at
        ).where(Campaign.id == campaign_id)
    ).one()
    subject, status, recipients, started_at, finished_at = row
    campaign = {
        "id": campaign_id,
        "subject": subject,
        "status": status.value if hasattr(status, "value") else status,
        "recipients": recipients,
        "started_at": started_at.isoformat() if started_at else None,
        "finished_at": finished_at.isoformat() if finished_at else None,
    }
    return emit(session, type_, {"campaign": campaign, **extra})


def unsubscribed_cte(changed_rows: Any, source: str) -> Any:
    """The subscriber.unsubscribed events of the rows an UPDATE ... RETURNING (subscriber_id, list_id,
    source) changed, as an INSERT ... SELECT to add to that statement: the payload of `emit_subscription`,
    built by PostgreSQL (a test compares the two). The one-click unsubscribe stays one statement."""

    def text_(value: str | None) -> Any:
        return cast(literal(value) if value is not None else null(), Text)

    payload = func.jsonb_build_object(
        text_("subscriber"),
        func.jsonb_build_object(
            text_("id"), Subscriber.id, text_("email"), Subscriber.email, text_("name"), Subscriber.name
        ),
        text_("list"),
        func.jsonb_build_object(
            text_("id"), MailingList.id, text_("slug"), MailingList.slug, text_("name"), MailingList.name
        ),
        text_("status"),
        text_(SubscriptionStatus.unsubscribed.value),
        text_("joined_via"),
        changed_rows.c.source,
        text_("source"),
        text_(source),
        text_("reason"),
        text_(None),
    )
    rows = (
        select(text_("subscriber.unsubscribed"), payload, bindparam("now", type_=OutboxEvent.created_at.type))
        .select_from(changed_rows)
        .join(Subscriber, Subscriber.id == changed_rows.c.subscriber_id)
        .join(MailingList, MailingList.id == changed_rows.c.list_id)
    )
    return (
        insert(OutboxEvent).from_select(["type", "payload", "created_at"], rows).returning(OutboxEvent.id).cte("notify")
    )


def emit_imported(session: Session, list_id: int, created_at: dt.datetime, *, confirmed: bool) -> None:
    """subscriber.subscribed (and .confirmed, for a confirmed import) for the subscriptions an import
    added at `created_at`: one INSERT ... SELECT, whatever the file's size."""
    build = func.jsonb_build_object if is_postgres(session) else func.json_object

    def text_(value: str) -> Any:
        return cast(literal(value), Text)

    payload = build(
        text_("subscriber"),
        build(text_("id"), Subscriber.id, text_("email"), Subscriber.email, text_("name"), Subscriber.name),
        text_("list"),
        build(text_("id"), MailingList.id, text_("slug"), MailingList.slug, text_("name"), MailingList.name),
        text_("status"),
        cast(Subscription.status, Text),
        text_("joined_via"),
        cast(Subscription.source, Text),
    )
    # Only the types some enabled endpoint receives: the dispatcher fans an event out to the endpoints
    # enabled when it runs, so an event none receives is dropped there anyway, after a million-row write
    # here and a million-row read there. (An endpoint added in the seconds between the two misses it.)
    receiving = {t for types_ in session.scalars(select(WebhookEndpoint.event_types).where(WebhookEndpoint.enabled))
                 for t in types_}  # fmt: skip
    emitted = ("subscriber.subscribed", "subscriber.confirmed") if confirmed else ("subscriber.subscribed",)
    types = tuple(t for t in emitted if t in receiving)
    if not types:
        return
    # Both types in one statement: the million-row join runs once, not once per type. In subscription order,
    # each subscriber's .subscribed before its .confirmed (the subscriptions come sorted by id: the sort
    # only orders the two kinds of each, never all the rows).
    kinds = union_all(
        *(
            select(literal(position).label("position"), text_(type_).label("type"))
            for position, type_ in enumerate(types)
        )
    ).subquery("kinds")
    rows = (
        select(kinds.c.type, payload, literal(created_at, OutboxEvent.created_at.type))
        .select_from(Subscription)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .join(kinds, true())
        .where(Subscription.list_id == list_id, Subscription.created_at == created_at)
        .order_by(Subscription.id, kinds.c.position)
    )
    result = session.execute(insert(OutboxEvent).from_select(["type", "payload", "created_at"], rows))
    if getattr(result, "rowcount", 0):
        session.info[_EMITTED] = True


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


def wake() -> None:
    """Run the after-commit callbacks now: for events written outside a Session's commit (the one-click
    unsubscribe's single statement on an autocommit connection)."""
    for callback in _after_commit:
        callback()


@event.listens_for(Session, "after_commit")
def _notify(session: Session) -> None:
    if session.info.pop(_EMITTED, False):
        wake()


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_EMITTED, None)


def forget_subscriber(session: Session, subscriber_id: int) -> int:
    """Erasure: the events about a subscriber go (sent or not), with their delivery log; returns how many."""
    about = OutboxEvent.payload["subscriber"]["id"].as_integer() == subscriber_id
    result = session.execute(delete(OutboxEvent).where(about).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


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


def mark_all_dispatched(session: Session, *, now: dt.datetime | None = None) -> int:
    """Mark every undispatched event dispatched in one statement, loading none (nobody listens to them)."""
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.dispatched_at.is_(None))
        .values(dispatched_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def undispatched_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(OutboxEvent.dispatched_at.is_(None))) or 0
