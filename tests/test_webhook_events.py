"""Each event comes from the domain function where the change happens (so the CLI, API, admin and provider
webhooks all emit it), reaches a real receiver signed, once, and only if the change committed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import bounces, delivery, outbox, subscriptions, tracking
from newsletter.config import Settings
from newsletter.delivery import sending
from newsletter.mailer import MemoryMailer, SendResult
from newsletter.models import Delivery, OptIn, OutboxEvent, Subscriber, Subscription
from newsletter.tokens import TokenPurpose, Tokens
from newsletter.webhooks import dispatch, endpoints
from tests.conftest import TEST_SECRET
from tests.factories import make_list, make_subscriber, make_subscribers, publish_sample
from tests.webhookreceiver import Receiver, verify

TOKENS = Tokens(TEST_SECRET)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def hooked(sessions: sessionmaker[Session], settings: Settings, receiver: Receiver) -> tuple[Settings, str]:
    """Settings that allow the local receiver, and an endpoint there for every event: its secret."""
    allowed = settings.model_copy(update={"webhooks_allow_private": True})
    with sessions() as session, session.begin():
        return allowed, endpoints.create(session, allowed, receiver.url, ["*"]).secret


def received(sessions: sessionmaker[Session], settings: Settings, receiver: Receiver, secret: str) -> list[Any]:
    """Dispatch, then what arrived since the last call: (type, data), each checked against its signature."""
    before = len(receiver.requests)
    dispatch.dispatch(sessions, settings)
    # sent in parallel: in the order of the events, not of arrival
    new = sorted(receiver.requests[before:], key=lambda r: int(r.headers["webhook-id"].removeprefix("evt_")))
    assert all(verify(secret, r.headers, r.body) for r in new)
    assert len({r.headers["webhook-id"] for r in new}) == len(new)  # each event once
    return [(body["type"], body["data"]) for body in (json.loads(r.body) for r in new)]


def test_a_subscriber_joins_confirms_and_leaves(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly", opt_in=OptIn.double)
        result = subscriptions.subscribe(session, weekly, "Ann@Example.org", name="Ann", ip="203.0.113.1")
    ((type_, data),) = received(sessions, settings, receiver, secret)
    assert type_ == "subscriber.subscribed"
    assert data["subscriber"]["email"] == "ann@example.org" and data["subscriber"]["name"] == "Ann"
    assert (data["list"]["slug"], data["status"], data["joined_via"]) == ("weekly", "pending", "form")
    with sessions() as session, session.begin():
        row = session.get(Subscription, result.subscription_id)
        assert row is not None
        token = TOKENS.make(TokenPurpose.confirm, row.subscriber_id, row.list_id)
        subscriptions.confirm(session, TOKENS, token=token, ip="198.51.100.7")
        subscriptions.confirm(session, TOKENS, token=token)  # clicked twice: one event
    assert [(t, d["status"]) for t, d in received(sessions, settings, receiver, secret)] == [
        ("subscriber.confirmed", "confirmed")
    ]
    with sessions() as session, session.begin():
        token = TOKENS.make(TokenPurpose.unsubscribe, row.subscriber_id, row.list_id)
        subscriptions.unsubscribe(session, TOKENS, token=token, source="page", reason="too many emails")
        subscriptions.unsubscribe(session, TOKENS, token=token, source="page")  # already left: nothing
    ((type_, data),) = received(sessions, settings, receiver, secret)
    assert (type_, data["source"], data["reason"], data["status"]) == (
        "subscriber.unsubscribed",
        "page",
        "too many emails",
        "unsubscribed",
    )


def test_a_rolled_back_subscribe_sends_nothing(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    settings, secret = hooked
    with sessions() as session, session.begin():
        make_list(session, slug="weekly")
    with sessions() as session, pytest.raises(RuntimeError), session.begin():
        weekly = session.scalars(select(subscriptions.MailingList).where(subscriptions.MailingList.slug == "weekly"))
        subscriptions.subscribe(session, weekly.one(), "ghost@example.org")
        raise RuntimeError("the request failed after the subscribe")
    assert received(sessions, settings, receiver, secret) == []
    with sessions() as session:
        assert session.scalars(select(Subscriber).where(Subscriber.email == "ghost@example.org")).all() == []
        assert session.scalars(select(OutboxEvent)).all() == []


def test_one_click_unsubscribe_emits_the_same_event_as_the_page(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    """PostgreSQL builds this payload in SQL (the one-click statement stays one statement): the same as
    `emit_subscription` builds in Python for the page's unsubscribe."""
    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly")
        ann, bob = make_subscriber(session, weekly, "ann@example.org", "Ann"), make_subscriber(session, weekly)
        clicks = TOKENS.make(TokenPurpose.unsubscribe, ann.id, weekly.id)
        page = TOKENS.make(TokenPurpose.unsubscribe, bob.id, weekly.id)
    received(sessions, settings, receiver, secret)  # the two subscribed + confirmed events
    with sessions() as session, session.begin():
        assert subscriptions.one_click_unsubscribe(session, TOKENS, token=clicks)
        assert not subscriptions.one_click_unsubscribe(session, TOKENS, token=clicks)
        subscriptions.unsubscribe(session, TOKENS, token=page, source="one-click")
    (one_click, by_page) = received(sessions, settings, receiver, secret)
    assert one_click[0] == by_page[0] == "subscriber.unsubscribed"
    assert one_click[1]["subscriber"] == {"id": ann.id, "email": "ann@example.org", "name": "Ann"}
    assert set(one_click[1]) == set(by_page[1])
    assert {k: v for k, v in one_click[1].items() if k != "subscriber"} == {
        k: v for k, v in by_page[1].items() if k != "subscriber"
    }


def test_campaign_bounce_complaint_and_pause_events(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 4)
        digest = publish_sample(session)
        campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"])
        ranges = delivery.start(session, settings, campaign.id)
    *_, (started_type, started) = received(sessions, settings, receiver, secret)  # the subscribers', then
    assert started_type == "campaign.started"
    assert started["campaign"]["id"] == campaign.id and started["campaign"]["status"] == "sending"
    refused = SendResult(550, "5.1.1 <r0@example.com>: user unknown")
    mailer = MemoryMailer({"r0@example.com": refused})
    for batch in ranges:
        sending.send_batch(sessions, settings, mailer, campaign.id, batch.first_id, batch.last_id)
    got = received(sessions, settings, receiver, secret)
    assert [t for t, _ in got] == ["subscriber.bounced", "campaign.finished"]
    bounced, finished = (d for _, d in got)
    assert (bounced["subscriber"]["email"], bounced["bounce"], bounced["suppressed"]) == (
        "r0@example.com",
        "hard",
        True,
    )
    assert finished["campaign"]["status"] == "finished" and finished["counts"]["sent"] == 3
    assert finished["counts"]["failed"] == 1
    with sessions() as session, session.begin():
        row = session.scalars(select(Delivery).join(Subscriber).where(Subscriber.email == "r1@example.com")).one()
        tracking.record_complaint(session, row.id, detail="abuse report")
        soft = bounces.Report("bounce", "r2@example.com", None, "4.2.2", "smtp; 452 mailbox full", None)
        row2 = session.scalars(select(Delivery).join(Subscriber).where(Subscriber.email == "r2@example.com")).one()
        bounces.apply(session, settings, row2, soft)
    ((complained_type, complained), (soft_type, soft_data)) = received(sessions, settings, receiver, secret)
    assert (complained_type, complained["subscriber"]["email"], complained["suppressed"]) == (
        "subscriber.complained",
        "r1@example.com",
        True,
    )
    assert (soft_type, soft_data["bounce"], soft_data["suppressed"]) == ("subscriber.bounced", "soft", False)


def test_an_editors_pause_carries_its_reason(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 2)
        campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
        delivery.start(session, settings, campaign.id)
        delivery.pause(session, campaign.id, reason="a typo in the subject")
    got = [(t, d) for t, d in received(sessions, settings, receiver, secret) if t.startswith("campaign.")]
    assert [(t, d.get("reason"), d.get("by")) for t, d in got] == [
        ("campaign.started", None, None),
        ("campaign.paused", "a typo in the subject", "editor"),
    ]


def test_a_cancel_is_an_event_with_its_counts_and_only_once_it_commits(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly")
        make_subscribers(session, weekly, 3)
        campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
        delivery.start(session, settings, campaign.id)
    received(sessions, settings, receiver, secret)  # the subscriptions and the start
    with sessions() as session:  # a cancel that does not commit tells no one
        delivery.cancel(session, campaign.id)
        session.rollback()
    assert received(sessions, settings, receiver, secret) == []
    with sessions() as session, session.begin():
        delivery.cancel(session, campaign.id)
    ((type_, data),) = received(sessions, settings, receiver, secret)
    assert type_ == "campaign.cancelled" and data["by"] == "editor"
    assert (data["campaign"]["id"], data["campaign"]["status"]) == (campaign.id, "cancelled")
    assert data["campaign"]["finished_at"] is not None
    assert (data["counts"]["skipped"], data["counts"]["pending"], data["counts"]["sent"]) == (3, 0, 0)
    with sessions() as session, session.begin(), pytest.raises(delivery.CampaignError):
        delivery.cancel(session, campaign.id)  # refused: already cancelled, and no second event
    assert received(sessions, settings, receiver, secret) == []


def test_the_outbox_payloads_are_json_and_small(session: Session) -> None:
    weekly = make_list(session)
    make_subscriber(session, weekly)
    session.flush()
    for event in session.scalars(select(OutboxEvent)):
        assert len(dispatch.body_of(event)) < 1000
        assert outbox.check_type(event.type) == event.type


def test_erasing_a_subscriber_erases_the_events_about_them(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    from newsletter import gdpr
    from newsletter.models import WebhookDelivery

    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly")
        ann = make_subscriber(session, weekly, "ann@example.org")
        make_subscriber(session, weekly, "bob@example.org")
    assert len(received(sessions, settings, receiver, secret)) == 4  # each: subscribed, confirmed
    with sessions() as session, session.begin():
        gdpr.erase_subscriber(session, session.get(Subscriber, ann.id))  # type: ignore[arg-type]
    with sessions() as session:
        left = [e.payload["subscriber"]["email"] for e in session.scalars(select(OutboxEvent))]
        assert left == ["bob@example.org", "bob@example.org"]
        assert len(session.scalars(select(WebhookDelivery)).all()) == 2  # their log went with them


def test_an_import_emits_one_event_per_new_subscription(
    sessions: sessionmaker[Session], hooked: tuple[Settings, str], receiver: Receiver
) -> None:
    import io

    from newsletter import imports

    settings, secret = hooked
    with sessions() as session, session.begin():
        weekly = make_list(session, slug="weekly")
        make_subscriber(session, weekly, "old@example.org")  # already on the list: no new event
    received(sessions, settings, receiver, secret)
    csv = "email,name\nold@example.org,Old\nann@example.org,Ann\nbob@example.org,Bob\n"
    with sessions() as session, session.begin():
        imports.import_csv(session, "weekly", io.BytesIO(csv.encode()), confirmed=True)
    got = received(sessions, settings, receiver, secret)
    assert sorted((t, d["subscriber"]["email"], d["status"], d["joined_via"]) for t, d in got) == [
        ("subscriber.confirmed", "ann@example.org", "confirmed", "import"),
        ("subscriber.confirmed", "bob@example.org", "confirmed", "import"),
        ("subscriber.subscribed", "ann@example.org", "confirmed", "import"),
        ("subscriber.subscribed", "bob@example.org", "confirmed", "import"),
    ]
    assert {d["list"]["slug"] for _, d in got} == {"weekly"} and got[0][1]["subscriber"]["name"] in ("Ann", "Bob")


def test_an_import_writes_only_the_events_an_enabled_endpoint_receives(
    sessions: sessionmaker[Session], settings: Settings, receiver: Receiver
) -> None:
    """A million-row import writes no million events that no endpoint would ever be sent."""
    import io

    from newsletter import imports

    allowed = settings.model_copy(update={"webhooks_allow_private": True})
    events = select(OutboxEvent.type).order_by(OutboxEvent.id)
    with sessions() as session, session.begin():
        make_list(session, slug="weekly")
        off = endpoints.create(session, allowed, receiver.url, ["subscriber.subscribed"])
        off.enabled = False
        imports.import_csv(session, "weekly", io.BytesIO(b"email\nann@example.org\n"), confirmed=True)
        assert session.scalars(events).all() == []  # nobody listens: nothing written
        secret = endpoints.create(session, allowed, receiver.url, ["subscriber.confirmed"]).secret
        imports.import_csv(session, "weekly", io.BytesIO(b"email\nbob@example.org\ncy@example.org\n"), confirmed=True)
        assert session.scalars(events).all() == ["subscriber.confirmed"] * 2
    got = received(sessions, allowed, receiver, secret)
    assert [(t, d["subscriber"]["email"]) for t, d in got] == [
        ("subscriber.confirmed", "bob@example.org"),
        ("subscriber.confirmed", "cy@example.org"),
    ]
