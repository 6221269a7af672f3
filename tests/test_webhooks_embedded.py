"""Without a broker, `newsletter serve`'s embedded scheduler sends webhooks itself: a committed event wakes
its webhook thread at once (no sweep interval to wait for), signed as everywhere else."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import outbox
from newsletter.config import Settings
from newsletter.db import make_engine, session_scope
from newsletter.migrate import upgrade
from newsletter.webhooks import endpoints
from tests.webhookreceiver import Receiver, verify
from worker.embedded import EmbeddedScheduler


@pytest.fixture
def embedded_settings(tmp_path: Path, make_settings: Callable[..., Settings]) -> Settings:
    """Embedded mode on a migrated SQLite file, webhooks allowed to the local receiver, no sweep meanwhile."""
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return make_settings(database_url=url, webhooks_allow_private=True, sweep_interval_seconds=600)


def test_a_committed_event_is_sent_by_the_embedded_scheduler(embedded_settings: Settings) -> None:
    settings = embedded_settings
    with Receiver() as receiver:
        scheduler = EmbeddedScheduler(settings).start()
        try:
            with session_scope(settings) as session:
                secret = endpoints.create(session, settings, receiver.url, ["campaign.finished"]).secret
            with session_scope(settings) as session:
                outbox.emit(session, "campaign.finished", {"campaign": {"id": 3}})
            deadline = time.monotonic() + 15
            while not receiver.requests and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            scheduler.stop()
        (request,) = receiver.requests
        assert verify(secret, request.headers, request.body)


def test_a_failed_pass_is_tried_again_soon_not_at_the_next_sweep(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from worker import tasks

    settings = embedded_settings
    real, passes = tasks.run_webhooks, []

    def busy_once(settings: Settings) -> object:
        passes.append(time.monotonic())
        if len(passes) == 1:  # SQLite answers "database is locked" to a write that races another thread's
            raise OperationalError("UPDATE outbox_events ...", {}, Exception("database is locked"))
        return real(settings)

    monkeypatch.setattr(tasks, "run_webhooks", busy_once)
    with Receiver() as receiver:
        with session_scope(settings) as session:
            secret = endpoints.create(session, settings, receiver.url, ["campaign.finished"]).secret
        scheduler = EmbeddedScheduler(settings).start()
        try:
            with session_scope(settings) as session:
                outbox.emit(session, "campaign.finished", {"campaign": {"id": 4}})
            deadline = time.monotonic() + 15
            while not receiver.requests and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            scheduler.stop()
        (request,) = receiver.requests
        assert verify(secret, request.headers, request.body)
    assert len(passes) >= 2 and passes[1] - passes[0] < 5  # a second pass within seconds, not 600 s


def test_a_broker_that_is_down_does_not_fail_the_commit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from worker import tasks

    def refuse() -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.dispatch_webhooks, "delay", refuse)
    eager = tasks.app.conf.task_always_eager
    tasks.app.conf.task_always_eager = False  # as with a broker
    try:
        tasks._outbox_committed()  # what a commit that emitted events calls
    finally:
        tasks.app.conf.task_always_eager = eager
    assert "could not enqueue a dispatch" in caplog.text
