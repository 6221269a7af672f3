"""The guarantee, under kill -9: nobody silently skipped, and two copies only inside the reported unknown set."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.delivery import counters, ledger, progress
from newsletter.models import CampaignStatus, Delivery, DeliveryStatus, Subscriber
from tests.factories import make_list, publish_sample
from tests.processes import CeleryWorker, add_subscribers, enqueue, running_workers, wait_until
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RECIPIENTS = 3000
KILLS = 4
LEASE_SECONDS = 10


@pytest.fixture
def pipelined_smtp() -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer(pipelining=True) as server:
        yield server


def worker_pid_sending(settings: Settings, campaign_id: int, workers: list[CeleryWorker]) -> CeleryWorker | None:
    """A worker that has rows claimed right now, so killing it lands mid-send."""
    with session_scope(settings) as session:
        owners = set(
            session.scalars(
                select(Delivery.claimed_by).where(
                    Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sending
                )
            )
        )
    pids = {owner.rsplit(":", 2)[1] for owner in owners if owner}  # host:pid:run
    return next((w for w in workers if w.process is not None and str(w.process.pid) in pids), None)


def run_campaign_with_kills(
    settings: Settings, smtp: RecordingSMTPServer, log_dir: Path, emails: list[str], campaign_id: int
) -> tuple[int, float]:
    with running_workers(settings, "crash", log_dir) as workers:
        started = time.monotonic()
        enqueue(settings, "worker.tasks.start_campaign", campaign_id)
        kills = 0
        for k in range(1, KILLS + 1):
            # spread the kills over the first two thirds of the campaign
            wait_until(lambda k=k: len(smtp.messages) >= k * RECIPIENTS // (KILLS + 2), 60, f"kill {k} point")
            deadline = time.monotonic() + 20
            while (victim := worker_pid_sending(settings, campaign_id, workers)) is None:
                assert time.monotonic() < deadline, "no worker had rows in flight"
                time.sleep(0.01)
            victim.kill()
            kills += 1
            victim.start()

        def finished() -> bool:
            with session_scope(settings) as session:
                return delivery.get_campaign(session, campaign_id).status == CampaignStatus.finished

        wait_until(finished, 60, "the campaign to finish", poll=0.5)
        return kills, time.monotonic() - started


@pytest.mark.parametrize("policy", ["skip", "resend"])
def test_kill_9_workers_mid_send(
    policy: str,
    make_settings: Callable[..., Settings],
    committed_pg: str,
    redis_url: str,
    pipelined_smtp: RecordingSMTPServer,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        database_url=committed_pg,
        broker_url=redis_url,
        smtp_url=pipelined_smtp.url,
        claim_lease_seconds=LEASE_SECONDS,
        unknown_policy=policy,
    )
    with session_scope(settings) as session:
        weekly = make_list(session, slug="weekly")
        emails = add_subscribers(session, weekly, RECIPIENTS)
        digest = publish_sample(session)
        campaign_id = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"]).id

    kills, seconds = run_campaign_with_kills(settings, pipelined_smtp, tmp_path, emails, campaign_id)

    received = Counter(r for m in pipelined_smtp.messages for r in m.rcpt_tos)
    with session_scope(settings) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.smtp_text)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
        # the counters survived the killed workers' connections (their shards) and the sweep's verdicts
        scanned = progress.tally(session, campaign_id)
        kept = counters.read(session, campaign_id)
        assert (kept.counts, kept.resent_after_unknown) == (scanned.counts, scanned.resent_after_unknown)
    status = {email: s for email, s, _ in rows}
    resent = {email for email, s, text in rows if s == DeliveryStatus.sent and text == ledger.RESENT_AFTER_UNKNOWN}
    unknown = {email for email, s in status.items() if s == DeliveryStatus.unknown}
    duplicates = {email for email, n in received.items() if n > 1}
    # missing: no terminal row, or a row says sent and the server never got it
    missing = [
        e
        for e in emails
        if status.get(e) not in (DeliveryStatus.sent, DeliveryStatus.unknown)
        or (status[e] == DeliveryStatus.sent and received[e] == 0)
    ]
    arrived_unknown = sum(1 for e in unknown if received[e])
    print(
        f"\ncrash test (policy={policy}): {RECIPIENTS} recipients, 2 workers, {kills} x kill -9 in {seconds:.1f}s: "
        f"received {sum(received.values())} messages for {len(received)} recipients; "
        f"missing={len(missing)} duplicates={len(duplicates)} unknown={len(unknown)} "
        f"(of which {arrived_unknown} did arrive) resent-after-unknown={len(resent)}; "
        f"ledger {Counter(s.value for s in status.values())}"
    )
    assert kills == KILLS
    assert len(status) == RECIPIENTS
    assert missing == []
    if policy == "skip":
        assert duplicates == set()  # nobody got two copies
        assert all(received[e] <= 1 for e in unknown)  # each unknown one honestly may or may not have arrived
        assert len(unknown) <= 100 * kills
        assert len(unknown) > 0  # every kill landed with rows in flight
    else:
        assert unknown == set()
        assert duplicates <= resent  # every second copy is in the reported set
        assert 0 < len(resent) <= 100 * kills
    assert all(received[e] == 1 for e, s in status.items() if s == DeliveryStatus.sent and e not in resent)
