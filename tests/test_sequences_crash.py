"""A sequence step under kill -9: the welcome step goes through the campaign pipeline, so a worker killed
mid-send skips nobody and doubles no one outside the reported `unknown` rows (as tests/test_pipeline_crash.py
proves for campaigns, here in one small case)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter import delivery, sequences
from newsletter.config import Settings
from newsletter.db import session_factory, session_scope, utcnow
from newsletter.delivery import sending
from newsletter.mailer import SMTPMailer
from newsletter.models import Delivery, DeliveryStatus, Subscriber, Subscription
from tests.factories import make_list
from tests.processes import CeleryWorker, add_subscribers, enqueue, wait_until
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RECIPIENTS = 150
LEASE_SECONDS = 10


def slowly(rcpt: str) -> None:
    time.sleep(0.004)  # a slow relay: the kill lands while messages are in flight


def test_kill_9_mid_welcome_skips_nobody_and_doubles_only_unknown_rows(
    make_settings: Callable[..., Settings], committed_pg: str, redis_url: str, tmp_path: Path
) -> None:
    with RecordingSMTPServer(responses=slowly) as smtp:  # type: ignore[arg-type]
        settings = make_settings(
            database_url=committed_pg,
            broker_url=redis_url,
            smtp_url=smtp.url,
            claim_lease_seconds=LEASE_SECONDS,
            outcome_flush_count=10,
            batch_size=50,
        )
        with session_scope(settings) as session:
            weekly = make_list(session, slug="weekly")
            sequences.create_sequence(session, "weekly")
            step = sequences.add_step(session, settings, "weekly", subject="Welcome", body="Glad you are here.")
            campaign_id = step.campaign_id
            sequences.enable(session, "weekly")
            emails = add_subscribers(session, weekly, RECIPIENTS)
            session.execute(update(Subscription).values(confirmed_at=utcnow()))  # confirmed after it was on

        worker = CeleryWorker(settings, "seq", tmp_path).start()
        try:
            enqueue(settings, "worker.tasks.sweep")  # what beat does; it plans the due welcome step

            def in_flight() -> bool:
                with session_scope(settings) as session:
                    sending_now = select(Delivery.id).where(
                        Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sending
                    )
                    return len(smtp.messages) > RECIPIENTS // 3 and session.scalar(sending_now.limit(1)) is not None

            wait_until(in_flight, 60, "a third of the welcome emails, and some in flight", poll=0.01)
            worker.kill()
        except BaseException:
            print(worker.log_tail())
            raise
        finally:
            worker.stop()
        # The next sweep once the dead worker's lease is over (the clock is moved, not waited for), and the
        # batches it gives back, sent here by the same code a restarted worker runs.
        with session_scope(settings) as session:
            report = delivery.sweep(session, settings, now=utcnow() + dt.timedelta(seconds=LEASE_SECONDS + 1))
        assert report.unknown > 0 and report.requeued
        for batch in report.requeued:
            sending.send_batch(
                session_factory(settings), settings, SMTPMailer(smtp.url), campaign_id, batch.first_id, batch.last_id
            )
        with session_scope(settings) as session:
            busy = select(Delivery.id).where(
                Delivery.campaign_id == campaign_id,
                Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.sending]),
            )
            assert session.scalar(busy.limit(1)) is None  # every welcome settled

    received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
    with session_scope(settings) as session:
        rows = dict(
            session.execute(
                select(Subscriber.email, Delivery.status)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.campaign_id == campaign_id)
            ).all()
        )
    assert len(rows) == RECIPIENTS  # one ledger row each, planned once whatever the sweeps did
    unknown = {e for e, s in rows.items() if s == DeliveryStatus.unknown}
    missing = [e for e in emails if rows[e] not in (DeliveryStatus.sent, DeliveryStatus.unknown)]
    missing += [e for e in emails if rows[e] == DeliveryStatus.sent and received[e] == 0]
    assert missing == []
    assert {e for e, n in received.items() if n > 1} <= unknown
    assert len(unknown) <= 2 * settings.outcome_flush_count  # in flight plus one unwritten group
