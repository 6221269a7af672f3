"""End to end: a real Celery worker on Redis sends a digest through a real SMTP server; one-click unsubscribe."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.delivery import counters, progress
from newsletter.models import (
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    Subscription,
    SubscriptionStatus,
)
from newsletter.web import create_app
from tests.factories import make_list, make_subscribers, publish_sample
from tests.processes import CeleryWorker, enqueue
from tests.smtpserver import RecordingSMTPServer

RECIPIENTS = 25


@pytest.fixture
def pipeline_settings(
    make_settings: Callable[..., Settings], committed_pg: str, redis_url: str, smtp_server: RecordingSMTPServer
) -> Settings:
    return make_settings(database_url=committed_pg, broker_url=redis_url, smtp_url=smtp_server.url)


@pytest.fixture
def celery_worker(pipeline_settings: Settings, tmp_path: Path) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(pipeline_settings, "e2e", tmp_path, concurrency=2).start()
    yield worker
    worker.stop()
    print(worker.log_tail(5000))  # shown by pytest when the test fails


def wait_finished(settings: Settings, campaign_id: int, timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings) as session:
            campaign = delivery.get_campaign(session, campaign_id)
            if campaign.status == CampaignStatus.finished:
                scanned = progress.tally(session, campaign_id).counts
                # the counters the real workers' connections kept (each its own rows) agree with a scan
                assert counters.read(session, campaign_id).counts == scanned
                return scanned
        time.sleep(0.2)
    raise AssertionError(f"campaign {campaign_id} did not finish within {timeout}s")


def test_worker_sends_each_recipient_one_copy_and_one_click_unsubscribe_sticks(
    pipeline_settings: Settings, smtp_server: RecordingSMTPServer, celery_worker: CeleryWorker
) -> None:
    settings = pipeline_settings
    with session_scope(settings) as session:
        weekly = make_list(session, slug="weekly")
        people = make_subscribers(session, weekly, RECIPIENTS)
        digest = publish_sample(session)
        first = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id
        addresses = sorted(p.email for p in people)

    enqueue(settings, "worker.tasks.start_campaign", first)
    counts = wait_finished(settings, first)
    assert counts["sent"] == RECIPIENTS and counts["pending"] == counts["sending"] == 0

    received = smtp_server.wait_for(RECIPIENTS)
    assert sorted(r for m in received for r in m.rcpt_tos) == addresses  # exactly one copy each
    leaver = received[0]
    message = leaver.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.search(r"<(https://news\.example\.org/unsubscribe/[^>]+)>", message["List-Unsubscribe"])
    assert match, message["List-Unsubscribe"]

    # Exactly what Gmail sends: a form-encoded POST to the header's URL, no cookies, no auth.
    with TestClient(create_app(settings)) as client:
        path = match.group(1).removeprefix(settings.base_url)
        response = client.post(
            path,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200

    with session_scope(settings) as session:
        subscription = session.scalars(
            select(Subscription)
            .join(Subscription.subscriber)
            .where(
                Subscription.list_id == weekly.id,
                Subscription.subscriber.has(email=leaver.rcpt_tos[0]),
            )
        ).one()
        assert subscription.status == SubscriptionStatus.unsubscribed
        assert subscription.unsubscribe_source == "one-click"
        second = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"], allow_repeat=True).id

    smtp_server.clear()
    enqueue(settings, "worker.tasks.start_campaign", second)
    counts = wait_finished(settings, second)
    assert counts["sent"] == RECIPIENTS - 1
    received = smtp_server.wait_for(RECIPIENTS - 1)
    assert leaver.rcpt_tos[0] not in {r for m in received for r in m.rcpt_tos}
    with session_scope(settings) as session:
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == second)).all()
        assert all(row.status == DeliveryStatus.sent and row.message_id for row in rows)
        assert len({row.message_id for row in rows}) == len(rows)
        events = session.scalars(
            select(Event).where(Event.type == EventType.unsubscribe, Event.subscriber_id == subscription.subscriber_id)
        ).all()
        assert [e.detail for e in events] == ["one-click"]
