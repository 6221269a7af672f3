"""The inbox of provider webhook events: a verified request is accepted (on disk) before its 200 and
applied to the ledger afterwards, a batch at a time; a provider's retry of an event counts once, and a
crash between acceptance and processing, or in the middle of a batch, loses nothing and doubles nothing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, String, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.db import make_engine, session_factory, unit_of_work
from newsletter.migrate import upgrade
from newsletter.models import Delivery, DeliveryStatus, ProviderInboxEvent
from newsletter.providers import inbox
from newsletter.web.app import create_app
from tests.test_bounces import send_sample, state
from tests.test_cli import Cli
from tests.test_provider_webhooks import (  # noqa: F401 - fixtures
    POSTMARK_AUTH,
    Hooks,
    client,
    hook_settings,
    mailgun_body,
    mailgun_failure,
    postmark_bounce,
    sendgrid_key,
    sent,
    sns,
    status_of,
    suppressed,
)
from worker.embedded import EmbeddedScheduler

BASIC = tuple(POSTMARK_AUTH.split(":"))


def waiting(session: Session) -> list[tuple[str, str | None]]:
    session.expire_all()
    rows = session.scalars(select(ProviderInboxEvent).order_by(ProviderInboxEvent.id))
    return [(row.kind, row.result) for row in rows]


def test_an_accepted_event_waits_in_the_inbox_and_a_retry_of_it_counts_once(
    client: Hooks, session: Session, sessions: sessionmaker[Session], hook_settings: Settings,  # noqa: F811
    sent: dict[str, Delivery],  # noqa: F811
) -> None:  # fmt: skip
    body = postmark_bounce("r1@example.com", "pid-r1")
    before = state(session)
    answer = client.client.post("/webhooks/postmark", content=body, auth=BASIC)  # accepted, not yet applied
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "duplicates": 0, "confirmed_topic": None}
    assert state(session) == before and waiting(session) == [("hard_bounce", None)]
    # Postmark did not see the 200 (a timeout) and posts the same record again: a duplicate
    retry = client.client.post("/webhooks/postmark", content=body, auth=BASIC)
    assert retry.json() == {"accepted": 0, "duplicates": 1, "confirmed_topic": None}
    with unit_of_work(sessions) as work:
        [done] = inbox.process(work, hook_settings)
    assert (done.provider, done.outcome.result, done.outcome.delivery_id) == (
        "postmark",
        "suppressed",
        sent["r1@example.com"].id,
    )
    assert suppressed(session) == {"r1@example.com": "hard_bounce"}
    assert status_of(session, sent["r1@example.com"]) == DeliveryStatus.failed
    assert waiting(session) == [("hard_bounce", "suppressed")]
    after = state(session)
    with unit_of_work(sessions) as work:
        assert inbox.process(work, hook_settings) == []  # nothing is applied twice
    assert client.post("/webhooks/postmark", content=body, auth=BASIC).events == []
    assert state(session) == after


def test_processed_events_are_forgotten_after_the_configured_days(
    client: Hooks, session: Session, sessions: sessionmaker[Session], hook_settings: Settings,  # noqa: F811
    sent: dict[str, Delivery],  # noqa: F811
) -> None:  # fmt: skip
    assert client.post("/webhooks/postmark", content=postmark_bounce("r1@example.com", "pid-r1"), auth=BASIC).events
    client.client.post("/webhooks/postmark", content=postmark_bounce("r2@example.com", "pid-r2"), auth=BASIC)
    with unit_of_work(sessions) as work:
        [row] = work.scalars(select(ProviderInboxEvent).where(ProviderInboxEvent.processed_at.is_not(None)))
        assert inbox.prune(work, hook_settings, now=row.processed_at) == 0
        moment = row.processed_at + dt.timedelta(days=hook_settings.provider_inbox_days, seconds=1)
        assert inbox.prune(work, hook_settings, now=moment) == 1
        assert inbox.backlog(work)[0] == 1  # the one not applied yet stays, however old
    assert waiting(session) == [("hard_bounce", None)]


def _lock_waiter(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND query ILIKE 'INSERT INTO suppressions%'"
                )
            )
        )


@pytest.mark.serial
def test_a_crash_after_acceptance_or_in_the_middle_of_a_batch_loses_nothing(
    committed_pg: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=committed_pg, postmark_webhook_auth=POSTMARK_AUTH, mailgun_webhook_signing_key="key-" + "c3" * 16
    )
    engine = make_engine(committed_pg)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        with sessions() as session:
            rows = send_sample(sessions, session, settings)
            for address, row in rows.items():
                pid = f"pid-{address.split('@')[0]}"
                session.execute(update(Delivery).where(Delivery.id == row.id).values(provider_message_id=pid))
            session.commit()
            before = state(session)
        # Accepted through the PostgreSQL fast path (the durable hot pool), by an app that never applies them:
        # the process that answered 200 is gone before any processing.
        app = create_app(settings)
        failure = mailgun_body(settings.mailgun_webhook_signing_key or "", mailgun_failure("r0@example.com", "pid-r0"))
        with TestClient(app) as web:
            assert app.state.hot_pools is not None
            for address in ("r1@example.com", "r2@example.com"):
                answer = web.post(
                    "/webhooks/postmark", content=postmark_bounce(address, f"pid-{address[:2]}"), auth=BASIC
                )
                assert answer.json()["accepted"] == 1, answer.text
            assert web.post("/webhooks/mailgun", content=failure).json()["accepted"] == 1
            replay = web.post("/webhooks/mailgun", content=failure)  # the token is spent in the same statement
            assert replay.status_code == 401 and "replay" in replay.json()["error"]
        with sessions() as session:
            assert state(session) == before and [r for _, r in waiting(session)] == [None, None, None]

        # A processing pass dies (SIGKILL) in the middle of its batch: blocked on the suppressions table after
        # the first event's bounce and ledger update, it never commits.
        cli = Cli(committed_pg, tmp_path)
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE suppressions IN SHARE MODE"))
            worker = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "bounces", "process"], env=cli.env, cwd=tmp_path,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while not _lock_waiter(engine) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _lock_waiter(engine), "the processing pass never reached the suppressions table"
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(30)
            locker.rollback()
        time.sleep(0.5)  # PostgreSQL notices the dead client and rolls its transaction back
        with sessions() as session:
            assert state(session) == before and [r for _, r in waiting(session)] == [None, None, None]

        applied = cli.json("bounces", "process", "--json")
        assert [(a["provider"], a["recipient"], a["result"]) for a in applied["applied"]] == [
            ("postmark", "r1@example.com", "suppressed"),
            ("postmark", "r2@example.com", "suppressed"),
            ("mailgun", "r0@example.com", "suppressed"),
        ]
        assert applied["waiting"] == 0
        assert cli.json("bounces", "process", "--json") == {"applied": [], "waiting": 0}
        with sessions() as session:
            assert suppressed(session) == {
                a: "hard_bounce" for a in ("r0@example.com", "r1@example.com", "r2@example.com")
            }
            events = sorted(e for e in state(session)[2])
            assert events == ["bounce", "bounce", "bounce"]  # each once
            assert [r for _, r in waiting(session)] == ["suppressed"] * 3
    finally:
        engine.dispose()


def test_without_a_broker_the_embedded_scheduler_applies_an_accepted_event_at_once(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    engine = make_engine(url)
    upgrade(engine)
    settings = make_settings(database_url=url, postmark_webhook_auth=POSTMARK_AUTH, sweep_interval_seconds=600)
    engine.dispose()
    sessions = session_factory(settings)  # the app's own (SQLite waits for the scheduler's writes)
    with sessions() as session:
        send_sample(sessions, session, settings)
        session.execute(update(Delivery).values(provider_message_id="pid-" + Delivery.id.cast(String)))
        row_id = session.scalars(select(Delivery.id).order_by(Delivery.id)).first()
        session.commit()
    scheduler = EmbeddedScheduler(settings).start()
    try:
        with TestClient(create_app(settings)) as web:
            body = postmark_bounce("r0@example.com", f"pid-{row_id}")
            assert web.post("/webhooks/postmark", content=body, auth=BASIC).json()["accepted"] == 1
        deadline = time.monotonic() + 15  # the sweep interval is 10 minutes: only the wake-up can do it
        while time.monotonic() < deadline:
            with sessions() as session:  # (a new one each time: SQLite reads a snapshot per transaction)
                if suppressed(session):
                    break
            time.sleep(0.05)
        with sessions() as session:
            assert suppressed(session) == {"r0@example.com": "hard_bounce"}
            assert waiting(session) == [("hard_bounce", "suppressed")]
    finally:
        scheduler.stop()
