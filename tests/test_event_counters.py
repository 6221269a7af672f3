"""The engagement counters (`event_counts`, kept by triggers on events) always equal a scan of the events.

Opens and clicks go through the real tracking path (signed tokens), bounces and complaints through
`bounces.apply` as a provider's webhook or a DSN would, on both backends; a Hypothesis state machine runs
random sequences of them with erasures, deleted campaigns and the sweep, and after every step the report's
figures read from the counters equal `event_counters.scan`.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import bounces, delivery, stats, suppressions, tracking
from newsletter.config import Settings
from newsletter.db import make_engine, utcnow
from newsletter.delivery import event_counters
from newsletter.links import click_token
from newsletter.models import (
    Campaign,
    Delivery,
    DeliveryStatus,
    Event,
    EventCount,
    EventType,
    Link,
    MailingList,
    Subscriber,
)
from newsletter.tokens import TokenPurpose, Tokens
from tests.conftest import fresh_database
from tests.factories import make_list, make_subscribers, publish_sample


def agree(session: Session, campaign_id: int) -> event_counters.Engagement:
    session.flush()
    kept, scanned = event_counters.read(session, campaign_id), event_counters.scan(session, campaign_id)
    assert kept.events == scanned.events
    assert kept.people == scanned.people
    assert kept.link_clicks == scanned.link_clicks
    assert kept.link_people == scanned.link_people
    assert kept.hours == scanned.hours
    return kept


def sent_campaign(
    session: Session, settings: Settings, size: int, slug: str | None = None
) -> tuple[int, list[Delivery]]:
    """A campaign to a new list of `size` readers (or to the list `slug`), every row sent."""
    if slug is None:
        weekly = make_list(session)
        make_subscribers(session, weekly, size, prefix=weekly.slug)
        slug = weekly.slug
    campaign = delivery.create_campaign(
        session, digest_slug=publish_sample(session).slug, list_slugs=[slug], allow_repeat=True
    )
    delivery.start(session, settings, campaign.id)
    session.execute(update(Delivery).where(Delivery.campaign_id == campaign.id).values(status=DeliveryStatus.sent))
    session.expire_all()
    rows = list(session.scalars(select(Delivery).where(Delivery.campaign_id == campaign.id).order_by(Delivery.id)))
    return campaign.id, rows


def bounce(session: Session, settings: Settings, row: Delivery, *, hard: bool) -> bounces.Outcome:
    address = session.scalar(select(Subscriber.email).where(Subscriber.id == row.subscriber_id))
    report = bounces.Report("bounce", address, address, "5.1.1" if hard else "4.2.2", "mailbox", None, hard=hard)
    return bounces.apply(session, settings, row, report)


def test_the_report_reads_opens_clicks_links_and_soft_bounces_from_the_counters(
    session: Session, settings: Settings
) -> None:
    settings = settings.model_copy(update={"soft_bounce_limit": 2, "soft_bounce_days": 30.0})
    campaign_id, rows = sent_campaign(session, settings, 4)
    tokens = Tokens.from_settings(settings)
    for row in (rows[0], rows[0], rows[1]):
        assert tracking.record_open(session, tokens, token=tokens.make(TokenPurpose.track, row.id))
    for row, position in ((rows[0], 1), (rows[0], 1), (rows[0], 2), (rows[2], 1)):
        tracking.record_click(session, tokens, token=click_token(tokens.make(TokenPurpose.track, row.id), position))
    assert bounce(session, settings, rows[3], hard=False).result == "recorded"
    agree(session, campaign_id)
    report = stats.campaign_report(session, campaign_id)
    assert (report["opens"], report["unique_opens"], report["clicks"], report["unique_clickers"]) == (3, 2, 4, 2)
    assert [(link["clicks"], link["unique_clicks"]) for link in report["links"][:2]] == [(3, 2), (1, 1)]
    assert (report["bounces"], report["soft_bounces"], report["soft_bounce_suppressed"]) == (1, 1, 0)
    assert suppressions.soft_bounce_count(session, settings, rows[3].subscriber_id) == 1

    # a second soft bounce of the same address in another campaign reaches the threshold
    slug = session.scalars(select(MailingList.slug).where(MailingList.id == rows[3].list_id)).one()
    other_id, others = sent_campaign(session, settings, 0, slug)
    again = next(r for r in others if r.subscriber_id == rows[3].subscriber_id)
    assert bounce(session, settings, again, hard=False).result == "suppressed"
    assert suppressions.soft_bounce_count(session, settings, rows[3].subscriber_id) == 2
    later = utcnow() + dt.timedelta(days=31)
    assert suppressions.soft_bounce_count(session, settings, rows[3].subscriber_id, now=later) == 0
    figures = stats.campaign_report(session, other_id)
    assert (figures["bounces"], figures["soft_bounces"], figures["soft_bounce_suppressed"]) == (1, 1, 1)
    agree(session, other_id)
    # a hard bounce is no soft bounce
    assert bounce(session, settings, rows[2], hard=True).result == "suppressed"
    assert stats.campaign_report(session, campaign_id)["soft_bounces"] == 1
    assert suppressions.soft_bounce_count(session, settings, rows[2].subscriber_id) == 0
    agree(session, campaign_id)

    # erasing a reader takes their events, and their part of the figures, away
    session.delete(session.get(Subscriber, rows[0].subscriber_id))
    session.flush()
    assert agree(session, campaign_id).people["open"] == 1
    # deleting the campaign takes its counters with it
    session.delete(session.get(Campaign, campaign_id))
    session.flush()
    assert session.scalar(select(func.count()).where(EventCount.campaign_id == campaign_id)) == 0


def test_two_first_opens_at_once_count_one_reader_and_the_sweep_folds_shards(
    make_settings: Callable[..., Settings],
) -> None:
    # real concurrent transactions on PostgreSQL: a database of its own, not the rolled-back test one
    with fresh_database("newsletter_test_firsts") as url:
        engine = make_engine(url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        settings = make_settings(database_url=url)
        try:
            with sessions() as session:
                campaign_id, rows = sent_campaign(session, settings, 1)
                session.commit()
            _open_twice_at_once(sessions, settings, rows[0].id)
            with sessions() as session:
                assert agree(session, campaign_id).people["open"] == 1
                shards = select(EventCount.shard).where(EventCount.campaign_id == campaign_id)
                assert len(set(session.scalars(shards))) == 2  # one per connection that wrote
                session.execute(update(EventCount).values(shard=EventCount.shard + 1_000_000_000))  # both gone
                delivery.sweep(session, settings)
                session.commit()
                assert set(session.scalars(shards)) == {0}
                assert agree(session, campaign_id).events["open"] == 2
        finally:
            engine.dispose()


def _open_twice_at_once(sessions: sessionmaker[Session], settings: Settings, delivery_id: int) -> None:
    tokens = Tokens.from_settings(settings)
    token = tokens.make(TokenPurpose.track, delivery_id)
    first, second = sessions(), sessions()
    tracking.record_open(first, tokens, token=token)  # not committed yet
    errors: list[BaseException] = []

    def open_again() -> None:  # waits on the first's uncommitted row in event_firsts, then counts nobody new
        try:
            tracking.record_open(second, tokens, token=token)
            second.commit()
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=open_again)
    thread.start()
    thread.join(timeout=0.5)
    assert not errors and thread.is_alive()  # blocked by the unique key, as a concurrent first open must be
    first.commit()
    thread.join(timeout=30)
    assert not errors and not thread.is_alive()
    first.close()
    second.close()


class EventMachine(RuleBasedStateMachine):
    """Random opens, clicks, bounces, complaints, old events, erasures and sweeps on one campaign."""

    session: Session
    settings: Settings

    @initialize(size=st.integers(min_value=1, max_value=6))
    def send_a_campaign(self, size: int) -> None:
        self.campaign_id, self.rows = sent_campaign(self.session, self.settings, size)
        self.tokens = Tokens.from_settings(self.settings)
        self.links = self.session.scalar(select(func.count()).where(Link.campaign_id == self.campaign_id)) or 0

    def _row(self, data: st.DataObject) -> Delivery | None:
        pick = data.draw(st.integers(min_value=0, max_value=5))  # drawn whatever the state: replays agree
        alive = self.session.scalars(
            select(Delivery).where(Delivery.campaign_id == self.campaign_id).order_by(Delivery.id)
        ).all()
        return alive[pick % len(alive)] if alive else None

    @rule(data=st.data())
    def open_it(self, data: st.DataObject) -> None:
        if (row := self._row(data)) is not None:
            tracking.record_open(self.session, self.tokens, token=self.tokens.make(TokenPurpose.track, row.id))

    @rule(data=st.data())
    def click_a_link(self, data: st.DataObject) -> None:
        position = data.draw(st.integers(min_value=1, max_value=3))
        if (row := self._row(data)) is not None and position <= self.links:
            token = click_token(self.tokens.make(TokenPurpose.track, row.id), position)
            tracking.record_click(self.session, self.tokens, token=token)

    @rule(data=st.data(), hard=st.booleans())
    def bounce_it(self, data: st.DataObject, hard: bool) -> None:
        if (row := self._row(data)) is not None:
            bounce(self.session, self.settings, row, hard=hard)

    @rule(data=st.data())
    def complain(self, data: st.DataObject) -> None:
        if (row := self._row(data)) is not None:
            tracking.record_complaint(self.session, row.id, detail="feedback report: abuse")

    @rule(data=st.data(), hours=st.integers(min_value=1, max_value=200))
    def an_event_some_hours_ago(self, data: st.DataObject, hours: int) -> None:
        kind = data.draw(st.sampled_from([EventType.open, EventType.click, EventType.unsubscribe]))
        if (row := self._row(data)) is not None:
            self.session.add(
                Event(
                    type=kind,
                    campaign_id=row.campaign_id,
                    delivery_id=row.id,
                    subscriber_id=row.subscriber_id,
                    list_id=row.list_id,
                    created_at=utcnow() - dt.timedelta(hours=hours),
                )
            )

    @rule(data=st.data())
    def erase_someone(self, data: st.DataObject) -> None:
        if (row := self._row(data)) is not None:
            self.session.delete(self.session.get(Subscriber, row.subscriber_id))
            self.session.flush()

    @rule()
    def sweep(self) -> None:
        delivery.sweep(self.session, self.settings)

    @invariant()
    def counters_equal_a_scan(self) -> None:
        agree(self.session, self.campaign_id)


def test_counters_equal_a_scan_after_any_sequence_of_events(session: Session, settings: Settings) -> None:
    EventMachine.session = session
    EventMachine.settings = settings
    run_state_machine_as_test(
        EventMachine,
        settings=hsettings(
            max_examples=10,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
