"""The worker's cost per message, side by side in one run: the claim statement as it was (EXISTS re-checks,
the baseline) and as it is (LATERAL index probes), and the pipeline with its per-group metrics and per-batch
log line switched off, each in CPU seconds per 1,000 messages of the sending process and of its PostgreSQL
backend (read from /proc: a figure the machine's load changes much less than messages/s).

The data is the user's path: a CSV imported through the CLI (no ANALYZE of ours), a campaign planned as
`campaigns send` plans it; the batches run one after the other in this process through the Celery task's
own function (`worker.tasks.send_batch`, metrics and log line included) into postfix's smtp-sink.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench.delivery import FROM, SECRET, free_port, newsletter_command, process, publish, scratch_database
from bench.workers import cpu_seconds, settings_env
from newsletter import delivery, logs, metrics
from newsletter.config import Settings, load_settings
from newsletter.db import make_engine, session_scope
from newsletter.delivery import ledger

# The claim's re-checks as they were before the LATERAL probes (the baseline; same columns and outcome).
FORMER_CHECKED = f"""
), checked AS (
    SELECT p.id, s.email, s.name, s.created_at,
        s.status = 'active'
        AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email_hash = s.email_hash)
        AND NOT EXISTS (SELECT 1 FROM blocked_domains b WHERE b.domain = s.email_domain)
        AND EXISTS (
            SELECT 1 FROM subscriptions sub JOIN campaign_lists cl ON cl.list_id = sub.list_id
            WHERE sub.subscriber_id = s.id AND cl.campaign_id = :campaign_id AND sub.status = 'confirmed'
        ) AS wanted,
        (SELECT sub.sections FROM subscriptions sub WHERE sub.subscriber_id = s.id AND sub.list_id = d.list_id)
            AS sections
    FROM picked p JOIN deliveries d ON d.id = p.id JOIN subscribers s ON s.id = d.subscriber_id
)
UPDATE deliveries d SET{ledger._PG_CLAIM_CTES.split("UPDATE deliveries d SET", 1)[1]}"""


def _former(current: str) -> str:
    head = current.split("), checked AS MATERIALIZED (", 1)[0]
    return head + FORMER_CHECKED


@contextmanager
def former_claim() -> Iterator[None]:
    saved = ledger._PG_CLAIM, ledger._PG_RECORD_AND_CLAIM
    ledger._PG_CLAIM = text(_former(saved[0].text))
    ledger._PG_RECORD_AND_CLAIM = text(_former(saved[1].text))
    try:
        yield
    finally:
        ledger._PG_CLAIM, ledger._PG_RECORD_AND_CLAIM = saved


@contextmanager
def without_instrumentation() -> Iterator[None]:
    """The pipeline's per-group metrics and per-batch log line replaced by no-ops."""
    names = ("count_replies", "count_outcomes", "timed_wait")
    saved: dict[str, Any] = {name: getattr(metrics, name) for name in names}
    observes = (metrics.SEND_SECONDS.observe, metrics.BATCH_SECONDS.observe, metrics.QUEUE_LATENCY.observe)
    event = logs.event
    metrics.count_replies = lambda *a, **k: None  # type: ignore[assignment]
    metrics.count_outcomes = lambda *a, **k: None  # type: ignore[assignment]
    for histogram in (metrics.SEND_SECONDS, metrics.BATCH_SECONDS, metrics.QUEUE_LATENCY):
        histogram.observe = lambda *a, **k: None  # type: ignore[method-assign]
    logs.event = lambda *a, **k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(metrics, name, value)
        hists = (metrics.SEND_SECONDS, metrics.BATCH_SECONDS, metrics.QUEUE_LATENCY)
        for histogram, observe in zip(hists, observes, strict=True):
            histogram.observe = observe  # type: ignore[method-assign]
        logs.event = event


def backend_cpu(engine: Engine) -> float:
    """CPU seconds so far of the database's backends (this process's pool holds one or two)."""
    with engine.connect() as conn:
        pids = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        ).all()
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def send_some(
    settings: Settings, digest: str, slug: str, messages: int, engine: Engine
) -> tuple[int, float, float, float]:
    """Plan a campaign to the list and send its first `messages` through the task; cancel the rest.
    Returns (sent, seconds, worker CPU seconds, database CPU seconds)."""
    from worker import tasks

    with session_scope(settings) as session:
        campaign_id = delivery.create_campaign(session, digest_slug=digest, list_slugs=[slug], allow_repeat=True).id
    with session_scope(settings) as session:
        ranges = delivery.start(session, settings, campaign_id)
    batches = max(1, messages // settings.batch_size)
    tasks.send_batch.run(campaign_id, ranges[0].first_id, ranges[0].last_id)  # warm: connections, prepared
    sent = 0
    database, worker, started = backend_cpu(engine), own_cpu(), time.monotonic()
    for batch in ranges[1 : batches + 1]:
        tasks.send_batch.run(campaign_id, batch.first_id, batch.last_id)
        sent += batch.last_id - batch.first_id + 1
    seconds = time.monotonic() - started
    worker, database = own_cpu() - worker, backend_cpu(engine) - database
    with session_scope(settings) as session:
        delivery.cancel(session, campaign_id)
    return sent, seconds, worker, database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list-size", type=int, default=20_000, help="subscribers imported through the CLI")
    parser.add_argument("--messages", type=int, default=5_000, help="messages sent by each variant")
    parser.add_argument("--rounds", type=int, default=2, help="each variant this many times, interleaved")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-claim-"))
    sink_port = free_port()
    sink = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"]
    with process(sink, sink_port), scratch_database() as url:
        settings = load_settings(
            database_url=url, smtp_url=f"smtp://127.0.0.1:{sink_port}?max_connections=64", secret_key=SECRET,
            base_url="https://news.example.org", environment="production",
        )  # fmt: skip
        os.environ.update(settings_env(settings))  # what worker.tasks reads, as in a worker process
        digest = publish(settings)
        newsletter_command(
            settings, "lists", "create", "readers", "--name", "The Steppe Courier", "--from-email", FROM,
            "--postal-address", "1 Example Avenue, Astana",
        )  # fmt: skip
        people = work / "readers.csv"
        with people.open("w") as out:
            out.write("email,name\n")
            out.writelines(f"reader.{i}@example.com,Reader {i}\n" for i in range(args.list_size))
        newsletter_command(settings, "subscribers", "import", "readers", str(people), "--confirmed")
        with (work / "batches.log").open("w") as log_file:
            logs.configure(settings, stream=log_file)  # the batch lines go where a worker's would
            figures = _measure(settings, digest, args, make_engine(url))
        logging.getLogger().handlers.clear()
    print(f"{args.messages:,} messages per run from a list of {args.list_size:,} imported through the CLI, "
          f"best of {args.rounds} (smtp-sink, one process):")  # fmt: skip
    for name, (sent, seconds, worker, database) in figures.items():
        per = 1000 / sent
        print(
            f"  {name:<44} {sent / seconds:7,.0f} msg/s   {(worker + database) * per:.3f} CPU s/1,000 msgs "
            f"({worker * per:.3f} sending process + {database * per:.3f} PostgreSQL)"
        )


VARIANTS = ("former claim (EXISTS re-checks), baseline", "claim now (LATERAL probes)",
            "claim now, metrics and batch log line off")  # fmt: skip


def _measure(
    settings: Settings, digest: str, args: argparse.Namespace, engine: Engine
) -> dict[str, tuple[int, float, float, float]]:
    best: dict[str, tuple[int, float, float, float]] = {}
    for _ in range(args.rounds):
        for name in VARIANTS:
            context = former_claim() if name == VARIANTS[0] else None
            quiet = without_instrumentation() if name == VARIANTS[2] else None
            with context or _nothing(), quiet or _nothing():
                figure = send_some(settings, digest, "readers", args.messages, engine)
            if name not in best or figure[2] + figure[3] < best[name][2] + best[name][3]:
                best[name] = figure
    engine.dispose()
    return best


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
