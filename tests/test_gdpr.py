"""GDPR: export shows everything about a subscriber; erase leaves no personal data and no way to mail them."""

from __future__ import annotations

import pytest
from sqlalchemy import JSON, String, Text, cast, func, or_, select
from sqlalchemy.orm import Session

from newsletter import delivery, gdpr, subscribers, subscriptions, suppressions
from newsletter.db import Base
from newsletter.delivery import progress
from newsletter.delivery.ledger import plan
from newsletter.models import CampaignStatus, Delivery, DeliveryStatus, Event, EventType, Suppression, SuppressionReason
from tests.factories import make_list, make_subscriber, publish_sample

ADDRESS = "ana.erasable@example.com"
NAME = "Anastasia Erasable"


def personal_data_left(session: Session, *needles: str) -> list[str]:
    """Every text or JSON column of every table that still contains one of the needles."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if not isinstance(column.type, String | Text | JSON) and "JSON" not in type(column.type).__name__:
                continue
            as_text = func.lower(cast(column, Text))
            condition = or_(*(as_text.contains(needle.lower()) for needle in needles))
            if session.scalar(select(func.count()).select_from(table).where(condition)):
                found.append(f"{table.name}.{column.name}")
    return found


def test_export_then_erase(session: Session) -> None:
    weekly = make_list(session, slug="gdpr")
    ana = make_subscriber(session, weekly, ADDRESS, NAME)
    ana.attributes = {"city": "Erasetown", "nickname": NAME}
    subscription = subscriptions.add_subscription(
        session, weekly, ana, source=subscriptions.SubscriptionSource.form, confirmed=True, ip="203.0.113.9"
    )
    subscription.consent_ip = "203.0.113.9"
    bob = make_subscriber(session, weekly, "bob.stays@example.com", "Bob")
    digest = publish_sample(session)
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["gdpr"])
    campaign.status = CampaignStatus.finished
    session.flush()
    ledger = Delivery(
        campaign_id=campaign.id,
        subscriber_id=ana.id,
        list_id=weekly.id,
        status=DeliveryStatus.failed,
        smtp_code=550,
        smtp_text=f"550 5.1.1 <{ADDRESS}>: mailbox unavailable",
    )
    session.add(ledger)
    session.add(Delivery(campaign_id=campaign.id, subscriber_id=bob.id, list_id=weekly.id, status=DeliveryStatus.sent))
    session.flush()
    session.add(
        Event(
            type=EventType.bounce, campaign_id=campaign.id, delivery_id=ledger.id, subscriber_id=ana.id, detail=ADDRESS
        )
    )
    suppressions.suppress(session, ADDRESS, SuppressionReason.hard_bounce, detail=f"550 <{ADDRESS}>")
    session.flush()

    exported = gdpr.export_subscriber(session, ana)
    assert exported["subscriber"]["email"] == ADDRESS
    assert exported["subscriptions"][0]["consent_ip"] == "203.0.113.9"
    assert exported["deliveries"][0]["smtp_code"] == 550
    assert exported["events"][0]["type"] == "bounce"
    assert exported["suppression"]["reason"] == "hard_bounce"
    counts_before = progress.tally(session, campaign.id).counts

    gdpr.erase_subscriber(session, ana)

    assert personal_data_left(session, ADDRESS, NAME, "203.0.113.9", "Erasetown") == []
    # statistics are intact: the ledger row and the bounce are still counted
    assert progress.tally(session, campaign.id).counts == counts_before
    assert session.scalar(select(func.count()).select_from(Event).where(Event.type == EventType.bounce)) == 1
    suppression = session.scalar(select(Suppression).where(Suppression.email_hash == ana.email_hash))
    assert suppression is not None and suppression.email is None

    # never mailed again: not as the erased row, nor when the address comes back through a form or import
    again = subscribers.add_subscriber(session, "bob.new@example.com", list_slugs=["gdpr"], confirmed=True)
    with pytest.raises(subscribers.InvalidSubscriber, match="suppression"):
        subscribers.add_subscriber(session, ADDRESS, list_slugs=["gdpr"], confirmed=True)
    comeback = subscriptions.get_or_create_subscriber(session, ADDRESS)
    subscriptions.add_subscription(
        session, weekly, comeback, source=subscriptions.SubscriptionSource.form, confirmed=True
    )
    next_campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["gdpr"], allow_repeat=True)
    plan(session, next_campaign)
    planned = set(session.scalars(select(Delivery.subscriber_id).where(Delivery.campaign_id == next_campaign.id)).all())
    assert planned == {bob.id, again.id}
