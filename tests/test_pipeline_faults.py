"""Faults under a live worker fleet: a flaky SMTP server, and Redis or PostgreSQL restarted mid-campaign."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import make_engine, session_scope
from newsletter.migrate import upgrade
from newsletter.models import (
    TERMINAL_DELIVERY_STATUSES,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from tests.factories import make_list, publish_sample
from tests.processes import PrivatePostgres, PrivateRedis, add_subscribers, enqueue, running_workers, wait_until
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

BOUNCING = {f"r{i}@example.com" for i in (3, 50, 120, 200, 280)}


def plan(settings: Settings, recipients: int) -> tuple[int, list[str]]:
    with session_scope(settings) as session:
        weekly = make_list(session, slug="weekly")
        emails = add_subscribers(session, weekly, recipients)
        digest = publish_sample(session)
        campaign_id = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id
    return campaign_id, emails


def campaign_status(settings: Settings, campaign_id: int) -> CampaignStatus:
    with session_scope(settings) as session:
        return delivery.get_campaign(session, campaign_id).status


def ledger(settings: Settings, campaign_id: int) -> dict[str, tuple[DeliveryStatus, int, int | None]]:
    with session_scope(settings) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.attempts, Delivery.smtp_code)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
    return {email: (status, attempts, code) for email, status, attempts, code in rows}


def run(settings: Settings, campaign_id: int, log_dir: Path, during: Callable[[], None] | None = None) -> float:
    """Two workers and a beat send the campaign; `during` runs meanwhile (e.g. restarts a server)."""
    with running_workers(settings, "fault", log_dir):
        started = time.monotonic()
        enqueue(settings, "worker.tasks.start_campaign", campaign_id)
        if during is not None:
            during()
        wait_until(lambda: campaign_status(settings, campaign_id) == CampaignStatus.finished, 90, "finish", poll=0.5)
        return time.monotonic() - started


def check_exactly_once(smtp: RecordingSMTPServer, rows: dict[str, tuple[DeliveryStatus, int, int | None]]) -> Counter:
    received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
    missing = [e for e, (s, _, _) in rows.items() if s not in TERMINAL_DELIVERY_STATUSES]
    missing += [e for e, (s, _, _) in rows.items() if s == DeliveryStatus.sent and received[e] == 0]
    assert missing == []
    assert [e for e, n in received.items() if n > 1] == []
    return received


class Flaky:
    """~20% of messages answered 421/451/452 at random, the BOUNCING addresses always 550 5.1.1."""

    def __init__(self) -> None:
        self.rng = random.Random(4)
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()

    def __call__(self, rcpt: str) -> str | None:
        with self.lock:
            if rcpt in BOUNCING:
                answer: str | None = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
            else:
                roll = self.rng.random()
                answer = (
                    "421 4.7.0 Too many messages, slow down"
                    if roll < 0.015
                    else "451 4.3.0 Temporary lookup failure"
                    if roll < 0.12
                    else "452 4.3.1 Insufficient system storage"
                    if roll < 0.20
                    else None
                )
            if answer:
                self.served[answer[:3]] += 1
            return answer


def test_flaky_smtp_server_retries_soft_failures_and_suppresses_hard_bounces(
    make_settings: Callable[..., Settings], committed_pg: str, redis_url: str, tmp_path: Path
) -> None:
    flaky = Flaky()
    with RecordingSMTPServer(pipelining=True, responses=flaky, respond_at="data") as smtp:
        settings = make_settings(
            database_url=committed_pg,
            broker_url=redis_url,
            smtp_url=smtp.url,
            retry_base_seconds=0.2,
            retry_max_attempts=10,
            claim_lease_seconds=120,
        )
        campaign_id, emails = plan(settings, 300)
        seconds = run(settings, campaign_id, tmp_path)
        rows = ledger(settings, campaign_id)
        received = check_exactly_once(smtp, rows)

    attempts = [a for _, a, _ in rows.values()]
    print(
        f"\nfault test (flaky SMTP): {len(emails)} recipients in {seconds:.1f}s; server answered {dict(flaky.served)}; "
        f"ledger {Counter(s.value for s, _, _ in rows.values())}; "
        f"rows retried {sum(1 for a in attempts if a > 1)}, max attempts {max(attempts)}"
    )
    assert flaky.served["421"] and flaky.served["451"] and flaky.served["452"]
    for address in emails:
        status, attempts, code = rows[address]
        if address in BOUNCING:
            assert (status, attempts, code) == (DeliveryStatus.failed, 1, 550)  # never retried
            assert received[address] == 0
        else:
            assert status == DeliveryStatus.sent and received[address] == 1
    with session_scope(settings) as session:
        hard = select(Suppression.email).where(Suppression.reason == SuppressionReason.hard_bounce)
        suppressed = set(session.scalars(hard))
    assert suppressed == BOUNCING


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    engine = make_engine(server.url)
    upgrade(engine)
    engine.dispose()
    yield server
    server.destroy()


def restart_when(smtp: RecordingSMTPServer, count: int, restart: Callable[[], None]) -> Callable[[], None]:
    def during() -> None:
        wait_until(lambda: len(smtp.messages) >= count, 60, f"{count} messages before the restart")
        restart()

    return during


@pytest.mark.parametrize("server", ["redis", "postgres"])
def test_restarting_redis_or_postgres_mid_campaign_loses_nobody(
    server: str,
    make_settings: Callable[..., Settings],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    recipients = 1500
    with RecordingSMTPServer(pipelining=True) as smtp:
        if server == "redis":
            restarted: PrivateRedis | PrivatePostgres = request.getfixturevalue("private_redis")
            database = request.getfixturevalue("committed_pg")
            broker = restarted.url  # type: ignore[union-attr]
        else:
            restarted = request.getfixturevalue("private_pg")
            database = restarted.url
            broker = request.getfixturevalue("redis_url")
        settings = make_settings(database_url=database, broker_url=broker, smtp_url=smtp.url, claim_lease_seconds=10)
        campaign_id, _ = plan(settings, recipients)
        seconds = run(settings, campaign_id, tmp_path, restart_when(smtp, recipients // 3, restarted.restart))
        rows = ledger(settings, campaign_id)
        received = check_exactly_once(smtp, rows)
    counts = Counter(s.value for s, _, _ in rows.values())
    print(
        f"\nfault test ({server} restarted mid-campaign): {recipients} recipients in {seconds:.1f}s; "
        f"received {sum(received.values())}; missing 0, duplicates 0; ledger {dict(counts)}"
    )
    assert len(rows) == recipients
    assert counts["unknown"] <= 2 * 50  # at most one group per worker was in flight
