"""Consent: tokens, the subscribe/confirm flow, bad addresses, resend limits, unsubscribe and preferences."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import random
import string

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import addresses, confirmations, subscriptions, suppressions
from newsletter.addresses import InvalidEmail
from newsletter.config import Settings
from newsletter.mailer import MemoryMailer, SendResult
from newsletter.models import (
    Event,
    EventType,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from newsletter.tokens import ExpiredToken, TokenPurpose, Tokens, UnknownToken
from tests.conftest import TEST_SECRET
from tests.factories import make_list, make_subscriber, subscription_of

TOKENS = Tokens(TEST_SECRET)

# Each of these must be refused with a message, and leave no row behind.
MALFORMED_ADDRESSES = [
    "",
    " ",
    "plainaddress",
    "no-at-sign.example.com",
    "@example.com",
    "reader@",
    "reader@@example.com",
    "two@signs@example.com",
    "with space@example.com",
    "reader@exa mple.com",
    "reader@example.com\r\nBcc: victim@example.org",
    "reader@example.com\nX-Injected: 1",
    "reader\r@example.com",
    "a" * 65 + "@example.com",  # local part over 64 octets
    "reader@" + "a" * 250 + ".com",  # domain over 253 octets
    "reader@" + ("label" * 13) + ".com",  # a DNS label over 63 octets
    '"quoted local"@example.com',
    '"reader"@example.com',
    "reader.@example.com",  # trailing dot in the local part
    ".reader@example.com",
    "re..ader@example.com",
    "reader@example.com.",  # trailing dot in the domain
    "reader@example..com",
    "reader@-example.com",
    "reader@example",  # no top-level domain
    "reader@[127.0.0.1]",  # address literals are not for newsletters
    "reader@localhost",
    "reader@examp\u0435.com",  # Cyrillic "е" mixed into a Latin label (IDN lookalike)
    "reader@\u0430pple.com",  # Cyrillic "а": the classic apple.com homograph
    "reader\u200b@example.com",  # zero-width space
    "<reader@example.com>",
    "Reader <reader@example.com>",
]


def counts(session: Session) -> dict[str, int]:
    return {
        model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
        for model in (Subscriber, Subscription, Event, Suppression)
    }


# --- tokens ---------------------------------------------------------------------------------------------


def test_tokens_round_trip_and_are_bound_to_their_purpose() -> None:
    token = TOKENS.make(TokenPurpose.unsubscribe, 12, 34)
    assert TOKENS.read(TokenPurpose.unsubscribe, token, 2) == (12, 34)
    for purpose in (TokenPurpose.confirm, TokenPurpose.preferences, TokenPurpose.track):
        with pytest.raises(UnknownToken):
            TOKENS.read(purpose, token, 2)
    with pytest.raises(UnknownToken):
        TOKENS.read(TokenPurpose.unsubscribe, token, 1)  # right signature, wrong shape
    with pytest.raises(UnknownToken):
        Tokens("another-secret-key-0123456789").read(TokenPurpose.unsubscribe, token, 2)


def test_forged_and_tampered_tokens_are_refused() -> None:
    token = TOKENS.make(TokenPurpose.unsubscribe, 1, 1)
    payload, _, signature = token.rpartition(".")
    forged = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        TOKENS.make(TokenPurpose.unsubscribe, 2, 1).rpartition(".")[0] + "." + signature,
        payload,
        "." + signature,
        token + ".",
        token + "x",
        token.upper(),
        "é" + token,
        token + "\x00",
        "",
    ]
    for candidate in forged:
        with pytest.raises(UnknownToken):
            TOKENS.read(TokenPurpose.unsubscribe, candidate, 2)


def test_ten_thousand_random_tokens_are_all_refused() -> None:
    rng = random.Random(5)
    alphabet = string.ascii_letters + string.digits + "-_."
    template = TOKENS.make(TokenPurpose.unsubscribe, 123456, 7)
    accepted = 0
    for index in range(10_000):
        if index % 2:  # random strings of a plausible length
            candidate = "".join(rng.choice(alphabet) for _ in range(len(template)))
        else:  # a real-looking payload with a random signature
            candidate = template.rpartition(".")[0] + "." + "".join(rng.choice(alphabet[:-1]) for _ in range(27))
        for purpose, count in ((TokenPurpose.unsubscribe, 2), (TokenPurpose.track, 1), (TokenPurpose.confirm, 2)):
            try:
                TOKENS.read(purpose, candidate, count)
            except UnknownToken:
                continue
            accepted += 1
    assert accepted == 0


def test_confirm_tokens_expire_after_a_week_but_unsubscribe_tokens_never(monkeypatch: pytest.MonkeyPatch) -> None:
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - 8 * 86400)
    old_confirm = TOKENS.make(TokenPurpose.confirm, 1, 2)
    monkeypatch.undo()
    with pytest.raises(ExpiredToken):
        TOKENS.read(TokenPurpose.confirm, old_confirm, 2)
    fresh = TOKENS.make(TokenPurpose.confirm, 1, 2)
    assert TOKENS.read(TokenPurpose.confirm, fresh, 2) == (1, 2)
    # Unsubscribe tokens carry no timestamp at all: the same bytes work forever.
    assert TOKENS.make(TokenPurpose.unsubscribe, 1, 2) == TOKENS.make(TokenPurpose.unsubscribe, 1, 2)


# --- subscribe ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", MALFORMED_ADDRESSES)
def test_malformed_addresses_are_refused_without_side_effects(session: Session, address: str) -> None:
    mailing_list = make_list(session)
    before = counts(session)
    with pytest.raises(InvalidEmail) as error:
        subscriptions.subscribe(session, mailing_list, address, ip="203.0.113.9")
    assert str(error.value)  # a reason a person can act on
    assert counts(session) == before


def test_addresses_are_normalised(session: Session) -> None:
    assert addresses.normalise_email("  Reader@Example.COM ") == "reader@example.com"
    assert addresses.normalise_email("reader@bücher.example") == "reader@bücher.example"


def test_double_opt_in_subscribe_then_confirm(session: Session, settings: Settings) -> None:
    mailing_list = make_list(session, opt_in=OptIn.double)
    result = subscriptions.subscribe(session, mailing_list, "New.Reader@Example.com", name="Ann", ip="203.0.113.1")
    assert result.send_confirmation
    subscription = session.get(Subscription, result.subscription_id)
    assert subscription is not None
    assert subscription.status == SubscriptionStatus.pending
    assert subscription.subscriber.email == "new.reader@example.com"
    assert subscription.consent_ip == "203.0.113.1"

    mailer = MemoryMailer()
    sent = confirmations.send_confirmation(session, settings, mailer, subscription.id)
    assert sent is not None and sent.ok
    assert len(mailer.sent) == 1
    message = mailer.sent[0].data
    assert b"\r\n" in message and b"Auto-Submitted: auto-generated" in message
    # The decoded text part: a bound token is long enough for quoted-printable to wrap its line.
    text_part = email.message_from_bytes(message, policy=email.policy.default).get_body(("plain",))
    assert text_part is not None
    token = str(text_part.get_content()).split("/confirm/", 1)[1].split()[0]

    confirmed = subscriptions.confirm(session, TOKENS, token=token, ip="198.51.100.7")
    assert confirmed.status == SubscriptionStatus.confirmed
    assert confirmed.consent_ip == "198.51.100.7"
    assert confirmed.consent_at is not None and confirmed.confirmed_at is not None
    first_consent = confirmed.consent_at
    again = subscriptions.confirm(session, TOKENS, token=token, ip="192.0.2.1")  # idempotent
    assert again.consent_at == first_consent and again.consent_ip == "198.51.100.7"
    events = session.scalars(select(Event).where(Event.type == EventType.confirm)).all()
    assert len(events) == 1 and "203.0.113.1" in (events[0].detail or "")


def test_single_opt_in_confirms_at_once(session: Session) -> None:
    mailing_list = make_list(session, opt_in=OptIn.single)
    result = subscriptions.subscribe(session, mailing_list, "now@example.com", ip="203.0.113.2")
    assert not result.send_confirmation
    subscription = session.get(Subscription, result.subscription_id)
    assert subscription is not None and subscription.status == SubscriptionStatus.confirmed
    assert subscription.consent_ip == "203.0.113.2"


def test_at_most_one_confirmation_per_window(session: Session) -> None:
    mailing_list = make_list(session)
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    decisions = [
        subscriptions.subscribe(
            session, mailing_list, "twice@example.com", resend_hours=24, now=now + dt.timedelta(hours=h)
        ).send_confirmation
        for h in (0, 1, 23, 24.5, 25)
    ]
    assert decisions == [True, False, False, True, False]


def test_known_suppressed_and_blocked_addresses_get_nothing(session: Session) -> None:
    mailing_list = make_list(session)
    confirmed = make_subscriber(session, mailing_list, "confirmed@example.com")
    suppressions.suppress(session, "suppressed@example.com", SuppressionReason.complaint)
    blocked = make_subscriber(session, mailing_list, "blocked@example.com", confirmed=False)
    blocked.status = SubscriberStatus.blocklisted
    session.flush()
    before = counts(session)
    for address in ("confirmed@example.com", "suppressed@example.com", "blocked@example.com"):
        assert not subscriptions.subscribe(session, mailing_list, address).send_confirmation
    assert counts(session) == before
    assert subscription_of(session, confirmed, mailing_list).status == SubscriptionStatus.confirmed


def test_form_does_not_rename_an_existing_subscriber(session: Session) -> None:
    mailing_list = make_list(session)
    other = make_list(session)
    make_subscriber(session, other, "victim@example.com", name="Real Name")
    subscriptions.subscribe(session, mailing_list, "victim@example.com", name="Attacker's choice")
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == "victim@example.com"))
    assert subscriber is not None and subscriber.name == "Real Name"


def test_form_attributes_keep_only_the_fields_the_list_asks_for(session: Session) -> None:
    mailing_list = make_list(session)
    mailing_list.form_fields = [{"name": "city", "label": "City"}]
    attributes = subscriptions.form_attributes(mailing_list, {"city": " Almaty\r\nX: y ", "role": "admin"})
    assert attributes == {"city": "Almaty X: y"}


def test_private_lists_are_not_publicly_subscribable(session: Session) -> None:
    mailing_list = make_list(session, visibility="private")
    with pytest.raises(subscriptions.ListNotSubscribable):
        subscriptions.get_public_list(session, mailing_list.slug)


# --- confirm / unsubscribe tokens against the database ----------------------------------------------------


def test_tokens_for_deleted_subscribers_or_other_purposes_change_nothing(session: Session) -> None:
    mailing_list = make_list(session)
    subscriber = make_subscriber(session, mailing_list, confirmed=False)
    confirm_token = TOKENS.make(TokenPurpose.confirm, subscriber.id, mailing_list.id)
    unsubscribe_token = TOKENS.make(TokenPurpose.unsubscribe, subscriber.id, mailing_list.id)
    before = counts(session)
    with pytest.raises(UnknownToken):  # an unsubscribe token cannot confirm
        subscriptions.confirm(session, TOKENS, token=unsubscribe_token)
    with pytest.raises(UnknownToken):  # and a confirm token cannot unsubscribe
        subscriptions.unsubscribe(session, TOKENS, token=confirm_token, source="page")
    assert counts(session) == before
    assert subscription_of(session, subscriber, mailing_list).status == SubscriptionStatus.pending

    session.delete(subscriber)
    session.flush()
    before = counts(session)
    for call in (
        lambda: subscriptions.confirm(session, TOKENS, token=confirm_token),
        lambda: subscriptions.unsubscribe(session, TOKENS, token=unsubscribe_token, source="one-click"),
        lambda: subscriptions.resubscribe(session, TOKENS, token=unsubscribe_token),
        lambda: subscriptions.preferences(session, TOKENS, token=TOKENS.make(TokenPurpose.preferences, subscriber.id)),
    ):
        with pytest.raises(UnknownToken):
            call()
    assert counts(session) == before


def test_unsubscribe_records_source_and_time_and_undo_restores(session: Session) -> None:
    mailing_list = make_list(session)
    subscriber = make_subscriber(session, mailing_list)
    token = TOKENS.make(TokenPurpose.unsubscribe, subscriber.id, mailing_list.id)
    result = subscriptions.unsubscribe(session, TOKENS, token=token, source="page")
    assert result.changed
    subscription = result.subscription
    assert subscription.status == SubscriptionStatus.unsubscribed
    assert subscription.unsubscribe_source == "page" and subscription.unsubscribed_at is not None
    assert not subscriptions.unsubscribe(session, TOKENS, token=token, source="one-click").changed
    assert subscription.unsubscribe_source == "page"  # the first answer is the record
    subscriptions.resubscribe(session, TOKENS, token=token, ip="192.0.2.4")
    assert subscription.status == SubscriptionStatus.confirmed
    assert subscription.unsubscribed_at is None and subscription.consent_ip == "192.0.2.4"


def test_undo_does_not_confirm_someone_who_never_confirmed(session: Session) -> None:
    mailing_list = make_list(session)
    subscriber = make_subscriber(session, mailing_list, confirmed=False)
    token = TOKENS.make(TokenPurpose.unsubscribe, subscriber.id, mailing_list.id)
    subscriptions.unsubscribe(session, TOKENS, token=token, source="page")
    assert subscriptions.resubscribe(session, TOKENS, token=token).status == SubscriptionStatus.unsubscribed


# --- preferences ------------------------------------------------------------------------------------------


def test_preferences_offer_the_publications_public_lists(session: Session) -> None:
    weekly = make_list(session, from_email="news@steppe.example")
    daily = make_list(session, from_email="daily@steppe.example")
    hidden = make_list(session, from_email="staff@steppe.example", visibility="private")
    elsewhere = make_list(session, from_email="news@other.example")
    subscriber = make_subscriber(session, weekly)
    token = TOKENS.make(TokenPurpose.preferences, subscriber.id)
    offered = {c.mailing_list.id for c in subscriptions.preferences(session, TOKENS, token=token).choices}
    assert offered == {weekly.id, daily.id}
    assert hidden.id not in offered and elsewhere.id not in offered

    prefs = subscriptions.update_preferences(
        session, TOKENS, token=token, name=" New\r\nName ", lists=[daily.id], sections={}, ip="192.0.2.5"
    )
    states = {c.mailing_list.id: c.subscribed for c in prefs.choices}
    assert states == {weekly.id: False, daily.id: True}
    assert subscriber.name == "New Name"
    assert subscription_of(session, subscriber, weekly).unsubscribe_source == "preferences"
    assert subscription_of(session, subscriber, daily).status == SubscriptionStatus.confirmed

    assert subscriptions.unsubscribe_everything(session, TOKENS, token=token) == 1
    assert subscription_of(session, subscriber, daily).status == SubscriptionStatus.unsubscribed


def test_imported_pending_subscriptions_get_one_confirmation_each(session: Session, settings: Settings) -> None:
    weekly = make_list(session, slug="weekly")
    pending = [make_subscriber(session, weekly, f"imp{i}@example.com", confirmed=False) for i in range(3)]
    make_subscriber(session, weekly, "already@example.com")  # confirmed: nothing to send
    left = make_subscriber(session, weekly, "bounced@example.com", confirmed=False)
    suppressions.suppress(session, left.email, SuppressionReason.hard_bounce)
    mailer = MemoryMailer({"imp2@example.com": SendResult(451, "4.3.0 try later")})

    claimed = confirmations.claim_unsent_confirmations(session, weekly.id, limit=10)
    assert len(claimed) == 4  # the suppressed one is claimed but never mailed
    results = confirmations.send_confirmations(session, settings, mailer, claimed)
    assert sorted(m.recipient for m in mailer.sent) == ["imp0@example.com", "imp1@example.com"]
    assert all(b"/confirm/" in m.data for m in mailer.sent)
    assert {r.code for r in results.values()} == {250, 451}
    # Nobody is claimed twice; the one whose send failed can be claimed again.
    again = confirmations.claim_unsent_confirmations(session, weekly.id, limit=10)
    assert again == [subscription_of(session, pending[2], weekly).id]


def _rows(session: Session) -> list[tuple[object, ...]]:
    session.expire_all()
    return [
        *session.execute(select(Subscriber.email, Subscriber.name, Subscriber.attributes).order_by(Subscriber.id)),
        *session.execute(
            select(Subscription.subscriber_id, Subscription.status, Subscription.confirmation_sent_at).order_by(
                Subscription.id
            )
        ),
        ("events", session.scalar(select(func.count()).select_from(Event))),
    ]


def test_nul_in_a_subscribe_name_or_attribute_is_refused_and_stores_nothing(session: Session) -> None:
    """Issue 11 item 8: PostgreSQL refuses NUL, which made these a 500; now a validation error, both backends."""
    weekly = make_list(session)
    make_subscriber(session, weekly, "known@example.com")
    before = _rows(session)
    for address in ("new@example.com", "known@example.com"):  # the same answer, known or not: no oracle
        with pytest.raises(addresses.InvalidName, match="NUL"):
            subscriptions.subscribe(session, weekly, address, name="Ana\x00")
        with pytest.raises(subscriptions.InvalidAttribute, match="city: contains a NUL"):
            subscriptions.subscribe(session, weekly, address, attributes={"city": "Alm\x00aty"})
    with pytest.raises(InvalidEmail, match="NUL"):
        subscriptions.subscribe(session, weekly, "ana\x00@example.com")
    assert _rows(session) == before


def test_nul_in_the_preferences_name_is_refused_and_changes_nothing(session: Session) -> None:
    weekly = make_list(session)
    reader = make_subscriber(session, weekly, "ana@example.com", "Ana")
    token = TOKENS.make(TokenPurpose.preferences, reader.id)
    before = _rows(session)
    with pytest.raises(addresses.InvalidName, match="NUL"):
        subscriptions.update_preferences(session, TOKENS, token=token, name="A\x00na", lists=[], sections={})
    assert _rows(session) == before


def test_an_address_at_a_blocked_domain_gets_the_usual_answer_and_nothing_else(session: Session) -> None:
    weekly = make_list(session)
    suppressions.block_domain(session, "mailinator.com")
    before = _rows(session)
    result = subscriptions.subscribe(session, weekly, "throw@mailinator.com", name="T")
    assert result == subscriptions.SubscribeResult(None, send_confirmation=False)  # as for a suppressed one
    assert _rows(session) == before


def test_adding_without_confirmed_leaves_it_pending_and_returns_the_confirmation_to_send(
    session: Session, settings: Settings
) -> None:
    """Issue 11 item 14: `subscribers add` without --confirmed sent no confirmation email."""
    from newsletter import subscribers

    double = make_list(session, opt_in=OptIn.double)
    added = subscribers.add(session, "ana@example.com", name="Ana", list_slugs=[double.slug])
    subscription = subscription_of(session, added.subscriber, double)
    assert subscription.status == SubscriptionStatus.pending
    assert added.confirmations == [subscription.id] and subscription.confirmation_sent_at is not None
    # Adding again within the resend window sends nothing more; a confirmed add sends nothing at all.
    assert subscribers.add(session, "ana@example.com", list_slugs=[double.slug]).confirmations == []
    other = make_list(session)
    assert subscribers.add(session, "bo@example.com", list_slugs=[other.slug], confirmed=True).confirmations == []
    mailer = MemoryMailer()
    sent = confirmations.send_confirmations(session, settings, mailer, added.confirmations)
    assert [r.ok for r in sent.values()] == [True] and [m.recipient for m in mailer.sent] == ["ana@example.com"]

    before = _rows(session)
    suppressions.block_domain(session, "mailinator.com")
    with pytest.raises(subscribers.InvalidSubscriber, match=r"addresses at mailinator.com are blocked"):
        subscribers.add(session, "throw@mailinator.com", list_slugs=[double.slug])
    with pytest.raises(addresses.InvalidName, match="NUL"):
        subscribers.add(session, "new@example.com", name="N\x00", list_slugs=[double.slug])
    with pytest.raises(subscribers.InvalidSubscriber, match="NUL"):
        subscribers.add(session, "new@example.com", attributes={"k": "v\x00"}, list_slugs=[double.slug])
    assert _rows(session) == before


# --- issue 11, item 7: control characters never stored -----------------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x9b31m\x7f\x08"


def test_control_characters_are_stripped_from_every_stored_single_line_text(session: Session) -> None:
    from newsletter import lists, subscribers
    from newsletter.models import MailingList, Subscriber

    mailing_list = lists.create_list(session, slug="ctl", name=f"Week{ESCAPES}ly\tBrief", from_email="news@example.org")
    mailing_list.form_fields = [{"name": "city", "label": "City"}]
    added = subscribers.add(
        session,
        "ctl@example.com",
        name=f"Ana{ESCAPES} K",
        attributes={f"ro{ESCAPES}le": f"ed{ESCAPES}itor", "age": 3},
        list_slugs=["ctl"],
        confirmed=True,
    )
    result = subscriptions.subscribe(
        session,
        mailing_list,
        "form@example.com",
        name=f"Bo{ESCAPES}",
        attributes=subscriptions.form_attributes(mailing_list, {"city": f"Alm{ESCAPES}aty\r\nHeader: x"}),
    )
    session.commit()
    session.expire_all()
    stored = session.get(MailingList, mailing_list.id)
    assert stored is not None and stored.name == "Week[2J]0;pwned31mly Brief"
    ana = session.get(Subscriber, added.subscriber.id)
    assert ana is not None and ana.name == "Ana[2J]0;pwned31m K"
    assert ana.attributes == {"ro[2J]0;pwned31mle": "ed[2J]0;pwned31mitor", "age": 3}
    form = session.get(
        Subscriber, session.scalar(select(Subscription.subscriber_id).where(Subscription.id == result.subscription_id))
    )
    assert form is not None and form.name == "Bo[2J]0;pwned31m"
    assert form.attributes == {"city": "Alm[2J]0;pwned31maty Header: x"}
    every = [*session.scalars(select(Subscriber.name)), *session.scalars(select(MailingList.name))]
    assert not any(ch in text for text in every for ch in "\x1b\x07\x9b\x7f\x08\t\r\n")
