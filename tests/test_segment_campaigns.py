"""A campaign to lists ∩ segment through the real pipeline to aiosmtpd: the count shown before sending is
what arrives and what the ledger holds; then "resend to non-openers" with a new subject reaches only those
who did not open, minus whoever unsubscribed since. Both backends."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import delivery, segments, stats, subscribers, tracking
from newsletter.config import Settings
from newsletter.delivery import sending
from newsletter.mailer import SMTPMailer
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, SuppressionReason
from newsletter.suppressions import suppress
from newsletter.tokens import Tokens
from tests.factories import make_list, make_subscriber, publish_sample
from tests.smtpserver import RecordingSMTPServer


def _send(sessions: sessionmaker[Session], session: Session, settings: Settings, smtp: RecordingSMTPServer,
          campaign_id: int) -> None:  # fmt: skip
    ranges = delivery.start(session, settings, campaign_id)
    session.commit()
    for batch in ranges:
        sending.send_batch(sessions, settings, SMTPMailer(smtp.url), campaign_id, batch.first_id, batch.last_id)
    delivery.finish_if_done(session, campaign_id)
    session.commit()


def _ledger(session: Session, campaign_id: int) -> dict[str, str]:
    session.expire_all()
    rows = session.execute(
        select(Delivery.subscriber_id, Delivery.status).where(Delivery.campaign_id == campaign_id)
    ).all()
    return {str(sid): status.value for sid, status in rows}


def test_segment_audience_then_resend_to_non_openers(
    sessions: sessionmaker[Session], session: Session, settings: Settings
) -> None:
    weekly = make_list(session, slug="weekly")
    people = {}
    for name, city in [("ana", "Almaty"), ("bo", "Almaty"), ("cy", "Almaty"), ("di", "Almaty"), ("ed", "Astana")]:
        people[name] = make_subscriber(session, weekly, email=f"{name}@example.com")
        people[name].attributes = {"city": city}
    make_subscriber(session, weekly, email="fay@example.com", confirmed=False).attributes = {"city": "Almaty"}
    suppress(session, "di@example.com", SuppressionReason.manual)
    digest = publish_sample(session)
    segments.create(session, "almaty", {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}})
    session.commit()

    shown = stats.reach(session, ["weekly"], "almaty")
    assert shown == 3  # fay is unconfirmed, di suppressed, ed in Astana
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"], segment="almaty")
    campaign_id = campaign.id
    assert campaign.segment_filter == {"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}
    session.commit()
    with RecordingSMTPServer() as smtp:
        _send(sessions, session, settings, smtp, campaign_id)
        first = smtp.wait_for(3)
    arrived = sorted(rcpt for m in first for rcpt in m.rcpt_tos)
    assert arrived == ["ana@example.com", "bo@example.com", "cy@example.com"]
    assert len(_ledger(session, campaign_id)) == shown
    assert session.get(Campaign, campaign_id).status == CampaignStatus.finished  # type: ignore[union-attr]

    # ana opens (the pixel in the copy she received); cy unsubscribes; bo does nothing
    html = next(m for m in first if m.rcpt_tos == ("ana@example.com",)).message.get_body(("html",))
    pixel = re.search(r"/o/([A-Za-z0-9_.\-]+)", html.get_content())  # type: ignore[union-attr]
    assert pixel is not None
    assert tracking.record_open(session, Tokens(settings.secret_key), token=pixel[1])
    subscribers.unsubscribe(session, people["cy"])
    session.commit()

    again = delivery.resend_to_non_openers(session, campaign_id, subject="In case you missed it")
    again_id = again.id
    assert again.segment_filter == {"received": {"campaign": campaign_id, "opened": False}}
    assert stats.reach(session, ["weekly"]) == 3 and again.segment_id is None
    session.commit()
    with RecordingSMTPServer() as smtp:
        _send(sessions, session, settings, smtp, again_id)
        second = smtp.wait_for(1)
    assert [m.rcpt_tos for m in second] == [("bo@example.com",)]
    assert second[0].message["Subject"] == "In case you missed it"
    assert _ledger(session, again_id) == {str(people["bo"].id): DeliveryStatus.sent.value}


def test_resend_to_non_openers_needs_a_finished_campaign(session: Session, settings: Settings) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    draft = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"])
    before = session.scalar(select(func.count()).select_from(Campaign))
    with pytest.raises(delivery.CampaignError, match="never started sending"):
        delivery.resend_to_non_openers(session, draft.id)
    assert session.scalar(select(func.count()).select_from(Campaign)) == before


def test_a_deleted_segment_leaves_its_campaigns_their_filter(session: Session) -> None:
    make_list(session, slug="weekly")
    digest = publish_sample(session)
    segments.create(session, "vip", {"attribute": {"name": "vip", "op": "eq", "value": True}})
    campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"], segment="vip")
    segments.delete(session, "vip")
    session.refresh(campaign)
    assert campaign.segment_id is None
    assert campaign.segment_filter == {"attribute": {"name": "vip", "op": "eq", "value": True}}
