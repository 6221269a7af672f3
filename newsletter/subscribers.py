"""Subscriber administration: add, find and page through, change, block, unsubscribe and delete."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, distinct, exists, false, func, select, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from newsletter import addresses, i18n, lists, subscriptions, suppressions
from newsletter.confirmations import claim_confirmation
from newsletter.db import is_postgres, utcnow
from newsletter.errors import Invalid, NotFound
from newsletter.models import (
    Campaign,
    Delivery,
    Event,
    EventType,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionSource,
    SubscriptionStatus,
    email_domain,
)
from newsletter.text import single_line

MAX_PAGE = 1000
MAX_ATTRIBUTE_LENGTH = 1000
MAX_ATTRIBUTE_NAME_LENGTH = 100


class SubscriberNotFound(NotFound):
    def __init__(self, key: int | str) -> None:
        super().__init__(f"no subscriber {key}" if isinstance(key, int) else f"no subscriber with address {key!r}")


class InvalidSubscriber(Invalid):
    """A change to a subscriber that cannot be stored; the message names the field."""


def check_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes are a flat JSON object of short scalar values (they are substituted into emails)."""
    clean: dict[str, Any] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_ATTRIBUTE_NAME_LENGTH:
            raise InvalidSubscriber(f"attribute name {key!r}: must be 1 to {MAX_ATTRIBUTE_NAME_LENGTH} characters")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidSubscriber(f"attribute {key!r}: only strings, numbers and booleans are allowed")
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_LENGTH:
            raise InvalidSubscriber(f"attribute {key!r}: longer than {MAX_ATTRIBUTE_LENGTH} characters")
        # PostgreSQL's JSON cannot hold a NUL character: refused here, not by the database as a 500.
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise InvalidSubscriber(f"attribute {key!r}: contains a NUL character")
        clean[single_line(key).strip()] = single_line(value) if isinstance(value, str) else value
    return clean


def check_name(name: str) -> str:
    return addresses.check_name(name)


def get_subscriber(session: Session, key: int | str) -> Subscriber:
    """By id, or by address (normalised the way it was stored)."""
    if isinstance(key, int):
        subscriber = session.get(Subscriber, key)
    else:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == addresses.normalise_email(key)))
    if subscriber is None:
        raise SubscriberNotFound(key)
    return subscriber


@dataclass(frozen=True)
class Added:
    subscriber: Subscriber
    # Pending subscriptions whose confirmation email the caller sends once this is committed (the same
    # rate-limited task as the subscribe form's), claimed so that a second add within the window sends none.
    confirmations: list[int]


def add(
    session: Session,
    email: str,
    *,
    name: str = "",
    attributes: Mapping[str, Any] | None = None,
    list_slugs: Sequence[str] = (),
    confirmed: bool = False,
    source: SubscriptionSource = SubscriptionSource.api,
    resend_hours: float = 24,
    send_confirmations: bool = True,
    language: str | None = None,
) -> Added:
    """Add someone (or find them) and subscribe them to the given lists; suppressed addresses are refused.

    Without `confirmed` a new subscription stays pending, whatever the list's opt-in mode (an address an
    admin types carries no proof of consent, as with imports), and its confirmation email is returned to
    send. Someone who unsubscribed from a list stays unsubscribed.
    """
    normalised = addresses.normalise_email(email)
    if suppressions.is_suppressed(session, normalised):
        raise InvalidSubscriber(f"{email} is on the suppression list and cannot be subscribed")
    if suppressions.is_blocked_domain(session, normalised):
        raise InvalidSubscriber(f"addresses at {email_domain(normalised)} are blocked and cannot be subscribed")
    clean_name = check_name(name) if name else ""
    clean_attributes = check_attributes(attributes) if attributes else {}
    clean_language = i18n.check_language(language)
    targets = [lists.get_list(session, slug) for slug in dict.fromkeys(list_slugs)]
    subscriber = subscriptions.get_or_create_subscriber(session, email)
    if clean_language:
        subscriber.language = clean_language
    if clean_name:
        subscriber.name = clean_name
    if clean_attributes:
        subscriber.attributes = {**subscriber.attributes, **clean_attributes}
    confirmations = []
    for mailing_list in targets:
        subscription = subscriptions.add_subscription(
            session, mailing_list, subscriber, source=source, confirmed=confirmed
        )
        if (
            subscription.status == SubscriptionStatus.pending
            and subscriber.status == SubscriberStatus.active
            and send_confirmations
            and claim_confirmation(session, subscription, resend_hours=resend_hours)
        ):
            confirmations.append(subscription.id)
    session.flush()
    return Added(subscriber, confirmations)


def add_subscriber(
    session: Session,
    email: str,
    *,
    name: str = "",
    attributes: Mapping[str, Any] | None = None,
    list_slugs: Sequence[str] = (),
    confirmed: bool = False,
    source: SubscriptionSource = SubscriptionSource.api,
) -> Subscriber:
    """`add` for callers that do not send confirmations yet (the CLI): nothing is claimed, so a pending
    subscription keeps `confirmation_sent_at` empty and the next confirmation run of its list sends it."""
    return add(
        session,
        email,
        name=name,
        attributes=attributes,
        list_slugs=list_slugs,
        confirmed=confirmed,
        source=source,
        send_confirmations=False,
    ).subscriber


@dataclass(frozen=True)
class Search:
    """Filters combine with AND; `attribute` is (name, value) compared as text."""

    email: str | None = None
    status: SubscriberStatus | None = None
    list_slug: str | None = None
    subscription_status: SubscriptionStatus | None = None
    attribute: tuple[str, str] | None = None
    email_prefix: str | None = None  # the start of the address: an index range scan on any number of rows
    name: str | None = None  # the start of the name, case-insensitive


@dataclass
class Page:
    items: list[Subscriber]
    next_cursor: int | None
    subscriptions: dict[int, list[tuple[str, Subscription]]] = field(default_factory=dict)


def search_query(session: Session, search: Search) -> Select[Any]:
    query = select(Subscriber)
    if "\x00" in (search.email or "") + (search.email_prefix or "") + (search.name or "") + "".join(
        search.attribute or ()
    ):
        # No stored text holds a NUL (PostgreSQL refuses it): nothing matches, and the database is not asked
        return query.where(false())
    if search.email:
        # Addresses are stored lower-case, so a lower-cased LIKE is case-insensitive on every backend.
        pattern = search.email.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Subscriber.email.like(f"%{pattern}%", escape="\\"))
    if search.email_prefix:
        query = query.where(Subscriber.email.like(_like_prefix(search.email_prefix.strip().lower()), escape="\\"))
    if search.name:
        query = query.where(func.lower(Subscriber.name).like(_like_prefix(search.name.strip().lower()), escape="\\"))
    if search.status:
        query = query.where(Subscriber.status == search.status)
    if search.list_slug or search.subscription_status:
        conditions = [Subscription.subscriber_id == Subscriber.id]
        if search.list_slug:
            conditions.append(Subscription.list_id == lists.get_list(session, search.list_slug).id)
        if search.subscription_status:
            conditions.append(Subscription.status == search.subscription_status)
        query = query.where(exists().where(*conditions))
    if search.attribute:
        name, value = search.attribute
        if is_postgres(session):  # containment is what the GIN index on attributes serves
            query = query.where(type_coerce(Subscriber.attributes, postgresql.JSONB).contains({name: value}))
        else:
            query = query.where(Subscriber.attributes[name].as_string() == value)
    return query


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_page(session: Session, search: Search, *, after: int | None = None, limit: int = 100) -> Page:
    """One page ordered by id: the cursor is the last id seen, so inserts never shift or repeat rows."""
    limit = max(1, min(limit, MAX_PAGE))
    query = search_query(session, search).order_by(Subscriber.id).limit(limit + 1)
    if after is not None:
        query = query.where(Subscriber.id > after)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    items = rows[:limit]
    page = Page(items=items, next_cursor=items[-1].id if more else None)
    if items:
        for slug, subscription in session.execute(
            select(MailingList.slug, Subscription)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscription.subscriber_id.in_([s.id for s in items]))
            .order_by(MailingList.slug)
        ):
            page.subscriptions.setdefault(subscription.subscriber_id, []).append((slug, subscription))
    return page


def subscriptions_of(session: Session, subscriber: Subscriber) -> list[tuple[str, Subscription]]:
    return list(
        session.execute(
            select(MailingList.slug, Subscription)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscription.subscriber_id == subscriber.id)
            .order_by(MailingList.slug)
        )
    )


def update_subscriber(
    session: Session,
    subscriber: Subscriber,
    *,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    replace_attributes: bool = False,
    language: str | None = None,
) -> Subscriber:
    """Change the name and attributes (merged into the stored ones unless replace_attributes; null deletes)."""
    if name is not None:
        subscriber.name = check_name(name)
    if language is not None:  # blank clears it
        subscriber.language = i18n.check_language(language)
    if attributes is not None:
        clean = check_attributes(attributes)
        merged = {} if replace_attributes else dict(subscriber.attributes)
        merged.update(clean)
        subscriber.attributes = {k: v for k, v in merged.items() if v is not None}
    session.flush()
    return subscriber


def set_blocked(session: Session, subscriber: Subscriber, blocked: bool) -> Subscriber:
    """A blocklisted subscriber keeps their subscriptions but is never mailed."""
    subscriber.status = SubscriberStatus.blocklisted if blocked else SubscriberStatus.active
    session.flush()
    return subscriber


def unsubscribe(session: Session, subscriber: Subscriber, list_slugs: Sequence[str] = ()) -> int:
    return subscriptions.unsubscribe_address(session, subscriber.email, list_slugs=list_slugs, source="admin")


def delete_subscriber(session: Session, subscriber: Subscriber) -> None:
    """Delete the row, its subscriptions and its ledger rows; use gdpr.erase to keep statistics intact."""
    session.delete(subscriber)
    session.flush()


@dataclass(frozen=True)
class Activity:
    """One line of a subscriber's timeline: a delivery of a campaign or an event (open, click, bounce, ...)."""

    at: dt.datetime
    kind: str
    campaign_id: int | None
    subject: str | None
    detail: str | None


def activity(session: Session, subscriber: Subscriber, *, limit: int = 100) -> list[Activity]:
    """The most recent deliveries and events of a subscriber, newest first."""
    deliveries = session.execute(
        select(Delivery.status, Delivery.sent_at, Delivery.created_at, Delivery.campaign_id, Campaign.subject,
               Delivery.smtp_code)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )  # fmt: skip
    events = session.execute(
        select(Event.type, Event.created_at, Event.campaign_id, Campaign.subject, Event.url, Event.detail)
        .outerjoin(Campaign, Campaign.id == Event.campaign_id)
        .where(Event.subscriber_id == subscriber.id)
        .order_by(Event.id.desc())
        .limit(limit)
    )
    lines = [
        Activity(sent_at or created_at, f"delivery {status.value}", campaign_id, subject,
                 f"SMTP {code}" if code else None)
        for status, sent_at, created_at, campaign_id, subject, code in deliveries
    ]  # fmt: skip
    lines += [
        Activity(created_at, kind.value, campaign_id, subject, url or detail)
        for kind, created_at, campaign_id, subject, url, detail in events
    ]
    return sorted(lines, key=lambda line: line.at, reverse=True)[:limit]


def bounce_count(session: Session, subscriber: Subscriber, *, days: float) -> int:
    """Deliveries that bounced within `days` (as the soft-bounce rule counts them)."""
    since = utcnow() - dt.timedelta(days=days)
    query = select(func.count(distinct(Event.delivery_id))).where(
        Event.subscriber_id == subscriber.id, Event.type == EventType.bounce, Event.created_at >= since
    )
    return session.scalar(query) or 0
