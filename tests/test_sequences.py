"""Welcome and follow-up emails: a confirmation over HTTP sends the welcome step once to a real SMTP server,
later steps follow their delay (the clock is moved, never slept), leaving stops them, editing resends
nothing, turning the sequence off stops it; on both backends."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import confirmations, rendering, sequences, templates
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery import sending
from newsletter.delivery.ledger import BatchRange
from newsletter.mailer import MemoryMailer, SMTPMailer
from newsletter.models import (
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    OptIn,
    OutboxEvent,
    SequenceStep,
    Subscription,
    SubscriptionSource,
    SubscriptionStatus,
)
from newsletter.web import create_app
from newsletter.web.throttle import LocalThrottle
from tests.factories import make_list, make_subscriber
from tests.smtpserver import RecordingSMTPServer

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

WELCOME = "Welcome to the weekly round-up!\n\nHere is [our archive](https://example.org/archive) to start with."
FOLLOW_UP = "A week in: here is how to pick the sections you want."
DAY = dt.timedelta(days=1)


@dataclass
class Setup:
    app: FastAPI
    client: TestClient
    sessions: sessionmaker[Session]
    settings: Settings
    smtp: RecordingSMTPServer
    sent_batches: list[BatchRange]

    def send(self, ranges: list[BatchRange]) -> None:
        for batch in ranges:
            self.sent_batches.append(batch)
            sending.send_batch(
                self.sessions,
                self.settings,
                SMTPMailer(self.smtp.url),
                batch.campaign_id,
                batch.first_id,
                batch.last_id,
            )


@pytest.fixture
def setup(settings: Settings, sessions: sessionmaker[Session], smtp_server: RecordingSMTPServer) -> Iterator[Setup]:
    app = create_app(settings)
    app.state.sessions = app.state.tracking_sessions = app.state.one_click_sessions = sessions
    app.state.open_hot_pools = False  # the PostgreSQL fast path would not see this test's rows
    app.state.subscribe_throttle = LocalThrottle(settings.subscribe_ip_limit, 3600)
    confirmations_out = MemoryMailer()

    def enqueue_confirmation(subscription_id: int) -> None:
        with sessions.begin() as session:
            confirmations.send_confirmation(session, settings, confirmations_out, subscription_id)

    with TestClient(app, client=("203.0.113.10", 50000), follow_redirects=False) as client:
        state = Setup(app, client, sessions, settings, smtp_server, [])

        def enqueue_sequences(subscription_id: int) -> None:
            # what worker.tasks.start_sequences does, in this test's transaction
            with sessions.begin() as session:
                subscriber_id = session.get(Subscription, subscription_id).subscriber_id  # type: ignore[union-attr]
                ranges = sequences.plan_due(session, settings, subscriber_id=subscriber_id)
            state.send(ranges)

        app.state.enqueue_confirmation = enqueue_confirmation
        app.state.enqueue_sequences = enqueue_sequences
        app.state.confirmations_out = confirmations_out
        yield state


def with_sequence(session: Session, settings: Settings, *, opt_in: OptIn = OptIn.double, enable: bool = True) -> str:
    mailing_list = make_list(session, slug="weekly", opt_in=opt_in)
    sequences.create_sequence(session, "weekly")
    sequences.add_step(session, settings, "weekly", subject="Welcome aboard", body=WELCOME)
    sequences.add_step(session, settings, "weekly", subject="Your first week", body=FOLLOW_UP, delay_hours=7 * 24)
    if enable:
        sequences.enable(session, "weekly", now=utcnow() - dt.timedelta(seconds=1))
    session.commit()
    return mailing_list.slug


def subscribe_and_confirm(setup: Setup, address: str) -> str:
    answer = setup.client.post("/subscribe/weekly", data={"email": address, "name": "Ada"})
    assert answer.status_code == 200
    mailer: MemoryMailer = setup.app.state.confirmations_out
    raw = next(m for m in reversed(mailer.sent) if m.recipient == address).data
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"https?://\S+(/confirm/\S+)", text)
    assert link, text
    assert setup.client.get(link[1]).status_code == 200
    return link[1]


def ledger(session: Session, position: int) -> list[Delivery]:
    session.expire_all()
    step = session.scalar(select(SequenceStep).where(SequenceStep.position == position))
    assert step is not None
    return list(session.scalars(select(Delivery).where(Delivery.campaign_id == step.campaign_id)))


def test_confirming_sends_the_welcome_once_with_working_one_click_unsubscribe(setup: Setup, session: Session) -> None:
    with_sequence(session, setup.settings)
    confirm = subscribe_and_confirm(setup, "ada@example.com")

    [welcome] = setup.smtp.wait_for(1)
    assert welcome.rcpt_tos == ("ada@example.com",)
    message = welcome.message
    assert message["Subject"] == "Welcome aboard"
    assert message["List-Id"].startswith("Weekly Digest")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello Ada," in text and "Welcome to the weekly round-up!" in text and "1 Example Street" in text
    assert "our archive" in html and "/c/" in html  # the list tracks: the link goes through click tracking
    [row] = ledger(session, 1)
    assert row.status == DeliveryStatus.sent and row.message_id == message["Message-ID"]
    # the outbox got `sequence.step_sent` in the transaction that recorded the message as accepted
    [event] = session.scalars(select(OutboxEvent).where(OutboxEvent.type == "sequence.step_sent")).all()
    assert event.payload["list"] == "weekly" and event.payload["step"]["position"] == 1
    assert event.payload["subscriber"]["email"] == "ada@example.com"
    assert event.payload["message_id"] == message["Message-ID"]

    # The sweep and a second click on the link plan nothing more: one ledger row per subscriber per step.
    with setup.sessions.begin() as other:
        assert sequences.plan_due(other, setup.settings) == []
    assert setup.client.get(confirm).status_code == 200  # a second click on the link
    assert len(setup.smtp.messages) == 1 and len(ledger(session, 1)) == 1

    # The header's one-click URL works as RFC 8058 says, and the follow-up never comes.
    url = re.search(r"<(https?://[^>]+/unsubscribe/[^>]+)>", message["List-Unsubscribe"])
    assert url
    answer = setup.client.post(
        urlsplit(url[1]).path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    session.expire_all()
    assert session.scalar(select(Subscription.status)) == SubscriptionStatus.unsubscribed
    with setup.sessions.begin() as later:
        assert sequences.plan_due(later, setup.settings, now=utcnow() + 8 * DAY) == []
    assert ledger(session, 2) == [] and len(setup.smtp.messages) == 1


def test_the_next_step_follows_its_delay_and_editing_resends_nothing(setup: Setup, session: Session) -> None:
    with_sequence(session, setup.settings, opt_in=OptIn.single)
    answer = setup.client.post("/subscribe/weekly", data={"email": "bo@example.com"})
    assert answer.status_code == 200
    setup.smtp.wait_for(1)  # single opt-in: welcomed at once

    welcome_sent = ledger(session, 1)[0].sent_at
    assert welcome_sent is not None
    with setup.sessions.begin() as early:  # a day short of the delay: not yet
        assert sequences.plan_due(early, setup.settings, now=welcome_sent + 6 * DAY) == []
    # Editing the welcome (already sent) changes what new subscribers get, and nothing for Bo.
    sequences.edit_step(session, setup.settings, "weekly", 1, subject="Welcome, reader")
    session.commit()
    with setup.sessions.begin() as due:
        ranges = sequences.plan_due(due, setup.settings, now=welcome_sent + 7 * DAY + dt.timedelta(minutes=1))
    assert len(ranges) == 1
    setup.send(ranges)
    messages = setup.smtp.wait_for(2)
    assert [m.message["Subject"] for m in messages] == ["Welcome aboard", "Your first week"]
    assert [r.status for r in ledger(session, 2)] == [DeliveryStatus.sent]

    setup.client.post("/subscribe/weekly", data={"email": "cy@example.com"})
    assert setup.smtp.wait_for(3)[-1].message["Subject"] == "Welcome, reader"
    assert sorted(len(ledger(session, p)) for p in (1, 2)) == [1, 2]


def test_turning_off_stops_and_turning_on_does_not_mail_the_list_retroactively(
    settings: Settings, session: Session
) -> None:
    with_sequence(session, settings, opt_in=OptIn.single)
    mailing_list = sequences.get_sequence(session, "weekly").mailing_list
    early = make_subscriber(session, mailing_list, "early@example.com")
    session.commit()
    assert len(sequences.plan_due(session, settings)) == 1  # planned, not yet sent when it is turned off
    sequences.disable(session, "weekly")
    [row] = ledger(session, 1)
    assert row.status == DeliveryStatus.skipped and row.smtp_text == sequences.TURNED_OFF
    make_subscriber(session, mailing_list, "while-off@example.com")
    assert sequences.plan_due(session, settings) == []

    # On again: only those confirmed from now on; an import never triggers it.
    sequences.enable(session, "weekly", now=utcnow() + dt.timedelta(seconds=1))
    assert sequences.plan_due(session, settings, now=utcnow() + dt.timedelta(seconds=2)) == []
    later = make_subscriber(session, mailing_list, "later@example.com")
    imported = make_subscriber(session, mailing_list, "imported@example.com")
    for subscription in session.scalars(
        select(Subscription).where(Subscription.subscriber_id.in_([later.id, imported.id]))
    ):
        subscription.confirmed_at = utcnow() + dt.timedelta(seconds=2)  # after the sequence was turned on
        if subscription.subscriber_id == imported.id:
            subscription.source = SubscriptionSource.import_
    session.flush()
    assert len(sequences.plan_due(session, settings, now=utcnow() + dt.timedelta(seconds=3))) == 1
    rows = {r.subscriber_id: r.status for r in ledger(session, 1)}
    assert rows == {early.id: DeliveryStatus.skipped, later.id: DeliveryStatus.pending}


def test_a_step_added_later_is_not_sent_to_those_whose_turn_passed(settings: Settings, session: Session) -> None:
    with_sequence(session, settings, opt_in=OptIn.single)
    mailing_list = sequences.get_sequence(session, "weekly").mailing_list
    reader = make_subscriber(session, mailing_list, "reader@example.com")
    sequences.plan_due(session, settings)
    for step in sequences.get_sequence(session, "weekly").steps:
        step.created_at = utcnow() - 40 * DAY  # as if the sequence had these steps for weeks
    session.flush()
    for row in ledger(session, 1):
        row.status, row.sent_at = DeliveryStatus.sent, utcnow() - 30 * DAY
    session.flush()
    assert len(sequences.plan_due(session, settings)) == 1  # the 7-day follow-up was due long ago: sent
    sequences.add_step(session, settings, "weekly", subject="A month in", body="Thanks for reading.", delay_hours=24)
    for row in ledger(session, 2):
        row.status, row.sent_at = DeliveryStatus.sent, utcnow() - 20 * DAY
    session.flush()
    assert sequences.plan_due(session, settings) == []  # its turn for step 3 came before step 3 existed
    assert ledger(session, 3) == [] and reader.id in {r.subscriber_id for r in ledger(session, 2)}


def test_steps_are_edited_moved_and_removed_in_order(settings: Settings, session: Session) -> None:
    with_sequence(session, settings)
    sequences.add_step(session, settings, "weekly", subject="Third", body="Three.", delay_hours=1)
    sequences.move_step(session, "weekly", 3, 1)
    assert [s.subject for s in sequences.get_sequence(session, "weekly").steps] == [
        "Third",
        "Welcome aboard",
        "Your first week",
    ]
    removed = sequences.get_step(session, "weekly", 2).campaign_id
    sequences.remove_step(session, "weekly", 2)
    steps = sequences.get_sequence(session, "weekly").steps
    assert [(s.position, s.subject) for s in steps] == [(1, "Third"), (2, "Your first week")]
    status = {s.campaign_id: s.campaign_status for s in sequences.status(session, "weekly")}
    assert removed not in status and all(v == CampaignStatus.sending.value for v in status.values())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": " \r\n "}, "subject"),
        ({"subject": "x" * 501}, "subject"),
        ({"body": ""}, "body"),
        ({"body": "a" * (sequences.MAX_BODY_CHARS + 1)}, "body"),
        ({"body": "nul\x00"}, "body"),
        ({"delay_hours": -1}, "delay"),
        ({"delay_hours": sequences.MAX_DELAY_HOURS + 1}, "delay"),
    ],
)
def test_bad_steps_are_refused_with_the_field_named_and_nothing_changed(
    settings: Settings, session: Session, change: dict[str, object], field: str
) -> None:
    with_sequence(session, settings)
    before = [(s.subject, s.body, s.delay_hours) for s in sequences.get_sequence(session, "weekly").steps]
    values: dict[str, object] = {"subject": "Fine", "body": "Fine.", "delay_hours": 0} | change
    with pytest.raises(sequences.InvalidStep) as added:
        sequences.add_step(session, settings, "weekly", **values)  # type: ignore[arg-type]
    assert added.value.field == field
    with pytest.raises(sequences.InvalidStep) as edited:
        sequences.edit_step(session, settings, "weekly", 1, **change)  # type: ignore[arg-type]
    assert edited.value.field == field
    session.rollback()
    after = [(s.subject, s.body, s.delay_hours) for s in sequences.get_sequence(session, "weekly").steps]
    assert after == before


@pytest.mark.parametrize(("text", "hours"), [("0", 0), ("3", 72), ("3d", 72), ("12h", 12), ("2d12h", 60), (" 1D ", 24)])
def test_delays_are_read_in_days_and_hours(text: str, hours: int) -> None:
    assert sequences.parse_delay(text) == hours


@pytest.mark.parametrize("text", ["", "soon", "-1", "3w", "d", "1h2d", "9999d"])
def test_bad_delays_say_how_to_write_one(text: str) -> None:
    with pytest.raises(sequences.InvalidStep, match="delay"):
        sequences.parse_delay(text)


def test_a_step_can_use_an_uploaded_template_made_for_steps(settings: Settings, session: Session) -> None:
    with_sequence(session, settings)
    source = (
        (rendering.TEMPLATES_DIR / "email" / "sequence" / "body.mjml")
        .read_text()
        .replace("<h1>{{ subject }}</h1>", "<h1>{{ subject }}</h1><p>From the editors' desk</p>")
    )
    templates.save_template(session, "welcome-desk", source)
    sequences.edit_step(session, settings, "weekly", 1, template="welcome-desk")
    step = sequences.get_step(session, "weekly", 1)
    assert "From the editors&#39; desk" in step.campaign.html or "From the editors' desk" in step.campaign.html
    assert "Welcome to the weekly round-up!" in step.campaign.html
    sequences.edit_step(session, settings, "weekly", 1, default_template=True)
    assert "editors" not in sequences.get_step(session, "weekly", 1).campaign.html
    with pytest.raises(templates.InvalidTemplate):  # neither a digest's nor a step's: refused at upload
        templates.save_template(session, "broken", "<mjml><mj-body>{{ nothing_here }}</mj-body></mjml>")


def test_deleting_a_list_removes_its_sequence_and_the_steps_campaigns(settings: Settings, session: Session) -> None:
    from sqlalchemy import func

    from newsletter import delivery, lists
    from newsletter.models import Campaign, EmailSequence, MailingList
    from tests.factories import publish_sample

    with_sequence(session, settings, opt_in=OptIn.single)
    weekly = lists.get_list(session, "weekly")
    reader = make_subscriber(session, weekly, "reader@example.com")
    sequences.plan_due(session, settings)
    (welcome,) = ledger(session, 1)
    welcome.status = DeliveryStatus.sent  # step 1 went out, and a removed step leaves its campaign behind
    sequences.add_step(session, settings, "weekly", subject="Gone", body="Removed before it went out.")
    sequences.remove_step(session, "weekly", 3)
    step_campaigns = set(session.scalars(select(Campaign.id).where(Campaign.digest_id.is_(None))))
    assert len(step_campaigns) == 3
    other = make_list(session, slug="other")
    make_subscriber(session, other, "other@example.com")
    kept = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["other"])
    session.flush()
    assert lists.removal(session, weekly) == lists.Removal({"pending": 0, "confirmed": 1, "unsubscribed": 0}, 2, 1)

    removed = lists.delete_list(session, "weekly")  # the steps' campaigns are `sending`: no longer in the way
    assert (removed.sequence_steps, removed.sequence_messages, removed.subscriptions["confirmed"]) == (2, 1, 1)
    session.expire_all()
    assert session.scalar(select(MailingList.id).where(MailingList.slug == "weekly")) is None
    assert session.scalar(select(func.count()).select_from(EmailSequence)) == 0
    assert session.scalar(select(func.count()).select_from(SequenceStep)) == 0
    assert session.scalars(select(Campaign.id).where(Campaign.id.in_(step_campaigns))).all() == []
    assert session.scalars(select(Delivery).where(Delivery.subscriber_id == reader.id)).all() == []
    assert sequences.plan_due(session, settings) == []  # nothing of it is sent any more
    assert session.get(Campaign, kept.id) is not None and lists.get_list(session, "other")  # others untouched


def test_a_list_sent_a_digest_keeps_its_sequence_when_delete_is_refused(settings: Settings, session: Session) -> None:
    from newsletter import delivery, lists
    from newsletter.models import Campaign
    from tests.factories import publish_sample

    with_sequence(session, settings, opt_in=OptIn.single)
    make_subscriber(session, lists.get_list(session, "weekly"), "reader@example.com")
    sent = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=["weekly"])
    sent.status = CampaignStatus.finished
    session.flush()
    with pytest.raises(lists.ListInUse, match=rf"was sent campaign\(s\) {sent.id};"):
        lists.delete_list(session, "weekly")  # names the digest's campaign only, not the steps' as "sending"
    session.expire_all()
    assert [s.subject for s in sequences.get_sequence(session, "weekly").steps] == ["Welcome aboard", "Your first week"]
    assert session.scalar(select(Campaign.id).where(Campaign.digest_id.is_(None)).limit(1)) is not None
