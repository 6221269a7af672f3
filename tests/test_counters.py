"""The per-campaign counters (`campaign_counts`, kept by triggers) always equal a scan of the ledger.

Real campaigns on both backends go through transient failures, hard failures, a crashed worker swept to
unknown, a resend after unknown, resend of failures, cancel and a deleted subscriber; after every step
the counters `campaign_progress` reads equal `tally`. A Hypothesis state machine does the same over
random sequences of those operations.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, stats, subscriptions
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery import counters, progress, sending
from newsletter.delivery.ledger import MessageIds, Outcomes, claim, record
from newsletter.mailer import MemoryMailer, SendResult
from newsletter.models import CampaignCount, CampaignStatus, Delivery, Subscriber
from tests.factories import make_list, make_subscribers, publish_sample, subscription_of

TRANSIENT = SendResult(451, "4.3.0 Try again later")
HARD = SendResult(550, "5.1.1 User unknown")


def agree(session: Session, campaign_id: int) -> dict[str, int]:
    """The counters and a scan of the ledger agree; the counts (non-zero) they agree on."""
    session.expire_all()
    scanned = progress.tally(session, campaign_id)
    kept = counters.read(session, campaign_id)
    assert kept.counts == scanned.counts
    assert kept.resent_after_unknown == scanned.resent_after_unknown
    assert kept.last_sent_at == scanned.last_sent_at
    assert progress.campaign_progress(session, campaign_id).counts == scanned.counts
    return {k: v for k, v in scanned.counts.items() if v}


def start(session: Session, settings: Settings, slug: str) -> tuple[int, list[delivery.BatchRange]]:
    campaign = delivery.create_campaign(
        session, digest_slug=publish_sample(session).slug, list_slugs=[slug], allow_repeat=True
    )
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    return campaign.id, ranges


def send_all(sessions: sessionmaker[Session], settings: Settings, mailer: MemoryMailer, ranges: list[Any]) -> None:
    for batch in ranges:
        sending.send_batch(sessions, settings, mailer, batch.campaign_id, batch.first_id, batch.last_id)


def make_due(session: Session) -> None:
    session.execute(update(Delivery).values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))
    session.commit()


def test_counters_follow_a_campaign_through_failures_a_crash_resend_and_cancel(
    sessions: sessionmaker[Session], session: Session, make_settings: Any, settings: Settings
) -> None:
    settings = make_settings(database_url=settings.database_url, retry_base_seconds=60, batch_size=10)
    weekly = make_list(session, slug="weekly")
    people = make_subscribers(session, weekly, 12)
    campaign_id, ranges = start(session, settings, "weekly")
    assert agree(session, campaign_id) == {"pending": 12}

    # a crashed worker holds three rows; the rest is sent, with one transient and one hard failure
    batch = ranges[0]
    claim(session, campaign_id, batch.first_id, batch.last_id, limit=3, worker="dead:1")
    session.commit()
    assert agree(session, campaign_id) == {"pending": 9, "sending": 3}
    mailer = MemoryMailer({people[5].email: TRANSIENT, people[6].email: HARD})
    send_all(sessions, settings, mailer, ranges)
    assert agree(session, campaign_id) == {"sending": 3, "sent": 7, "pending": 1, "failed": 1}

    # the server recovers: the retry goes out
    mailer.responses = None
    make_due(session)
    send_all(sessions, settings, mailer, ranges)
    assert agree(session, campaign_id) == {"sending": 3, "sent": 8, "failed": 1}

    # the sweep finds the dead worker's rows: unknown
    later = utcnow() + dt.timedelta(seconds=settings.claim_lease_seconds + 1)
    assert delivery.sweep(session, settings, now=later).unknown == 3
    session.commit()
    assert agree(session, campaign_id) == {"sent": 8, "failed": 1, "unknown": 3}
    assert delivery.get_campaign(session, campaign_id).status == CampaignStatus.finished

    # resend to failed and unknown: four rows pending again, then sent
    moved, again = stats.resend(session, settings, campaign_id, ["failed", "unknown"])
    session.commit()
    assert moved == 4
    assert agree(session, campaign_id) == {"sent": 8, "pending": 4}
    send_all(sessions, settings, mailer, again)
    assert agree(session, campaign_id) == {"sent": 11, "skipped": 1}  # the hard bounce was suppressed

    # a subscriber erased: the ledger row goes, and the counters with it
    session.delete(session.get(Subscriber, people[0].id))
    session.commit()
    assert agree(session, campaign_id) == {"sent": 10, "skipped": 1}


def test_cancel_and_unsubscribe_mid_campaign_are_counted_as_skipped(
    sessions: sessionmaker[Session], session: Session, make_settings: Any, settings: Settings
) -> None:
    settings = make_settings(database_url=settings.database_url, batch_size=4)
    weekly = make_list(session, slug="weekly")
    people = make_subscribers(session, weekly, 10)
    campaign_id, ranges = start(session, settings, "weekly")
    subscriptions.unsubscribe_subscription(session, subscription_of(session, people[1], weekly), source="test")
    session.commit()
    mailer = MemoryMailer()
    sending.send_batch(sessions, settings, mailer, campaign_id, ranges[0].first_id, ranges[0].last_id)
    assert agree(session, campaign_id) == {"sent": 3, "skipped": 1, "pending": 6}
    delivery.cancel(session, campaign_id)
    session.commit()
    assert agree(session, campaign_id) == {"sent": 3, "skipped": 7}


def test_resent_after_unknown_is_counted(
    sessions: sessionmaker[Session], session: Session, make_settings: Any, settings: Settings
) -> None:
    settings = make_settings(database_url=settings.database_url, unknown_policy="resend")
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 5)
    campaign_id, ranges = start(session, settings, "weekly")
    claim(session, campaign_id, ranges[0].first_id, ranges[0].last_id, limit=2, worker="dead:1")
    session.commit()
    later = utcnow() + dt.timedelta(seconds=settings.claim_lease_seconds + 1)
    delivery.sweep(session, settings, now=later)
    session.commit()
    assert agree(session, campaign_id) == {"pending": 5}
    send_all(sessions, settings, MemoryMailer(), ranges)
    assert agree(session, campaign_id) == {"sent": 5}
    assert counters.read(session, campaign_id).resent_after_unknown == 2
    assert progress.campaign_progress(session, campaign_id).resent_after_unknown == 2


def test_the_rate_counts_the_last_minute_and_the_sweep_folds_old_ticks(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 6)
    campaign_id, ranges = start(session, settings, "weekly")
    send_all(sessions, settings, MemoryMailer(), ranges[:1])
    # three of the six were sent ten minutes ago
    old = utcnow() - dt.timedelta(minutes=10)
    ids = session.scalars(select(Delivery.id).where(Delivery.campaign_id == campaign_id).order_by(Delivery.id)).all()
    session.execute(update(Delivery).where(Delivery.id.in_(ids[:3])).values(sent_at=old))
    delivery.get_campaign(session, campaign_id).started_at = old
    session.commit()
    state = progress.campaign_progress(session, campaign_id)
    assert state.counts["sent"] == 6
    recent = counters.read(session, campaign_id, since=utcnow() - dt.timedelta(seconds=60)).sent_since
    assert recent == 3
    assert 3 / 65 <= state.rate <= 3 / 60
    if session.get_bind().dialect.name == "postgresql":  # as if the connection that wrote them had closed
        session.execute(update(CampaignCount).values(shard=2_000_000_000))
    rows_before = session.scalar(select(func.count()).select_from(CampaignCount))
    delivery.sweep(session, settings)
    session.commit()
    assert agree(session, campaign_id) == {"sent": 6}
    assert session.scalar(select(func.count()).select_from(CampaignCount)) < rows_before
    assert set(session.scalars(select(CampaignCount.shard))) == {0}
    old_ticks = select(func.count()).where(CampaignCount.tick != 0, CampaignCount.tick <= counters.tick_of(old))
    assert session.scalar(old_ticks) == 0
    assert counters.read(session, campaign_id, since=utcnow() - dt.timedelta(seconds=60)).sent_since == 3


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_each_connection_writes_its_own_counter_rows(session: Session, settings: Settings) -> None:
    weekly = make_list(session, slug="weekly")
    make_subscribers(session, weekly, 3)
    campaign_id, _ = start(session, settings, "weekly")
    shards = set(session.scalars(select(CampaignCount.shard).where(CampaignCount.campaign_id == campaign_id)))
    assert shards == {session.scalar(text("SELECT pg_backend_pid()"))}


# --- random sequences -------------------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    """Random plans, claims, outcomes, crashes, sweeps, resends, pauses, cancels and unsubscribes."""

    session: Session
    settings: Settings

    @initialize(size=st.integers(min_value=0, max_value=12))
    def plan_a_campaign(self, size: int) -> None:
        self.list = make_list(self.session)
        self.people = make_subscribers(self.session, self.list, size, prefix=self.list.slug)
        self.campaign_id, self.ranges = start(self.session, self.settings, self.list.slug)
        self.claimed: list[Any] = []
        self.worker = 0

    def _range(self) -> tuple[int, int]:
        return (self.ranges[0].first_id, self.ranges[-1].last_id) if self.ranges else (0, 0)

    @rule(limit=st.integers(min_value=1, max_value=6))
    def claim_some(self, limit: int) -> None:
        self.worker += 1
        first, last = self._range()
        got = claim(self.session, self.campaign_id, first, last, limit=limit, worker=f"w{self.worker}")
        self.claimed.extend((f"w{self.worker}", c) for c in got)

    @rule(verdicts=st.lists(st.sampled_from(["sent", "retry", "failed", "unwanted"]), min_size=1, max_size=6))
    def record_some(self, verdicts: list[str]) -> None:
        for verdict in verdicts:
            if not self.claimed:
                return
            worker, claimed = self.claimed.pop(0)
            outcomes = Outcomes()
            if verdict == "sent":
                outcomes.add(claimed, SendResult(250, "2.0.0 Ok"))
            elif verdict == "retry":
                outcomes.add(claimed, TRANSIENT)
            elif verdict == "failed":
                outcomes.add(claimed, HARD)
            else:
                outcomes.unwanted.append(claimed)
            ids = MessageIds(self.campaign_id, "example.org", lambda c, d: "mac")
            record(self.session, self.settings, ids, outcomes, worker)

    @rule(policy=st.sampled_from(["skip", "resend"]))
    def crash_and_sweep(self, policy: str) -> None:
        self.claimed.clear()  # their workers died
        later = utcnow() + dt.timedelta(seconds=self.settings.claim_lease_seconds + 1)
        delivery.sweep(self.session, self.settings.model_copy(update={"unknown_policy": policy}), now=later)

    @rule()
    def make_retries_due(self) -> None:
        self.session.execute(
            update(Delivery).where(Delivery.campaign_id == self.campaign_id).values(next_attempt_at=None)
        )

    @rule()
    def resend_failures(self) -> None:
        with contextlib.suppress(delivery.CampaignError):
            stats.resend(self.session, self.settings, self.campaign_id, ["failed", "unknown"])

    @rule()
    def pause_or_resume(self) -> None:
        status = delivery.get_campaign(self.session, self.campaign_id).status
        if status == CampaignStatus.sending:
            delivery.pause(self.session, self.campaign_id)
        elif status == CampaignStatus.paused:
            delivery.resume(self.session, self.settings, self.campaign_id)

    @rule()
    def cancel(self) -> None:
        with contextlib.suppress(delivery.CampaignError):
            delivery.cancel(self.session, self.campaign_id)

    @rule(data=st.data())
    def unsubscribe_someone(self, data: st.DataObject) -> None:
        if self.people:
            person = data.draw(st.sampled_from(self.people))
            subscription = subscription_of(self.session, person, self.list)
            if subscription.status == subscriptions.SubscriptionStatus.confirmed:
                subscriptions.unsubscribe_subscription(self.session, subscription, source="test")

    @rule(data=st.data())
    def erase_someone(self, data: st.DataObject) -> None:
        if self.people:
            person = self.people.pop(data.draw(st.integers(min_value=0, max_value=len(self.people) - 1)))
            self.claimed = [(w, c) for w, c in self.claimed if c.subscriber_id != person.id]
            self.session.delete(self.session.get(Subscriber, person.id))
            self.session.flush()

    @invariant()
    def counters_equal_a_scan(self) -> None:
        self.session.flush()
        assert counters.read(self.session, self.campaign_id).counts == (
            progress.tally(self.session, self.campaign_id).counts
        )
        assert counters.read(self.session, self.campaign_id).resent_after_unknown == (
            progress.tally(self.session, self.campaign_id).resent_after_unknown
        )


def test_counters_equal_a_scan_after_any_sequence_of_ledger_operations(session: Session, settings: Settings) -> None:
    LedgerMachine.session = session
    LedgerMachine.settings = settings
    run_state_machine_as_test(
        LedgerMachine,
        settings=hsettings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
