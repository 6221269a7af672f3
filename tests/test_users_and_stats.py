"""Users and tokens in the domain; campaign reports and resends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import delivery, stats, users
from newsletter.config import Settings
from newsletter.models import (
    ApiToken,
    CampaignCount,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    Link,
    Role,
)
from tests.factories import make_list, make_subscribers, publish_sample


def test_tokens_are_stored_hashed_and_last_use_is_throttled(session: Session) -> None:
    issued = users.create_user(session, "alice", Role.admin)
    row = session.scalars(select(ApiToken)).one()
    assert issued.token not in (row.token_hash, row.prefix) and row.prefix == issued.token[:12]
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert users.authenticate(session, issued.token, now=now).name == "alice"
    session.expire_all()
    users.authenticate(session, issued.token, now=now + dt.timedelta(seconds=30))
    session.expire_all()
    assert session.get(ApiToken, row.id).last_used_at == now  # type: ignore[union-attr]
    users.authenticate(session, issued.token, now=now + dt.timedelta(minutes=2))
    session.expire_all()
    assert session.get(ApiToken, row.id).last_used_at == now + dt.timedelta(minutes=2)  # type: ignore[union-attr]
    with pytest.raises(users.AuthenticationFailed):
        users.authenticate(session, issued.token + "x")
    with pytest.raises(users.InvalidUser, match="admin or editor"):
        users.create_user(session, "bob", "owner")


def test_campaign_report_and_resend_never_touch_sent_rows(session: Session, settings: Settings) -> None:
    weekly = make_list(session)
    readers = make_subscribers(session, weekly, 4)
    digest = publish_sample(session)
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=[weekly.slug])
    campaign.status = CampaignStatus.finished
    campaign.started_at = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC)
    campaign.finished_at = campaign.started_at + dt.timedelta(seconds=10)
    statuses = [DeliveryStatus.sent, DeliveryStatus.sent, DeliveryStatus.failed, DeliveryStatus.unknown]
    rows = [
        Delivery(
            campaign_id=campaign.id,
            subscriber_id=r.id,
            list_id=weekly.id,
            status=s,
            attempts=3,
            sent_at=campaign.started_at + dt.timedelta(seconds=4) if s == DeliveryStatus.sent else None,
        )
        for r, s in zip(readers, statuses, strict=True)
    ]
    session.add_all(rows)
    link = Link(campaign_id=campaign.id, position=1, url="https://example.com/a")
    session.add(link)
    session.flush()
    # opens and clicks name their delivery, as the tracking path records them (readers count per delivery)
    for row, reader in zip(rows[:2], readers[:2], strict=True):
        for _ in range(2):
            session.add(
                Event(type=EventType.open, campaign_id=campaign.id, delivery_id=row.id, subscriber_id=reader.id)
            )
    session.add(
        Event(
            type=EventType.click,
            campaign_id=campaign.id,
            delivery_id=rows[0].id,
            subscriber_id=readers[0].id,
            link_id=link.id,
        )
    )
    session.add(Event(type=EventType.unsubscribe, campaign_id=campaign.id, subscriber_id=readers[1].id))
    session.add(Event(type=EventType.bounce, campaign_id=campaign.id, subscriber_id=readers[2].id))
    session.flush()

    report = stats.campaign_report(session, campaign.id)
    assert report["counts"] == {"pending": 0, "sending": 0, "sent": 2, "failed": 1, "unknown": 1, "skipped": 0}
    assert (report["opens"], report["unique_opens"], report["unsubscribes"], report["bounces"]) == (4, 2, 1, 1)
    assert report["links"] == [{"url": "https://example.com/a", "clicks": 1, "unique_clicks": 1}]
    assert report["duration_seconds"] == 10 and report["send_rate_per_second"] == 0.5

    page = stats.ledger_page(session, campaign.id, statuses=[DeliveryStatus.failed])
    assert [item["subscriber_id"] for item in page.items] == [readers[2].id]
    first = stats.ledger_page(session, campaign.id, limit=3)
    second = stats.ledger_page(session, campaign.id, after=first.next_cursor, limit=3)
    assert len(first.items) == 3 and len(second.items) == 1 and second.next_cursor is None

    with pytest.raises(delivery.CampaignError, match="never sent twice"):
        stats.resend(session, settings, campaign.id, ["sent"])
    moved, ranges = stats.resend(session, settings, campaign.id, ["failed", "unknown"])
    assert moved == 2 and ranges
    session.expire_all()
    assert delivery.get_campaign(session, campaign.id).status == CampaignStatus.sending
    after = {d.subscriber_id: (d.status, d.attempts) for d in session.scalars(select(Delivery))}
    assert after[readers[0].id] == (DeliveryStatus.sent, 3)
    assert after[readers[2].id] == (DeliveryStatus.pending, 0) and after[readers[3].id] == (DeliveryStatus.pending, 0)


def test_a_campaigns_totals_are_read_from_its_counters_and_always_current(session: Session) -> None:
    weekly = make_list(session)
    readers = make_subscribers(session, weekly, 3)
    campaign = delivery.create_campaign(session, digest_slug=publish_sample(session).slug, list_slugs=[weekly.slug])
    session.add_all(Delivery(campaign_id=campaign.id, subscriber_id=r.id, list_id=weekly.id) for r in readers)
    session.flush()
    assert stats.campaign_report(session, campaign.id)["counts"]["pending"] == 3
    one = select(Delivery.id).where(Delivery.status == DeliveryStatus.pending).limit(1).scalar_subquery()
    session.execute(Delivery.__table__.update().where(Delivery.id == one).values(status=DeliveryStatus.sent))
    assert stats.campaign_report(session, campaign.id)["counts"] == {
        "pending": 2, "sending": 0, "sent": 1, "failed": 0, "unknown": 0, "skipped": 0,
    }  # fmt: skip
    # read from a few counter rows, not by scanning the ledger
    assert session.scalar(select(func.count()).where(CampaignCount.campaign_id == campaign.id)) == 2
