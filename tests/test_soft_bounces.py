"""Soft bounces count: SOFT_BOUNCE_LIMIT of them (default 3) within SOFT_BOUNCE_DAYS (default 30) suppress
the address with reason soft_bounce, whichever way each bounce came (a DSN by mail, a provider's webhook,
a 5xx at send time); fewer, or older ones, do not. Both backends."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import bounces, delivery, providers
from newsletter.config import Settings
from newsletter.delivery import sending
from newsletter.mailer import MemoryMailer, SendResult
from newsletter.models import Delivery, Digest, Event, EventType, Subscriber, Suppression
from newsletter.providers import ProviderEvent
from tests.test_bounces import postfix_dsn, send_sample


def another_campaign(
    sessions: sessionmaker[Session], session: Session, settings: Settings, mailer: MemoryMailer | None = None
) -> dict[str, Delivery]:
    """The same list mailed again: the new campaign's ledger rows by address (the suppressed are not in it)."""
    digest = session.scalars(select(Digest.slug)).one()
    campaign = delivery.create_campaign(session, digest_slug=digest, list_slugs=["weekly"], allow_repeat=True)
    ranges = delivery.start(session, settings, campaign.id)
    session.commit()
    for batch in ranges:
        sending.send_batch(sessions, settings, mailer or MemoryMailer(), campaign.id, batch.first_id, batch.last_id)
    session.expire_all()
    rows = session.execute(
        select(Subscriber.email, Delivery).join(Subscriber).where(Delivery.campaign_id == campaign.id)
    )
    return {address: row for address, row in rows.all()}


def soft_bounce_by_mail(session: Session, settings: Settings, row: Delivery) -> str:
    [outcome] = bounces.ingest(session, settings, postfix_dsn(row.message_id or "", "r1@example.com", status="5.2.2"))
    session.commit()
    return outcome.result


def soft_bounce_by_webhook(session: Session, settings: Settings, row: Delivery) -> str:
    event = ProviderEvent("soft_bounce", "r1@example.com", message_id=row.message_id, status="4.2.2")
    [outcome] = providers.record(session, settings, [event])
    session.commit()
    return outcome.result


def suppressions(session: Session) -> list[tuple[str | None, str]]:
    session.expire_all()
    return [(s.email, s.reason.value) for s in session.scalars(select(Suppression))]


def test_three_soft_bounces_over_three_campaigns_suppress_and_two_do_not(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    first = send_sample(sessions, session, settings)
    assert soft_bounce_by_mail(session, settings, first["r1@example.com"]) == "recorded"
    # the same message reported again is the same bounce
    assert soft_bounce_by_mail(session, settings, first["r1@example.com"]) == "already recorded"
    second = another_campaign(sessions, session, settings)
    assert soft_bounce_by_webhook(session, settings, second["r1@example.com"]) == "recorded"
    assert suppressions(session) == []  # two soft bounces: the address stays
    third = another_campaign(sessions, session, settings)
    assert "r1@example.com" in third
    assert soft_bounce_by_mail(session, settings, third["r1@example.com"]) == "suppressed"
    [(address, reason)] = suppressions(session)
    assert (address, reason) == ("r1@example.com", "soft_bounce")
    assert session.scalar(select(Suppression.detail)) == "3 soft bounces within 30 days"
    fourth = another_campaign(sessions, session, settings)
    assert sorted(fourth) == ["r0@example.com", "r2@example.com", "r3@example.com"]


def test_soft_bounces_older_than_the_window_do_not_count(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    first = send_sample(sessions, session, settings)
    soft_bounce_by_mail(session, settings, first["r1@example.com"])
    second = another_campaign(sessions, session, settings)
    soft_bounce_by_mail(session, settings, second["r1@example.com"])
    session.execute(
        update(Event)
        .where(Event.type == EventType.bounce)
        .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=31))
    )
    session.commit()
    third = another_campaign(sessions, session, settings)
    assert soft_bounce_by_mail(session, settings, third["r1@example.com"]) == "recorded"
    assert suppressions(session) == []


def test_a_soft_refusal_at_send_time_counts_too(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    first = send_sample(sessions, session, settings)
    soft_bounce_by_mail(session, settings, first["r1@example.com"])
    second = another_campaign(sessions, session, settings)
    soft_bounce_by_webhook(session, settings, second["r1@example.com"])
    policy = SendResult(554, "5.7.1 Message rejected under policy: try again next week")
    refusing = MemoryMailer(lambda rcpt: policy if rcpt == "r1@example.com" else None)
    third = another_campaign(sessions, session, settings, refusing)
    assert third["r1@example.com"].smtp_code == 554
    assert suppressions(session) == [("r1@example.com", "soft_bounce")]


def test_a_limit_of_zero_never_suppresses_for_soft_bounces(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    settings = settings.model_copy(update={"soft_bounce_limit": 0})
    rows = send_sample(sessions, session, settings)
    for _ in range(3):
        soft_bounce_by_mail(session, settings, rows["r1@example.com"])
        rows = another_campaign(sessions, session, settings)
    assert suppressions(session) == []
