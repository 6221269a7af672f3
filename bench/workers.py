"""Celery worker processes for the benches: start a pool with given settings, stop it, read its peak RSS and
the CPU time it and its database backends used (a figure the machine's load does not change much)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from newsletter.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def peak_rss_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) of any process of a worker: the master or a pool child."""
    peak = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used from now on by a worker pool's processes and by the PostgreSQL backends of its
    database (read from /proc; the database server runs on this machine). Call `sample` often: a process
    that exits counts with its last sample."""

    def __init__(self, engine: Engine, root: int) -> None:
        self.engine, self.root = engine, root
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._backends: set[int] = set()
        self._pids(initial=True)

    def _pids(self, *, initial: bool = False) -> None:
        with self.engine.connect() as conn:
            backends = conn.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            ).all()
        self._backends.update(backends)
        for pid in [*process_tree(self.root), *backends]:
            used = cpu_seconds(pid)
            if used is None:
                continue
            if initial:
                self._start[pid] = used
            self._last[pid] = used

    def sample(self) -> None:
        self._pids()

    def seconds(self) -> tuple[float, float]:
        """(worker processes, database backends)."""
        used = {pid: last - self._start.get(pid, 0.0) for pid, last in self._last.items()}
        database = sum(v for pid, v in used.items() if pid in self._backends)
        return sum(used.values()) - database, database


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a process (a worker, the `newsletter` command) exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    for name, value in settings.model_dump().items():
        if isinstance(value, tuple | list):  # comma-separated, as the settings read them
            env[f"NEWSLETTER_{name.upper()}"] = ",".join(map(str, value))
        elif value is not None:
            env[f"NEWSLETTER_{name.upper()}"] = str(value)
    return env


def start_workers(settings: Settings, concurrency: int | None, log: Path, app: str = "worker") -> Workers:
    """Celery workers; `concurrency` None starts them as the README says, `celery -A worker worker`, with
    every flag at its default (one process per CPU)."""
    tuned = [] if concurrency is None else [
        f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"bench-{uuid.uuid4().hex[:6]}@%h",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel=WARNING", *tuned],
        cwd=ROOT, env=settings_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    time.sleep(3)  # let the pool fork and connect before the clock starts
    return Workers(proc, log)
