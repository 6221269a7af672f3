"""Consent: subscribe, confirm, unsubscribe and preferences — the consent record of each subscription."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter import i18n, metrics, outbox, rendering
from newsletter.addresses import check_name, normalise_email
from newsletter.confirmations import claim_confirmation
from newsletter.db import utcnow
from newsletter.errors import Conflict, Invalid, NotFound
from newsletter.lists import get_list
from newsletter.models import (
    Campaign,
    CampaignStatus,
    DigestItem,
    Event,
    EventType,
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionSource,
    SubscriptionStatus,
    Visibility,
    campaign_lists,
    email_domain,
    email_hash,
)
from newsletter.one_click import one_click_unsubscribe as one_click_unsubscribe
from newsletter.one_click import one_click_unsubscribe_async as one_click_unsubscribe_async
from newsletter.suppressions import is_blocked_domain, is_suppressed
from newsletter.text import single_line
from newsletter.tokens import Reading, TokenPurpose, Tokens, UnknownToken


class ListNotSubscribable(NotFound):
    """A private list: people are added by an admin, not through the public form."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"list {slug!r} cannot be subscribed to from the public form")
        self.slug = slug


class LeftTheList(Conflict):
    """An old confirmation link after an unsubscribe: it confirmed a pending subscription, not this one."""

    def __init__(self, subscription: Subscription) -> None:
        super().__init__(f"{subscription.subscriber.email} left {subscription.mailing_list.name}")
        self.subscription = subscription


class InvalidAttribute(Invalid):
    """A value of the subscribe form's extra fields that cannot be stored."""

    field = "attributes"


def get_or_create_subscriber(
    session: Session, address: str, name: str = "", attributes: dict[str, object] | None = None
) -> Subscriber:
    email = normalise_email(address)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if subscriber is None:
        subscriber = Subscriber(
            email=email,
            email_hash=email_hash(email),
            email_domain=email_domain(email),
            name=check_name(name, lenient=True),
            attributes=attributes or {},
        )
        session.add(subscriber)
        session.flush()
    return subscriber


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
    created = subscription is None
    if subscription is None:
        subscription = Subscription(
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            source=source,
            status=SubscriptionStatus.pending,
            consent_ip=ip,
        )
        session.add(subscription)
    confirming = confirmed and subscription.status != SubscriptionStatus.confirmed
    if confirming:
        subscription.status = SubscriptionStatus.confirmed
        subscription.confirmed_at = now
        subscription.consent_at = now
        subscription.consent_ip = ip
        subscription.unsubscribed_at = None
        subscription.unsubscribe_source = None
    session.flush()
    if created:
        outbox.emit_subscription(session, "subscriber.subscribed", subscription)
    if confirming:
        outbox.emit_subscription(session, "subscriber.confirmed", subscription)
    return subscription


@dataclass(frozen=True)
class UnsubscribeResult:
    subscription: Subscription
    changed: bool  # False when they had already left: the answer to the subscriber is the same


def unsubscribe(
    session: Session, tokens: Tokens, *, token: str, source: str, reason: str | None = None
) -> UnsubscribeResult:
    """Honour an unsubscribe link (one-click or page). Takes effect for campaigns already sending."""
    subscription = _subscription(session, tokens.read_bound(TokenPurpose.unsubscribe, token, 2))
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
    outbox.emit_subscription(session, "subscriber.unsubscribed", subscription, source=source, reason=reason)
    metrics.UNSUBSCRIBES.labels(metrics.word(source)).inc()
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


# --- the subscribe form and its confirmation ------------------------------------------------------------

MAX_ATTRIBUTE_LENGTH = 200


@dataclass(frozen=True)
class SubscribeResult:
    """What happened, for the caller only: the person sees the same answer whatever it was."""

    subscription_id: int | None  # None when nothing was recorded (suppressed or blocked address)
    send_confirmation: bool  # the caller enqueues the confirmation email after committing


def get_public_list(session: Session, slug: str) -> MailingList:
    """A list the public form may subscribe to; private lists are as unknown as missing ones."""
    mailing_list = get_list(session, slug)
    if mailing_list.visibility != Visibility.public:
        raise ListNotSubscribable(slug)
    return mailing_list


def form_attributes(mailing_list: MailingList, values: dict[str, str]) -> dict[str, str]:
    """Keep only the extra fields the list asks for, each one line and bounded in length."""
    attributes: dict[str, str] = {}
    for field in mailing_list.form_fields or []:
        key = str(field.get("name", ""))
        value = " ".join(single_line(str(values.get(key, ""))).split())[:MAX_ATTRIBUTE_LENGTH]
        if key and value:
            attributes[key] = value
    return attributes


def subscribe(
    session: Session,
    mailing_list: MailingList,
    address: str,
    *,
    name: str = "",
    attributes: dict[str, str] | None = None,
    ip: str | None = None,
    resend_hours: float = 24,
    now: dt.datetime | None = None,
    language: str | None = None,
) -> SubscribeResult:
    """The public form: a pending subscription plus a confirmation email (double opt-in) or consent now.

    Raises InvalidEmail for a malformed address, InvalidName for a name that cannot be stored (a NUL),
    InvalidAttribute likewise, and nothing else: a suppressed, blocked, pending or
    confirmed address gets the same treatment from the caller's point of view, so the form cannot be used
    to learn who is subscribed. At most one confirmation email per address and list per `resend_hours`.
    """
    email = normalise_email(address)
    # Checked for every address alike, known or not, so that a refusal tells nothing about who is subscribed.
    name = check_name(name, lenient=True)
    language = i18n.check_language(language)
    for key, value in (attributes or {}).items():
        if "\x00" in value:  # PostgreSQL's JSON cannot hold it
            raise InvalidAttribute.translatable(i18n.N_("%(field)s: contains a NUL character"), field=key)
    now = now or utcnow()
    if is_suppressed(session, email) or is_blocked_domain(session, email):
        return SubscribeResult(None, send_confirmation=False)
    subscriber, subscription, created = _get_or_create_subscription(
        session, mailing_list, email, name, attributes or {}, ip
    )
    if language is not None and subscriber.language is None:  # a stranger's form never changes a reader's choice
        subscriber.language = language
    if subscriber.status != SubscriberStatus.active or subscription.status == SubscriptionStatus.confirmed:
        return SubscribeResult(subscription.id, send_confirmation=False)
    if created or subscription.status == SubscriptionStatus.unsubscribed:
        outbox.emit_subscription(session, "subscriber.subscribed", subscription, rejoined=not created)
    if mailing_list.opt_in == OptIn.single:
        add_subscription(session, mailing_list, subscriber, source=SubscriptionSource.form, confirmed=True, ip=ip)
        _record_event(session, EventType.confirm, subscription, detail="single opt-in form")
        return SubscribeResult(subscription.id, send_confirmation=False)
    if subscription.status == SubscriptionStatus.unsubscribed:
        # Joining again after leaving needs a fresh confirmation; until then nothing is sent to them.
        subscription.status = SubscriptionStatus.pending
        subscription.consent_ip = ip
        session.flush()
    claimed = claim_confirmation(session, subscription, resend_hours=resend_hours, now=now)
    return SubscribeResult(subscription.id, send_confirmation=claimed)


def _get_or_create_subscription(
    session: Session, mailing_list: MailingList, email: str, name: str, attributes: dict[str, str], ip: str | None
) -> tuple[Subscriber, Subscription, bool]:
    """The address's subscriber and subscription, made if missing; True when the subscription is new."""
    for attempt in range(2):
        try:
            # A savepoint, so that losing a race against a concurrent request for the same address
            # (the unique constraints) only undoes this step.
            with session.begin_nested():
                subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
                if subscriber is None:
                    # Name and attributes are taken only for a new address: an anonymous form must not
                    # rename somebody else's existing record.
                    subscriber = get_or_create_subscriber(session, email, name, dict[str, object](attributes))
                subscription = session.scalar(
                    select(Subscription).where(
                        Subscription.subscriber_id == subscriber.id, Subscription.list_id == mailing_list.id
                    )
                )
                created = subscription is None
                if subscription is None:
                    subscription = Subscription(
                        subscriber_id=subscriber.id,
                        list_id=mailing_list.id,
                        source=SubscriptionSource.form,
                        status=SubscriptionStatus.pending,
                        consent_ip=ip,
                    )
                    session.add(subscription)
                    session.flush()
            return subscriber, subscription, created
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _record_event(session: Session, kind: EventType, subscription: Subscription, detail: str | None = None) -> None:
    session.add(Event(type=kind, subscriber_id=subscription.subscriber_id, list_id=subscription.list_id, detail=detail))


def confirm(session: Session, tokens: Tokens, *, token: str, ip: str | None = None) -> Subscription:
    """Record consent from a confirmation link; clicking it again changes nothing.

    The link confirms a pending subscription only: after an unsubscribe it raises LeftTheList (leaving
    is the newer wish; coming back is the resubscribe button's business, a POST)."""
    subscription = _subscription(session, tokens.read_bound(TokenPurpose.confirm, token, 2))
    if subscription.status == SubscriptionStatus.confirmed:
        return subscription
    if subscription.status == SubscriptionStatus.unsubscribed:
        raise LeftTheList(subscription)
    form_ip = subscription.consent_ip
    add_subscription(
        session, subscription.mailing_list, subscription.subscriber, source=subscription.source, confirmed=True, ip=ip
    )
    # consent_ip now holds where the link was clicked; the event keeps where the form was sent from.
    _record_event(session, EventType.confirm, subscription, detail=f"form from {form_ip or 'unknown'}")
    session.flush()
    return subscription


def resubscribe(session: Session, tokens: Tokens, *, token: str, ip: str | None = None) -> Subscription:
    """The undo link on the unsubscribe page: back on the list, if they had confirmed before."""
    subscription = _subscription(session, tokens.read_bound(TokenPurpose.unsubscribe, token, 2))
    if subscription.status == SubscriptionStatus.unsubscribed and subscription.confirmed_at is not None:
        add_subscription(
            session,
            subscription.mailing_list,
            subscription.subscriber,
            source=subscription.source,
            confirmed=True,
            ip=ip,
        )
        subscription.reason = None
        _record_event(session, EventType.confirm, subscription, detail="undo on the unsubscribe page")
        session.flush()
    return subscription


def subscription_for_token(session: Session, tokens: Tokens, purpose: TokenPurpose, token: str) -> Subscription:
    """The subscription an unsubscribe or confirmation link points at (UnknownToken if it is gone)."""
    return _subscription(session, tokens.read_bound(purpose, token, 2))


def _subscription(session: Session, reading: Reading) -> Subscription:
    subscriber_id, list_id = reading.ids
    subscription = session.scalar(
        select(Subscription).where(Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id)
    )
    if subscription is None or not _same_row(subscription.subscriber, reading):
        raise UnknownToken("this link is not valid")
    return subscription


def _same_row(subscriber: Subscriber, reading: Reading) -> bool:
    """Whether the token was made for this very subscriber, not for an earlier row with the same id, who
    is still there: an erased or blocklisted subscriber's old links are as unknown as forged ones (erasure
    is final; a link in an old email must not bring anyone back nor show what is left of them)."""
    if subscriber.status == SubscriberStatus.blocklisted:
        return False
    if reading.bound_to is not None:
        return subscriber.created_at == reading.bound_to
    # An unbound link from mail sent before links were bound (see tokens.Reading): a timestamped one must
    # have been signed after this row was created.
    return reading.signed_at is None or subscriber.created_at <= reading.signed_at + _SIGNED_AT_SLACK


# A token's time has whole seconds, and the host that signed it may have had a slightly different clock.
_SIGNED_AT_SLACK = dt.timedelta(minutes=1)


# --- preferences ----------------------------------------------------------------------------------------


@dataclass
class ListChoice:
    mailing_list: MailingList
    subscription: Subscription | None
    sections: list[str]  # digest sections this list has sent, to choose from

    @property
    def subscribed(self) -> bool:
        return self.subscription is not None and self.subscription.status != SubscriptionStatus.unsubscribed

    def wants(self, section: str) -> bool:
        wanted = self.subscription.sections if self.subscription is not None else None
        return wanted is None or section in wanted


@dataclass
class Preferences:
    subscriber: Subscriber
    choices: list[ListChoice]

    @property
    def publication_name(self) -> str:
        for choice in self.choices:
            if choice.subscribed:
                return rendering.theme_for(choice.mailing_list).publication_name
        return rendering.theme_for(self.choices[0].mailing_list).publication_name if self.choices else ""


def preferences(session: Session, tokens: Tokens, *, token: str) -> Preferences:
    """The lists of the subscriber's publication(s) and where they stand on each.

    A publication is the set of lists sending from one domain: the page offers the public lists of every
    domain the subscriber already receives from, plus any private list they are on (to leave it).
    """
    reading = tokens.read_bound(TokenPurpose.preferences, token, 1)
    subscriber = session.get(Subscriber, reading.ids[0])
    if subscriber is None or not _same_row(subscriber, reading):
        raise UnknownToken("this link is not valid")
    own = {s.list_id: s for s in _subscriptions_of(session, subscriber.id)}
    domains = {s.mailing_list.from_email.rpartition("@")[2] for s in own.values()}
    candidates = session.scalars(select(MailingList).order_by(MailingList.name, MailingList.id)).all()
    choices = []
    for mailing_list in candidates:
        mine = own.get(mailing_list.id)
        same_publication = mailing_list.from_email.rpartition("@")[2] in domains
        if mine is not None or (same_publication and mailing_list.visibility == Visibility.public):
            choices.append(ListChoice(mailing_list, mine, list_sections(session, mailing_list.id)))
    return Preferences(subscriber, choices)


def _subscriptions_of(session: Session, subscriber_id: int) -> list[Subscription]:
    # A query, not `subscriber.subscriptions`: that collection may have been loaded before a change.
    return list(session.scalars(select(Subscription).where(Subscription.subscriber_id == subscriber_id)))


def list_sections(session: Session, list_id: int, recent: int = 10) -> list[str]:
    """The digest sections of the list's recent campaigns, in order of first appearance."""
    recent_digests = (
        select(Campaign.digest_id)
        .join(campaign_lists, campaign_lists.c.campaign_id == Campaign.id)
        .where(campaign_lists.c.list_id == list_id, Campaign.status != CampaignStatus.cancelled)
        .order_by(Campaign.id.desc())
        .limit(recent)
    )
    rows = session.execute(
        select(DigestItem.section, func.min(DigestItem.id))
        .where(DigestItem.digest_id.in_(recent_digests.scalar_subquery()), DigestItem.section.is_not(None))
        .group_by(DigestItem.section)
        .order_by(func.min(DigestItem.id))
    )
    return [section for section, _ in rows if section]


def update_preferences(
    session: Session,
    tokens: Tokens,
    *,
    token: str,
    name: str | None,
    lists: Iterable[int],
    sections: dict[int, list[str]],
    ip: str | None = None,
    language: str | None = None,
) -> Preferences:
    """Join the checked lists, leave the others, store the wanted sections (None = all), the name and the
    language (None: unchanged; blank: none, follow the list's).

    The token came in an email to this address, so joining here needs no second confirmation.
    """
    current = preferences(session, tokens, token=token)
    wanted = set(lists)
    subscriber = current.subscriber
    if name is not None:
        subscriber.name = check_name(name, lenient=True)
    if language is not None:
        subscriber.language = i18n.check_language(language)
    for choice in current.choices:
        if choice.mailing_list.id in wanted and not choice.subscribed:
            choice.subscription = add_subscription(
                session, choice.mailing_list, subscriber, source=SubscriptionSource.form, confirmed=True, ip=ip
            )
            _record_event(session, EventType.confirm, choice.subscription, detail="preferences page")
        elif choice.mailing_list.id not in wanted and choice.subscribed and choice.subscription is not None:
            unsubscribe_subscription(session, choice.subscription, source="preferences")
        if choice.subscription is not None and choice.sections:
            chosen = [s for s in choice.sections if s in set(sections.get(choice.mailing_list.id, []))]
            choice.subscription.sections = None if len(chosen) == len(choice.sections) else chosen
    session.flush()
    return current


def unsubscribe_everything(session: Session, tokens: Tokens, *, token: str) -> int:
    """ "Unsubscribe from everything" on the preferences page: every list, this publication or not."""
    current = preferences(session, tokens, token=token)
    changed = 0
    for subscription in _subscriptions_of(session, current.subscriber.id):
        changed += unsubscribe_subscription(session, subscription, source="preferences").changed
    return changed
