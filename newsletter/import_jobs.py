"""Import jobs: a CSV file uploaded through the admin's wizard, previewed, then imported in the background
(a Celery task, or a thread of the web process in embedded mode) with its progress and its report kept.

The import itself is `imports.import_csv`, the CLI's and the API's: streamed, staged with COPY, merged
set-based, so a million rows take seconds and memory stays flat. A job only adds the row that remembers
the choices and the outcome, the progress a page polls, and the bad lines with their text for download.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import imports, lists
from newsletter.db import is_postgres, unit_of_work, utcnow
from newsletter.errors import Invalid, NotFound
from newsletter.models import ImportJob, ImportStatus, MailingList

log = logging.getLogger(__name__)
PREVIEW_ROWS = 10
PROGRESS_EVERY_SECONDS = 0.5
HEARTBEAT_SECONDS = 10.0  # how often a running import says it is alive, even inside one long statement
MAX_LINE_SHOWN = 1000  # characters of a bad line kept for its report
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Preview:
    delimiter: str
    header: list[str]
    attributes: list[str]  # the columns that become attributes (all but email, name and status)
    rows: list[list[str]]


def preview(stream: IO[bytes], *, rows: int = 10) -> Preview:
    """The first rows of a CSV file as the import will read them; InvalidCsv when its header is unusable."""
    lines = (line.decode("utf-8", "replace").lstrip("\ufeff") for line in itertools.islice(stream, rows + 1))
    first = next(lines, "")
    if not first.strip():
        raise imports.InvalidCsv("the file is empty: the first line must be a header naming an email column")
    delimiter = imports.sniff_delimiter(first)
    records = list(csv.reader(itertools.chain([first], lines), delimiter=delimiter))
    header = imports.read_header(records[0])
    attributes = [c for c in header if c not in ("email", "name", "status")]
    return Preview(delimiter, header, attributes, [r[: len(header)] for r in records[1:]])


class ImportJobNotFound(NotFound):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"no import job {job_id}")


class ImportJobState(Invalid):
    """The job is not in the state this step needs (already run, say)."""


@dataclass(frozen=True)
class Live:
    bytes_done: int
    stage: str


# Progress of the imports running in this process, read by the page that polls it. A job run by a Celery
# worker writes its progress to its row instead (see `run`).
_live: dict[int, Live] = {}
_live_lock = threading.Lock()


def live_progress(job: ImportJob) -> Live:
    with _live_lock:
        return _live.get(job.id) or Live(job.bytes_done, job.stage)


def percent(job: ImportJob) -> int:
    if job.status == ImportStatus.finished:
        return 100
    live = live_progress(job)
    return min(99, round(100 * live.bytes_done / job.size)) if job.size else 0


def store_upload(directory: Path, source: IO[bytes]) -> tuple[Path, int]:
    """Copy an upload to a file of its own in `directory` (the job outlives the request); its path and size."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"import-{secrets.token_hex(12)}.csv"
    with path.open("xb") as target:
        shutil.copyfileobj(source, target, _COPY_CHUNK)
    return path, path.stat().st_size


def create_job(session: Session, path: Path, *, filename: str, size: int, created_by: str | None) -> ImportJob:
    """A job for a stored upload, with its preview checked; InvalidCsv (and the file removed) when the
    header cannot be imported."""
    try:
        with path.open("rb") as stream:
            first_rows = preview(stream, rows=PREVIEW_ROWS)
    except imports.InvalidCsv:
        path.unlink(missing_ok=True)
        raise
    job = ImportJob(
        filename=os.path.basename(filename)[:255] or "upload.csv",
        path=str(path),
        size=size,
        delimiter=first_rows.delimiter,
        columns=first_rows.header,
        created_by=created_by,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise ImportJobNotFound(job_id)
    return job


def recent_jobs(session: Session, *, limit: int = 50) -> list[ImportJob]:
    return list(session.scalars(select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)))


def preview_of(job: ImportJob) -> Preview | None:
    """The first rows of a job's file while it is stored."""
    if not job.path or not Path(job.path).exists():
        return None
    with Path(job.path).open("rb") as stream:
        return preview(stream, rows=PREVIEW_ROWS)


def queue(session: Session, job_id: int, *, list_slug: str, confirmed: bool, update_existing: bool) -> ImportJob:
    """Record the choices of an uploaded job and mark it queued (the caller starts it after commit)."""
    job = get_job(session, job_id)
    if job.status != ImportStatus.uploaded:
        raise ImportJobState(f"import {job_id} is {job.status.value}; upload the file again to import it again")
    job.list_id = lists.get_list(session, list_slug).id
    job.confirmed, job.update_existing = confirmed, update_existing
    job.status = ImportStatus.queued
    session.flush()
    return job


def run(
    sessions: sessionmaker[Session], job_id: int, *, progress_sessions: sessionmaker[Session] | None = None
) -> imports.ImportReport | None:
    """Run a queued job to its end: the import in one unit of work, then the report on the row.

    Progress goes to this process's memory, and to the row through `progress_sessions` when another
    process (the web) polls it. Returns the report, or None when the file could not be imported.
    """
    with unit_of_work(sessions) as session:
        job = get_job(session, job_id)
        if job.status != ImportStatus.queued:
            raise ImportJobState(f"import {job_id} is {job.status.value}, not queued")
        job.status, job.stage = ImportStatus.running, "reading"
        job.started_at = job.heartbeat_at = utcnow()
        list_slug = session.scalar(select(MailingList.slug).where(MailingList.id == job.list_id)) or ""
        path = Path(job.path or "")
        options = {"confirmed": job.confirmed, "update_existing": job.update_existing}
    tracker = _Tracker(job_id, progress_sessions)
    try:
        with unit_of_work(sessions) as session, path.open("rb") as stream:
            report = imports.import_csv(
                session, list_slug, stream, progress=tracker.bytes_read, stage=tracker.stage, **options
            )
    except (Invalid, OSError) as exc:
        _finish(sessions, job_id, path, error=str(exc))
        return None
    finally:
        tracker.done()
    _finish(sessions, job_id, path, report=report)
    return report


def _finish(
    sessions: sessionmaker[Session],
    job_id: int,
    path: Path,
    *,
    report: imports.ImportReport | None = None,
    error: str | None = None,
) -> None:
    with unit_of_work(sessions) as session:
        job = get_job(session, job_id)
        if report is not None:
            job.report = {**report.as_dict(), "lines": bad_lines(path, {e.line for e in report.errors})}
            # finished even if the sweep gave up on it meanwhile (on SQLite it cannot beat): the rows are in
            job.status, job.stage, job.error = ImportStatus.finished, "finished", None
        else:
            job.status, job.stage, job.error = ImportStatus.failed, "failed", error
        job.bytes_done, job.finished_at, job.path = job.size, utcnow(), None
    path.unlink(missing_ok=True)


def bad_lines(path: Path, numbers: set[int]) -> dict[str, str]:
    """The text of the given lines of a file (the start line of each bad record), for the report."""
    found: dict[str, str] = {}
    if not numbers:
        return found
    last = max(numbers)
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if number in numbers:
                found[str(number)] = raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE_SHOWN]
            if number >= last:
                break
    return found


class _Tracker:
    """Progress callbacks of one import: into memory always, onto the job's row at most twice a second."""

    def __init__(self, job_id: int, sessions: sessionmaker[Session] | None) -> None:
        bind = sessions.kw.get("bind") if sessions is not None else None
        # PostgreSQL only: on SQLite the import's transaction, whose reads began before these commits, could
        # not take the write lock for its merge afterwards (WAL refuses to upgrade a stale snapshot).
        self.job_id, self.sessions = job_id, sessions if bind is not None and is_postgres(bind) else None
        self.current = Live(0, "reading")
        self.written_at = 0.0
        self._stopped = threading.Event()
        self._publish()
        if self.sessions is not None:
            # The merge is a few long statements with no progress between them: the heartbeat beats apart.
            threading.Thread(target=self._beat, name=f"import-{job_id}-heartbeat", daemon=True).start()

    def bytes_read(self, done: int) -> None:
        self.current = Live(done, self.current.stage)
        self._publish()

    def stage(self, name: str) -> None:
        self.current = Live(self.current.bytes_done, name)
        self._publish(force=True)

    def done(self) -> None:
        self._stopped.set()
        with _live_lock:
            _live.pop(self.job_id, None)

    def _beat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            try:
                self._publish(force=True)
            except Exception:  # the database is away for a moment: the next beat tries again
                log.warning("import job %s: could not write its heartbeat", self.job_id, exc_info=True)

    def _publish(self, force: bool = False) -> None:
        with _live_lock:
            _live[self.job_id] = self.current
        now = time.monotonic()
        if self.sessions is None or (not force and now - self.written_at < PROGRESS_EVERY_SECONDS):
            return
        self.written_at = now
        with unit_of_work(self.sessions) as session:
            # only while it runs: a beat that races the job's end must not write "merging" over "finished"
            session.execute(
                update(ImportJob)
                .where(ImportJob.id == self.job_id, ImportJob.status == ImportStatus.running)
                .values(bytes_done=self.current.bytes_done, stage=self.current.stage, heartbeat_at=utcnow())
            )


def run_in_thread(
    sessions: sessionmaker[Session], job_id: int, then: Callable[[imports.ImportReport, int], None]
) -> threading.Thread:
    """Embedded mode: run the job in a daemon thread of this process (never in the request); `then(report,
    list_id)` runs after a successful import (to send its confirmation emails)."""

    def work() -> None:
        try:
            # progress onto the row too: with several web workers the poll may reach another process
            report = run(sessions, job_id, progress_sessions=sessions)
            if report is not None:
                with sessions() as session:
                    list_id = get_job(session, job_id).list_id
                if list_id is not None:
                    then(report, list_id)
        except Exception:
            log.exception("import job %s failed", job_id)
            _mark_failed(sessions, job_id)

    thread = threading.Thread(target=work, name=f"import-{job_id}", daemon=True)
    thread.start()
    return thread


def _mark_failed(sessions: sessionmaker[Session], job_id: int) -> None:
    with unit_of_work(sessions) as session:
        job = get_job(session, job_id)
        if job.status in (ImportStatus.queued, ImportStatus.running):
            job.status, job.stage, job.error = (
                ImportStatus.failed,
                "failed",
                "the import stopped on an error (see the log)",
            )
            job.finished_at = utcnow()


def fail_abandoned(session: Session, stale_seconds: int, now: dt.datetime | None = None) -> list[int]:
    """Mark failed the running jobs whose process went quiet for `stale_seconds` (it died: a restart, the
    OOM killer); their ids. The import ran in one transaction, so a dead one left nothing behind."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stale_seconds)
    abandoned = list(
        session.scalars(
            select(ImportJob)
            .where(
                ImportJob.status == ImportStatus.running,
                func.coalesce(ImportJob.heartbeat_at, ImportJob.started_at, ImportJob.created_at) < cutoff,
            )
            .with_for_update(skip_locked=True)
        )
    )
    for job in abandoned:
        quiet = round((now - (job.heartbeat_at or job.started_at or job.created_at)).total_seconds() / 60)
        job.status, job.stage, job.finished_at = ImportStatus.failed, "failed", now
        job.error = (
            f"the process running it stopped (no sign of life for {quiet} minute(s): a restart or a crash); "
            "nothing was imported, upload the file again"
        )
        if job.path:
            Path(job.path).unlink(missing_ok=True)
            job.path = None
    session.flush()
    return [job.id for job in abandoned]


def report_rows(job: ImportJob) -> list[dict[str, Any]]:
    """Every bad line of a finished job: its number, why, and its text."""
    report = job.report or {}
    shown = report.get("lines", {})
    return [
        {"line": e["line"], "reason": e["reason"], "text": shown.get(str(e["line"]), "")}
        for e in report.get("errors", [])
    ]
