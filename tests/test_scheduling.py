"""Who starts scheduled campaigns: `newsletter serve` in embedded mode (no broker), Celery beat otherwise."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import session_scope
from newsletter.delivery import scheduling
from tests.factories import SAMPLE_DIGEST
from tests.processes import free_port, wait_until
from tests.smtpserver import RecordingSMTPServer
from tests.test_cli import Cli

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


@contextmanager
def serving(cli: Cli, log: Path, *args: str, **env: str) -> Iterator[str]:
    port = free_port()
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port), *args],
            env={**cli.env, **env},
            cwd=cli.cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 30, "newsletter serve")
        yield url
    except BaseException:
        print(log.read_text()[-4000:])
        raise
    finally:
        server.terminate()
        server.wait(20)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.postgres
@pytest.mark.slow
def test_newsletter_serve_without_a_broker_starts_a_scheduled_campaign_on_time(
    committed_pg: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    cli = Cli(committed_pg, tmp_path)
    cli.run(
        "lists",
        "create",
        "weekly",
        "--name",
        "Weekly",
        "--from-email",
        "news@example.org",
        "--postal-address",
        "1 Example Street, Astana",
    )
    people = tmp_path / "people.csv"
    people.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(20)))
    cli.run("subscribers", "import", "weekly", str(people), "--confirmed")
    slug = cli.run("digests", "publish", str(SAMPLE_DIGEST)).stdout.strip()
    with RecordingSMTPServer() as smtp:
        cli.env["NEWSLETTER_SMTP_URL"] = smtp.url
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        # nothing runs yet: the person who schedules is told that nothing would start it
        alone = cli.run("campaigns", "send", slug, "--list", "weekly", "--at", later)
        first = int(alone.stdout.strip())
        assert "warning:" in alone.stderr and "keep it running" in alone.stderr
        cli.run("campaigns", "cancel", str(first))
        # two server processes: exactly one of them schedules
        with serving(cli, tmp_path / "serve.log", "--workers", "2"):
            wait_until(lambda: cli.sql("SELECT count(*) FROM heartbeats WHERE name = 'embedded'") == 1, 20, "hold")
            told = cli.json("campaigns", "send", slug, "--list", "weekly", "--at", later, "--again")
            assert told["scheduler_seen"] is True and "`newsletter serve` starts it" in told["started_by"]
            cli.run("campaigns", "cancel", str(told["id"]))
            at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
            with session_scope(make_settings(database_url=committed_pg)) as session:
                campaign_id = delivery.create_campaign(
                    session, digest_slug=slug, list_slugs=["weekly"], scheduled_at=at, allow_repeat=True
                ).id
            wait_until(lambda: len(smtp.messages) >= 20, 30, "the scheduled messages")
            wait_until(
                lambda: cli.sql(f"SELECT status FROM campaigns WHERE id = {campaign_id}") == "finished", 10, "finish"
            )
            started = cli.sql(f"SELECT started_at FROM campaigns WHERE id = {campaign_id}")
            assert at <= started <= at + dt.timedelta(seconds=5)  # on time, not before
        time.sleep(0.5)
    received = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    assert received == sorted(f"r{i}@example.com" for i in range(20))  # each once, from one scheduler
    for cancelled in (first, told["id"]):
        assert cli.sql(f"SELECT count(*) FROM deliveries WHERE campaign_id = {cancelled}") == 0


def test_the_embedded_hold_belongs_to_one_live_process(session: Session) -> None:
    assert scheduling.hold(session, "a", now=NOW)
    assert not scheduling.hold(session, "b", now=NOW + dt.timedelta(seconds=1))
    assert scheduling.hold(session, "a", now=NOW + dt.timedelta(seconds=2))  # renewed
    # a holder that stopped renewing loses it
    later = NOW + dt.timedelta(seconds=2 + scheduling.HOLD_SECONDS + 1)
    assert scheduling.hold(session, "b", now=later)
    assert not scheduling.hold(session, "a", now=later)
    scheduling.release(session, "a")  # not the holder: changes nothing
    assert not scheduling.hold(session, "a", now=later)
    scheduling.release(session, "b")
    assert scheduling.hold(session, "a")


def test_scheduling_with_a_broker_warns_when_no_beat_was_seen(
    session: Session, make_settings, settings: Settings
) -> None:
    brokered = make_settings(database_url=settings.database_url, broker_url="redis://127.0.0.1:6379/6")
    what, alive = scheduling.who_starts(session, brokered, now=NOW)
    assert not alive and "no Celery beat has been seen ever" in what and "celery -A worker beat" in what
    scheduling.record_beat(session, "host:1")
    what, alive = scheduling.who_starts(session, brokered)
    assert alive and "Celery beat starts it" in what
    stale = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3 * brokered.sweep_interval_seconds + 60)
    what, alive = scheduling.who_starts(session, brokered, now=stale)
    assert not alive and "no Celery beat has been seen since" in what
