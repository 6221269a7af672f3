"""Pause, resume and cancel a campaign while two live workers are sending it: never a second copy."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.delivery import progress
from newsletter.models import CampaignStatus, Delivery, DeliveryStatus, Subscriber
from tests.factories import make_list, publish_sample
from tests.processes import add_subscribers, enqueue, running_workers, wait_until
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RECIPIENTS = 1500


def in_flight(settings: Settings, campaign_id: int) -> int:
    with session_scope(settings) as session:
        return (
            session.scalar(
                select(func.count()).where(
                    Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sending
                )
            )
            or 0
        )


def test_pause_resume_then_cancel_under_live_workers(
    make_settings: Callable[..., Settings], committed_pg: str, redis_url: str, tmp_path: Path
) -> None:
    with RecordingSMTPServer(pipelining=True) as smtp:
        settings = make_settings(database_url=committed_pg, broker_url=redis_url, smtp_url=smtp.url)
        with session_scope(settings) as session:
            weekly = make_list(session, slug="weekly")
            add_subscribers(session, weekly, RECIPIENTS)
            digest = publish_sample(session)
            campaign_id = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id

        with running_workers(settings, "control", tmp_path):
            enqueue(settings, "worker.tasks.start_campaign", campaign_id)
            wait_until(lambda: len(smtp.messages) >= RECIPIENTS // 5, 60, "the first fifth")
            with session_scope(settings) as session:
                delivery.pause(session, campaign_id)
            # the groups in flight finish; after that nothing moves while paused
            wait_until(lambda: in_flight(settings, campaign_id) == 0, 20, "in-flight groups to finish")
            at_pause = len(smtp.messages)
            time.sleep(2)
            assert len(smtp.messages) == at_pause, "a paused campaign kept sending"
            with session_scope(settings) as session:
                counts = progress.tally(session, campaign_id).counts
                assert delivery.get_campaign(session, campaign_id).status == CampaignStatus.paused
            assert counts["sending"] == 0 and counts["pending"] == RECIPIENTS - at_pause

            with session_scope(settings) as session:
                ranges = delivery.resume(session, settings, campaign_id)
            for batch in ranges:  # what `campaigns resume` does after its commit
                enqueue(settings, "worker.tasks.send_batch", batch.campaign_id, batch.first_id, batch.last_id)
            wait_until(lambda: len(smtp.messages) >= RECIPIENTS * 3 // 5, 60, "three fifths")
            with session_scope(settings) as session:
                delivery.cancel(session, campaign_id)
            wait_until(lambda: in_flight(settings, campaign_id) == 0, 20, "in-flight groups to finish")
            at_cancel = len(smtp.messages)
            time.sleep(2)
            assert len(smtp.messages) == at_cancel, "a cancelled campaign kept sending"

        received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
        with session_scope(settings) as session:
            rows = dict(
                session.execute(
                    select(Subscriber.email, Delivery.status)
                    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                    .where(Delivery.campaign_id == campaign_id)
                ).all()
            )
            status = delivery.get_campaign(session, campaign_id).status
    ledger = Counter(s.value for s in rows.values())
    print(
        f"\npause/resume/cancel: {RECIPIENTS} recipients; {at_pause} sent when paused, {at_cancel} when cancelled; "
        f"received {sum(received.values())} for {len(received)} recipients; ledger {dict(ledger)}"
    )
    assert status == CampaignStatus.cancelled
    assert [e for e, n in received.items() if n > 1] == []  # nobody got two copies
    assert {e for e, s in rows.items() if s == DeliveryStatus.sent} == set(received)
    assert ledger["skipped"] == RECIPIENTS - at_cancel > 0  # the cancelled ones got nothing
    assert ledger["pending"] == ledger["sending"] == 0
