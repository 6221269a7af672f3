"""The recovery sweep has its own queue: with thousands of batches waiting in theirs, a real Celery worker on
Redis still runs the sweep that a real Celery beat enqueued, and recovers a dead host's rows long before
the batches' queue drains (when both shared one queue, the sweep waited behind every batch)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import select, update

from bench.workers import settings_env
from newsletter import delivery, queues
from newsletter.config import Settings
from newsletter.db import session_scope, utcnow
from newsletter.models import Delivery, DeliveryStatus
from tests.conftest import ROOT
from tests.factories import make_list, publish_sample
from tests.processes import CeleryWorker, add_subscribers, wait_until

pytestmark = pytest.mark.postgres
WAITING_BATCHES = 3000


def fill_batch_queue(settings: Settings, campaign_id: int, count: int) -> None:
    """`count` batch tasks in the batches' queue, sent over one connection."""
    client = Celery(broker=settings.broker_url)
    try:
        with client.connection_for_write() as connection:
            for _ in range(count):
                client.send_task(
                    "worker.tasks.send_batch", args=[campaign_id, 1, 1], queue=queues.BATCHES, connection=connection
                )
    finally:
        client.close()


def statuses(settings: Settings, campaign_id: int) -> set[DeliveryStatus]:
    with session_scope(settings) as session:
        return set(session.scalars(select(Delivery.status).where(Delivery.campaign_id == campaign_id)))


@pytest.mark.serial
def test_the_sweep_runs_while_the_batch_queue_holds_thousands(
    make_settings: Callable[..., Settings], committed_pg: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=committed_pg, broker_url=redis_url, claim_lease_seconds=10, sweep_interval_seconds=1
    )
    with session_scope(settings) as session:
        weekly = make_list(session, slug="weekly")
        add_subscribers(session, weekly, 20)
        slug = publish_sample(session).slug
        dead = delivery.create_campaign(session, digest_slug=slug, list_slugs=["weekly"])
        delivery.start(session, settings, dead.id)
        # a worker host that died an hour ago in the middle of its claim
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == dead.id)
            .values(status=DeliveryStatus.sending, claimed_at=utcnow() - dt.timedelta(hours=1), claimed_by="gone:1")
        )
        done = delivery.create_campaign(session, digest_slug=slug, list_slugs=["weekly"], allow_repeat=True)
        delivery.start(session, settings, done.id)
        delivery.cancel(session, done.id)  # its batches find nothing to send: they only take their turn
    fill_batch_queue(settings, done.id, WAITING_BATCHES)
    broker = redis.Redis.from_url(redis_url)
    with (tmp_path / "beat.log").open("ab") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "--schedule", str(tmp_path / "beat-schedule")],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = CeleryWorker(settings, "housekeeping", tmp_path)  # started as documented: it consumes both queues
    try:
        # beat routes the sweep to the housekeeping queue, not behind the batches
        wait_until(lambda: int(broker.llen(queues.HOUSEKEEPING)) > 0, 60, "beat's first sweep")
        assert int(broker.llen(queues.BATCHES)) == WAITING_BATCHES
        worker.start()
        wait_until(lambda: statuses(settings, dead.id) == {DeliveryStatus.unknown}, 120, "the sweep's recovery")
        still_waiting = int(broker.llen(queues.BATCHES))
        assert still_waiting > WAITING_BATCHES // 2, still_waiting  # shared, it would have been 0 by now
    except BaseException:
        print(worker.log_tail(), (tmp_path / "beat.log").read_text(errors="replace")[-2000:])
        raise
    finally:
        worker.stop()
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
        broker.close()
