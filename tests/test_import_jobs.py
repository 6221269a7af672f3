"""Import jobs whose process died, both backends: the sweep marks a running job failed once its heartbeat is
older than NEWSLETTER_IMPORT_STALE_SECONDS, with the reason on the job's page; a live one is left alone. On
PostgreSQL a real import process killed in the middle leaves nothing imported and its job failed."""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import import_jobs
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.models import ImportJob, ImportStatus, Role, Subscriber
from tests.admin import AdminWeb
from tests.factories import make_list
from worker import tasks

TAGS = re.compile(r"<[^>]+>")


def text_of(page: str) -> str:
    return " ".join(html.unescape(TAGS.sub(" ", page)).split())


def queued_job(sessions: sessionmaker[Session], tmp_path: Path, rows: int = 3) -> int:
    upload = tmp_path / f"people-{rows}.csv"
    upload.write_text("email,name\n" + "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(rows)))
    with sessions.begin() as session:
        make_list(session, slug="weekly", name="Weekly")
        job = import_jobs.create_job(session, upload, filename=upload.name, size=upload.stat().st_size, created_by="ed")
        import_jobs.queue(session, job.id, list_slug="weekly", confirmed=True, update_existing=True)
        return job.id


def as_left_running(sessions: sessionmaker[Session], job_id: int, quiet: dt.timedelta) -> None:
    """The row as `run` leaves it while it works, its last heartbeat `quiet` ago."""
    at = utcnow() - quiet
    with sessions.begin() as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(status=ImportStatus.running, stage="merging", started_at=at, heartbeat_at=at)
        )


def test_the_sweep_fails_an_import_whose_process_went_quiet_and_the_page_says_why(
    admin_web: AdminWeb, tmp_path: Path
) -> None:
    settings: Settings = admin_web.settings
    dead = queued_job(admin_web.sessions, tmp_path)
    as_left_running(admin_web.sessions, dead, dt.timedelta(seconds=settings.import_stale_seconds + 60))
    with admin_web.sessions.begin() as session:
        alive = import_jobs.create_job(
            session, Path(tmp_path / "people-3.csv").rename(tmp_path / "again.csv"), filename="again.csv",
            size=1, created_by="ed",
        ).id  # fmt: skip
    as_left_running(admin_web.sessions, alive, dt.timedelta(seconds=5))
    client = admin_web.signed_in(Role.admin)
    assert "running" in text_of(client.get(f"/admin/imports/{dead}").text)

    with admin_web.sessions.begin() as session:  # the call the sweep makes (Celery beat, embedded scheduler)
        assert import_jobs.fail_abandoned(session, settings.import_stale_seconds) == [dead]

    with admin_web.sessions() as session:
        failed, live = session.get(ImportJob, dead), session.get(ImportJob, alive)
        assert failed is not None and live is not None
        assert (failed.status, live.status) == (ImportStatus.failed, ImportStatus.running)
        assert failed.finished_at is not None and failed.path is None and live.error is None
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
    page = text_of(client.get(f"/admin/imports/{dead}").text)
    assert "The import stopped and nothing was imported: the process running it stopped" in page
    assert "upload the file again" in page
    assert client.get(f"/admin/imports/{dead}/progress").headers.get("HX-Refresh") == "true"  # the poll stops
    with admin_web.sessions.begin() as session:  # once failed it stays as it is
        assert import_jobs.fail_abandoned(session, settings.import_stale_seconds) == []


def test_an_import_that_finishes_after_the_sweep_gave_up_on_it_is_finished(admin_web: AdminWeb, tmp_path: Path) -> None:
    """SQLite cannot beat while it imports: if the sweep failed a slow live job, its own end sets it right."""
    job_id = queued_job(admin_web.sessions, tmp_path)
    report = import_jobs.run(admin_web.sessions, job_id)
    assert report is not None and report.imported == 3
    as_left_running(admin_web.sessions, job_id, dt.timedelta(hours=1))
    with admin_web.sessions.begin() as session:
        assert import_jobs.fail_abandoned(session, 600) == [job_id]
        assert import_jobs.fail_abandoned(session, 600) == []
    import_jobs._finish(admin_web.sessions, job_id, tmp_path / "gone.csv", report=report)
    with admin_web.sessions() as session:
        job = session.get(ImportJob, job_id)
        assert job is not None and (job.status, job.error) == (ImportStatus.finished, None)


KILLED_IMPORT = """
import sys
from sqlalchemy.orm import sessionmaker
from newsletter import import_jobs
from newsletter.db import make_engine
sessions = sessionmaker(make_engine(sys.argv[1]))
import_jobs.HEARTBEAT_SECONDS = 0.2
import_jobs.run(sessions, int(sys.argv[2]), progress_sessions=sessions)
"""


@pytest.mark.postgres
@pytest.mark.serial
def test_a_killed_import_process_leaves_nothing_and_its_job_is_failed_by_the_sweep(
    committed_pg: str, pg_engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    pg_url, pg_sessions = committed_pg, sessionmaker(pg_engine)
    job_id = queued_job(pg_sessions, tmp_path, rows=300_000)
    worker = subprocess.Popen([sys.executable, "-c", KILLED_IMPORT, pg_url, str(job_id)], env=os.environ.copy())
    try:
        beats: set[dt.datetime] = set()
        deadline = time.monotonic() + 120
        while len(beats) < 3 and time.monotonic() < deadline and worker.poll() is None:
            with pg_sessions() as session:
                job = session.get(ImportJob, job_id)
                assert job is not None
                if job.status == ImportStatus.running and job.heartbeat_at is not None:
                    beats.add(job.heartbeat_at)
            time.sleep(0.1)
        assert len(beats) >= 3, "the running import never beat"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    settings = make_settings(database_url=pg_url)
    tasks.run_sweep(settings)  # it beat moments ago: still running, as far as anyone can tell
    with pg_sessions() as session:
        job = session.get(ImportJob, job_id)
        assert job is not None and job.status == ImportStatus.running
        heartbeat = job.heartbeat_at
    time.sleep(1)
    with pg_sessions() as session:  # nothing beats any more
        assert session.get(ImportJob, job_id).heartbeat_at == heartbeat  # type: ignore[union-attr]
    as_left_running(pg_sessions, job_id, dt.timedelta(seconds=settings.import_stale_seconds + 1))
    tasks.run_sweep(settings)
    with pg_sessions() as session:
        job = session.get(ImportJob, job_id)
        assert (
            job is not None and job.status == ImportStatus.failed and "process running it stopped" in (job.error or "")
        )
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
