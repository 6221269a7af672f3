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
from newsletter.db import session_scope, utcnow
from newsletter.models import Delivery, DeliveryStatus, Subscriber, Subscription
from tests.factories import make_list
from tests.processes import add_subscribers, enqueue, running_workers, wait_until
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

        with running_workers(settings, "seq", tmp_path, count=1) as [worker]:
            enqueue(settings, "worker.tasks.sweep")  # what beat does; it plans the due welcome step

            def in_flight() -> bool:
                with session_scope(settings) as session:
                    sending = select(Delivery.id).where(
                        Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.sending
                    )
                    return len(smtp.messages) > RECIPIENTS // 3 and session.scalar(sending.limit(1)) is not None

            wait_until(in_flight, 60, "a third of the welcome emails, and some in flight", poll=0.01)
            worker.kill()
            # the sweep as it runs once the dead worker's lease is over: the clock is moved, not waited for
            with session_scope(settings) as session:
                later = utcnow() + dt.timedelta(seconds=LEASE_SECONDS + 1)
                assert delivery.sweep(session, settings, now=later).unknown > 0
            worker.start()  # the beat's next sweeps re-enqueue the rows still pending

            def settled() -> bool:
                with session_scope(settings) as session:
                    busy = session.scalar(
                        select(Delivery.id)
                        .where(
                            Delivery.campaign_id == campaign_id,
                            Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.sending]),
                        )
                        .limit(1)
                    )
                    return busy is None

            wait_until(settled, 60, "every welcome email to be settled", poll=0.5)

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
