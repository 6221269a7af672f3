"""Real processes for the pipeline tests: Celery workers to kill, private PostgreSQL and Redis to restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import Celery
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bench.workers import settings_env as worker_env  # one way to hand settings to a process
from newsletter.config import Settings
from newsletter.models import MailingList, Subscriber, Subscription, SubscriptionSource, SubscriptionStatus, email_hash
from tests.conftest import ROOT

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def enqueue(settings: Settings, task: str, *args: object) -> None:
    client = Celery(broker=settings.broker_url)
    try:
        client.send_task(task, args=list(args))
    finally:
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def add_subscribers(session: Session, mailing_list: MailingList, count: int, prefix: str = "r") -> list[str]:
    """`count` confirmed subscribers in two set-based INSERTs (the factories take a second per hundred)."""
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    ids = session.scalars(
        insert(Subscriber).returning(Subscriber.id, sort_by_parameter_order=True),
        [{"email": e, "email_hash": email_hash(e), "name": f"Reader {i}"} for i, e in enumerate(emails)],
    ).all()
    session.execute(
        insert(Subscription),
        [
            {
                "subscriber_id": i,
                "list_id": mailing_list.id,
                "status": SubscriptionStatus.confirmed,
                "source": SubscriptionSource.admin,
            }
            for i in ids
        ],
    )
    assert session.scalar(select(Subscriber.id).where(Subscriber.email == emails[-1])) is not None
    return emails


class Beat:
    """What `celery beat` does for the pipeline: enqueue the recovery sweep every `interval` seconds."""

    def __init__(self, settings: Settings, interval: float = 2.0) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(settings, interval), daemon=True)
        self._thread.start()

    def _run(self, settings: Settings, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # the broker may be down on purpose (fault tests)
                enqueue(settings, "worker.tasks.sweep")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class CeleryWorker:
    """One `celery worker` process (solo pool: the process that sends is the one `kill()` hits)."""

    def __init__(self, settings: Settings, name: str, log_dir: Path, *, concurrency: int = 1) -> None:
        self.settings = settings
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> CeleryWorker:
        pool = ["--pool=solo"] if self.concurrency == 1 else [f"--concurrency={self.concurrency}"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker",
                    "worker",
                    *pool,
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"{self.name}-{os.getpid()}@%h",
                ],
                cwd=ROOT,
                env=worker_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes any pool children too
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no ack, connections dropped mid-sentence."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextmanager
def running_workers(settings: Settings, name: str, log_dir: Path, count: int = 2) -> Iterator[list[CeleryWorker]]:
    """`count` solo-pool workers and a beat for the block; their logs are printed when it fails."""
    workers = [CeleryWorker(settings, f"{name}{i}", log_dir).start() for i in range(count)]
    beat = Beat(settings)
    try:
        yield workers
    except BaseException:
        for worker in workers:
            print(worker.log_tail())
        raise
    finally:
        beat.stop()
        for worker in workers:
            worker.stop()


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, restartable without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._up, 10, f"redis on port {self.port}")
        return self

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free loopback port, run as the `postgres` user (initdb refuses root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True)

    def init(self) -> PrivatePostgres:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir / "log")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop("immediate")  # like a crash: every connection is cut at once
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
