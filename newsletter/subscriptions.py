"""Consent: subscribe, confirm, unsubscribe and preferences, the signed tokens that carry them, suppression."""

from __future__ import annotations

import datetime as dt
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email
from itsdangerous import BadSignature, Signer
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.models import (
    Event,
    EventType,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionSource,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    email_hash,
)


class InvalidEmail(ValueError):
    """The address cannot receive mail; the message says why."""


class UnknownToken(LookupError):
    """A token that is forged, for another purpose, or for something that no longer exists."""


class ListNotFound(LookupError):
    def __init__(self, slug: str) -> None:
        super().__init__(f"no list with slug {slug!r}")
        self.slug = slug


class TokenPurpose(StrEnum):
    confirm = "confirm"
    unsubscribe = "unsubscribe"
    preferences = "preferences"
    track = "track"


class Tokens:
    """Opaque, purpose-bound signed tokens: ids packed in base64, an HMAC per purpose.

    Unsubscribe links must keep working in old emails, so tokens carry no expiry; the purpose is the
    itsdangerous salt, so an unsubscribe token can never confirm. Signers are built once because
    the delivery path signs several tokens per recipient.
    """

    def __init__(self, secret_key: str) -> None:
        self._signers = {purpose: Signer(secret_key, salt=f"newsletter.{purpose}") for purpose in TokenPurpose}

    def make(self, purpose: TokenPurpose, *ids: int) -> str:
        payload = b".".join(b"%x" % i for i in ids)
        packed = urlsafe_b64encode(payload).rstrip(b"=")
        return self._signers[purpose].sign(packed).decode("ascii")

    def read(self, purpose: TokenPurpose, token: str, count: int) -> tuple[int, ...]:
        try:
            packed = self._signers[purpose].unsign(token.encode("ascii"))  # compares in constant time
            payload = urlsafe_b64decode(packed + b"=" * (-len(packed) % 4))
            ids = tuple(int(part, 16) for part in payload.split(b"."))
        except (BadSignature, ValueError, UnicodeEncodeError):
            raise UnknownToken("this link is not valid") from None
        if len(ids) != count:
            raise UnknownToken("this link is not valid")
        return ids


def normalise_email(address: str) -> str:
    """Validate the syntax (no DNS: this runs at import speed) and return the normalised form."""
    if any(ch in address for ch in "\r\n"):
        raise InvalidEmail("an email address cannot contain line breaks")
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    # Domains are case-insensitive; local parts technically are not, but every real provider treats them so.
    return result.normalized.lower()


def get_list(session: Session, slug: str) -> MailingList:
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None:
        raise ListNotFound(slug)
    return mailing_list


def is_suppressed(session: Session, address: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(address))) is not None


def suppress(
    session: Session, address: str, reason: SuppressionReason, detail: str | None = None, keep_address: bool = True
) -> Suppression:
    """Add an address to the never-mail list (idempotent: the first reason is kept)."""
    key = email_hash(address)
    existing = session.scalar(select(Suppression).where(Suppression.email_hash == key))
    if existing is not None:
        return existing
    suppression = Suppression(email_hash=key, email=address if keep_address else None, reason=reason, detail=detail)
    session.add(suppression)
    session.flush()
    return suppression


def get_or_create_subscriber(
    session: Session, address: str, name: str = "", attributes: dict[str, object] | None = None
) -> Subscriber:
    email = normalise_email(address)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if subscriber is None:
        subscriber = Subscriber(
            email=email, email_hash=email_hash(email), name=_clean_name(name), attributes=attributes or {}
        )
        session.add(subscriber)
        session.flush()
    return subscriber


def _clean_name(name: str) -> str:
    # A name ends up in the To header: never let it carry a line break.
    return " ".join(name.split())[:255]


def add_subscription(
    session: Session,
    mailing_list: MailingList,
    subscriber: Subscriber,
    *,
    source: SubscriptionSource,
    confirmed: bool,
    ip: str | None = None,
) -> Subscription:
    """Subscribe (or re-subscribe) someone; confirmed=True records consent now."""
    subscription = session.scalar(
        select(Subscription).where(Subscription.subscriber_id == subscriber.id, Subscription.list_id == mailing_list.id)
    )
    now = utcnow()
    if subscription is None:
        subscription = Subscription(
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            source=source,
            status=SubscriptionStatus.pending,
            consent_ip=ip,
        )
        session.add(subscription)
    if confirmed and subscription.status != SubscriptionStatus.confirmed:
        subscription.status = SubscriptionStatus.confirmed
        subscription.confirmed_at = now
        subscription.consent_at = now
        subscription.consent_ip = ip
        subscription.unsubscribed_at = None
        subscription.unsubscribe_source = None
    session.flush()
    return subscription


@dataclass(frozen=True)
class UnsubscribeResult:
    subscription: Subscription
    changed: bool  # False when they had already left: the answer to the subscriber is the same


def unsubscribe(
    session: Session, tokens: Tokens, *, token: str, source: str, reason: str | None = None
) -> UnsubscribeResult:
    """Honour an unsubscribe link (one-click or page). Takes effect for campaigns already sending."""
    subscriber_id, list_id = tokens.read(TokenPurpose.unsubscribe, token, 2)
    subscription = session.scalar(
        select(Subscription).where(Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id)
    )
    if subscription is None:
        raise UnknownToken("this link is not valid")
    return unsubscribe_subscription(session, subscription, source=source, reason=reason)


def unsubscribe_subscription(
    session: Session, subscription: Subscription, *, source: str, reason: str | None = None
) -> UnsubscribeResult:
    if subscription.status == SubscriptionStatus.unsubscribed:
        return UnsubscribeResult(subscription, changed=False)
    subscription.status = SubscriptionStatus.unsubscribed
    subscription.unsubscribed_at = utcnow()
    subscription.unsubscribe_source = source
    subscription.reason = reason
    session.add(
        Event(
            type=EventType.unsubscribe,
            subscriber_id=subscription.subscriber_id,
            list_id=subscription.list_id,
            detail=source,
        )
    )
    session.flush()
    return UnsubscribeResult(subscription, changed=True)


def unsubscribe_address(
    session: Session, address: str, *, list_slugs: Iterable[str] = (), source: str = "admin"
) -> int:
    """Admin unsubscribe by address, from the given lists or all of them; returns how many changed."""
    email = normalise_email(address)
    query = (
        select(Subscription)
        .join(Subscriber)
        .where(Subscriber.email == email, Subscription.status != SubscriptionStatus.unsubscribed)
    )
    slugs = list(list_slugs)
    if slugs:
        lists = [get_list(session, slug) for slug in slugs]
        query = query.where(Subscription.list_id.in_([m.id for m in lists]))
    changed = 0
    for subscription in session.scalars(query):
        changed += unsubscribe_subscription(session, subscription, source=source).changed
    return changed


def unsubscribe_url(base_url: str, tokens: Tokens, subscriber_id: int, list_id: int) -> str:
    return f"{base_url}/unsubscribe/{tokens.make(TokenPurpose.unsubscribe, subscriber_id, list_id)}"


def preferences_url(base_url: str, tokens: Tokens, subscriber_id: int) -> str:
    return f"{base_url}/preferences/{tokens.make(TokenPurpose.preferences, subscriber_id)}"


def blocklist(session: Session, subscriber: Subscriber) -> None:
    subscriber.status = SubscriberStatus.blocklisted
    session.flush()


def consent_window_open(subscription: Subscription, hours: float, now: dt.datetime | None = None) -> bool:
    """At most one confirmation email per address per list per window, so forms cannot be used to spam."""
    if subscription.confirmation_sent_at is None:
        return True
    return (now or utcnow()) - subscription.confirmation_sent_at >= dt.timedelta(hours=hours)
