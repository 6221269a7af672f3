"""Benchmark the sending pipeline end to end (Celery + PostgreSQL + Redis into postfix's smtp-sink) against
postfix's own C client smtp-source pushing the same message into the same sink, plus planning, memory and
the naive one-task-per-recipient route.

Everything runs on loopback: a scratch database on the PostgreSQL server, a private redis-server and a
private smtp-sink on free ports, all removed at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench import naive_worker
from bench.workers import CpuMeter, Workers, peak_rss_mb, settings_env, start_workers
from newsletter import delivery, digests, lists, migrate
from newsletter.config import Settings, load_settings
from newsletter.db import make_engine, session_factory, session_scope, utcnow
from newsletter.delivery import ledger, progress, sending
from newsletter.models import (
    CampaignStatus,
    DeliveryStatus,
    OptIn,
    SubscriberStatus,
    SubscriptionSource,
    SubscriptionStatus,
)

if TYPE_CHECKING:
    from bench import pacing  # which imports this module: imported where used, below

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "newsletter" / "samples" / "sample-digest.md"
ADMIN_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-key-0123456789abcdef"  # noqa: S105 - a throwaway database
FROM = "news@example.org"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def process(args: list[str], port: int, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scratch_database() -> AbstractContextManager[str]:
    return migrate.scratch_database(ADMIN_URL, "newsletter_bench")


def seed(engine: Engine, slug: str, count: int) -> None:
    """A list with `count` confirmed subscribers, generated inside PostgreSQL (no Python loop)."""
    with session_scope_for(engine) as session:
        mailing_list = lists.create_list(
            session, slug=slug, name="The Steppe Courier", from_email=FROM, from_name="The Steppe Courier",
            postal_address="1 Example Avenue, Astana", opt_in=OptIn.double,
        )  # fmt: skip
        list_id = mailing_list.id
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, status, created_at,
                    updated_at)
                SELECT e, encode(sha256(convert_to(e, 'UTF8')), 'hex'), 'example.com', 'Reader ' || g, '{}', :active,
                    now(), now()
                FROM generate_series(1, :n) g, LATERAL (SELECT :slug || '.' || g || '@example.com' AS e) addr
                """
            ),
            {"n": count, "slug": slug, "active": SubscriberStatus.active.value},
        )
        conn.execute(
            text(
                """
                INSERT INTO subscriptions (subscriber_id, list_id, status, source, confirmed_at, created_at, updated_at)
                SELECT id, :list_id, :confirmed, :source, now(), now(), now()
                FROM subscribers WHERE email LIKE :pattern
                """
            ),
            {
                "list_id": list_id,
                "pattern": f"{slug}.%",
                "confirmed": SubscriptionStatus.confirmed.value,
                "source": SubscriptionSource.import_.value,
            },
        )
        conn.execute(text("ANALYZE subscribers; ANALYZE subscriptions"))


@contextmanager
def session_scope_for(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session, session.begin():
        yield session


def publish(settings: Settings) -> str:
    with session_scope(settings) as session:
        stored, _ = digests.publish(session, digests.load_digest(SAMPLE))
        return stored.slug


def create_campaign(settings: Settings, digest: str, slug: str) -> int:
    with session_scope(settings) as session:
        return delivery.create_campaign(session, digest_slug=digest, list_slugs=[slug], allow_repeat=True).id


def sample_message(settings: Settings, digest: str) -> bytes:
    """One real message of the sample digest, exactly as a recipient gets it."""
    engine = make_engine(settings.database_url)
    seed(engine, "sample", 1)
    campaign_id = create_campaign(settings, digest, "sample")
    with session_scope(settings) as session:
        delivery.start(session, settings, campaign_id)
    sessions = session_factory(settings)
    with sessions.begin() as session:
        claimed = ledger.claim(session, campaign_id, 0, 2**62, limit=1, worker="bench")
        data = sending.prepare(session, settings, campaign_id).render(claimed[0])
        delivery.cancel(session, campaign_id)
    engine.dispose()
    return data


# --- measuring ------------------------------------------------------------------------------------------


def smtp_source(port: int, message: Path, count: int, sessions: int = 4) -> float:
    """Messages/s of postfix's smtp-source, reusing connections (-d) like the pipeline does."""
    started = time.monotonic()
    subprocess.run(
        ["smtp-source", "-d", "-s", str(sessions), "-m", str(count), "-F", str(message), "-f", FROM,
         "-t", "bench@example.com", f"127.0.0.1:{port}"],
        check=True,
    )  # fmt: skip
    return count / (time.monotonic() - started)


def send_task(settings: Settings, name: str, *args: object) -> None:
    from celery import Celery

    client = Celery(broker=settings.broker_url)
    client.send_task(name, args=list(args))
    client.close()


@dataclass
class Run:
    recipients: int
    seconds: float
    sending_seconds: float
    peak_rss_mb: float
    counts: dict[str, int]
    cpu: tuple[float, float] = (0.0, 0.0)  # CPU seconds of the worker processes, of the database backends

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds

    def cpu_per_1000(self) -> str:
        """CPU seconds per 1,000 messages sent: workers + PostgreSQL backends (and each)."""
        workers, database = (1000 * s / max(self.recipients, 1) for s in self.cpu)
        return f"{workers + database:.3f} CPU s/1,000 msgs ({workers:.3f} workers + {database:.3f} PostgreSQL)"


def run_campaign(
    settings: Settings, digest: str, slug: str, concurrency: int, log: Path, *, stop_after: float | None = None
) -> Run:
    """Send a planned list's campaign through Celery workers; time from enqueue to finished."""
    campaign_id = create_campaign(settings, digest, slug)
    workers = start_workers(settings, concurrency, log)
    try:
        started = time.monotonic()
        send_task(settings, "worker.tasks.start_campaign", campaign_id)
        seconds, rss, cpu = wait_finished(settings, campaign_id, workers, started, stop_after=stop_after)
    finally:
        workers.stop()
    return finished_run(settings, campaign_id, seconds, rss, cpu)


def wait_finished(
    settings: Settings, campaign_id: int, workers: Workers, started: float, *, stop_after: float | None = None
) -> tuple[float, float, tuple[float, float]]:
    """Wait for the campaign to finish (or cancel it `stop_after` seconds after it started sending), metering
    the CPU of the workers and the database meanwhile. Returns the seconds since `started`, the workers'
    peak RSS and their CPU seconds (workers, database backends)."""
    engine = make_engine(settings.database_url)
    meter = CpuMeter(engine, workers.proc.pid)
    sending_since: float | None = None
    try:
        while True:
            time.sleep(0.2)
            meter.sample()
            with session_scope(settings) as session:
                campaign = delivery.get_campaign(session, campaign_id)
                if campaign.status == CampaignStatus.finished:
                    break
                if campaign.status == CampaignStatus.sending and sending_since is None:
                    sending_since = time.monotonic()  # planned: the clock for stop_after starts
                if stop_after is not None and sending_since and time.monotonic() - sending_since > stop_after:
                    delivery.cancel(session, campaign_id)
                    break
            if workers.proc.poll() is not None:
                raise RuntimeError(f"the workers died; see {workers.log}")
        seconds = time.monotonic() - started
        meter.sample()
        return seconds, peak_rss_mb(workers.proc.pid), meter.seconds()
    finally:
        engine.dispose()


def finished_run(
    settings: Settings, campaign_id: int, seconds: float, rss: float, cpu: tuple[float, float] = (0.0, 0.0)
) -> Run:
    """A run's figures from its ledger: how many were sent, and for how long the campaign was sending."""
    with session_scope(settings) as session:
        campaign = delivery.get_campaign(session, campaign_id)
        counts = {k: v for k, v in progress.tally(session, campaign_id).counts.items() if v}
        assert campaign.started_at is not None
        end = campaign.finished_at or utcnow()
        sending = (end - campaign.started_at).total_seconds()
    return Run(counts.get(DeliveryStatus.sent, 0), seconds, sending, rss, counts, cpu)


def newsletter_command(settings: Settings, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", *args], env=settings_env(settings), cwd=ROOT,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode:
        raise RuntimeError(f"newsletter {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def user_path(settings: Settings, digest: str, slug: str, recipients: int, work: Path) -> tuple[float, Run]:
    """What a user does, as the README says: `subscribers import` of a CSV through the CLI, `campaigns send`
    at once, workers started with `celery -A worker worker` and its default flags; no ANALYZE of ours
    (autovacuum is off on this machine, so only what the application does itself counts).
    Returns the import's seconds and the send's run (timed from `campaigns send` to finished)."""
    newsletter_command(
        settings, "lists", "create", slug, "--name", "The Steppe Courier", "--from-email", FROM,
        "--postal-address", "1 Example Avenue, Astana",
    )  # fmt: skip
    people = work / f"{slug}.csv"
    with people.open("w") as out:
        out.write("email,name\n")
        out.writelines(f"{slug}.{i}@example.com,Reader {i}\n" for i in range(recipients))
    started = time.monotonic()
    newsletter_command(settings, "subscribers", "import", slug, str(people), "--confirmed")
    import_seconds = time.monotonic() - started
    workers = start_workers(settings, None, work / "workers.log")
    try:
        started = time.monotonic()
        campaign_id = int(newsletter_command(settings, "campaigns", "send", digest, "--list", slug, "--again"))
        seconds, rss, cpu = wait_finished(settings, campaign_id, workers, started)
    finally:
        workers.stop()
    return import_seconds, finished_run(settings, campaign_id, seconds, rss, cpu)


def plan_only(settings: Settings, digest: str, slug: str) -> tuple[float, int]:
    campaign_id = create_campaign(settings, digest, slug)
    started = time.monotonic()
    with session_scope(settings) as session:
        ranges = delivery.start(session, settings, campaign_id)
    seconds = time.monotonic() - started
    with session_scope(settings) as session:
        delivery.cancel(session, campaign_id)
    return seconds, len(ranges)


def plan_bench(recipients: int, runs: int) -> None:
    """Planning alone, on a scratch database holding only the list being planned (no SMTP, no Celery)."""
    with scratch_database() as url:
        settings = load_settings(database_url=url, secret_key=SECRET, base_url="https://news.example.org")
        engine = make_engine(url)
        digest = publish(settings)
        started = time.monotonic()
        seed(engine, "million", recipients)
        print(f"(seeding {recipients:,} subscribers in SQL took {time.monotonic() - started:.1f}s)")
        for _ in range(runs):
            plan_seconds, batches = plan_only(settings, digest, "million")
            print(
                f"planning {recipients:,} recipients (render + one INSERT ... SELECT + batch ranges): "
                f"{plan_seconds:.1f}s, {batches:,} batches (target <= 15 s)",
                flush=True,
            )
        engine.dispose()


def rsa_key(directory: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "dkim.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def main() -> None:
    args = _arguments()
    if args.plan_only:
        plan_bench(args.plan_recipients, args.plan_runs)
        return

    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    sink_port, redis_port = free_port(), free_port()
    sink = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1024"]
    redis = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process(sink, sink_port), process(redis, redis_port), scratch_database() as url:
        settings = load_settings(
            database_url=url,
            broker_url=f"redis://127.0.0.1:{redis_port}/0",
            smtp_url=f"smtp://127.0.0.1:{sink_port}?max_connections=64",
            secret_key=SECRET,
            base_url="https://news.example.org",
            environment="production",
        )
        engine = make_engine(url)
        digest = publish(settings)
        figures = _main_campaign(settings, digest, engine, work, args, sink_port)
        paced = None if args.skip_pacing else _pacing(settings, engine, digest, sink_port, args, work)
        _side_by_side(figures, paced, args, engine)
        if not args.quick:
            _more_campaigns(settings, digest, engine, work, args, figures.tuned)
        engine.dispose()


@dataclass
class Figures:
    source: float  # smtp-source's best messages/s
    user: Run
    user_dkim: Run
    tuned: Run


def _pacing(
    settings: Settings, engine: Engine, digest: str, sink_port: int, args: argparse.Namespace, work: Path
) -> pacing.PacingFigures:
    from bench import pacing

    print("\npacing (bench.pacing): smtp-sink behind a proxy that throttles at R, then one failing 20% at random")
    return pacing.measure(settings, engine, digest, sink_port, args, work)


def _side_by_side(
    figures: Figures, paced: pacing.PacingFigures | None, args: argparse.Namespace, engine: Engine
) -> None:
    """The run's figures in one table: the user's path, the tuned path, smtp-source, pacing."""
    from bench import pacing

    with engine.connect() as conn:
        autovacuum = conn.scalar(text("SHOW autovacuum"))
    source = figures.source
    rows = [
        ("smtp-source -d -s 4 (C), best of before/after", source, "1.00", ""),
        (f"user's path: CLI import, `campaigns send`, default workers (autovacuum {autovacuum})",
         figures.user.rate, f"{figures.user.rate / source:.2f} (target >= 0.65)", figures.user.cpu_per_1000()),
        ("user's path with DKIM (target >= 1,200 msg/s)", figures.user_dkim.rate,
         f"{figures.user_dkim.rate / source:.2f}", figures.user_dkim.cpu_per_1000()),
        (f"tuned path: SQL seed + ANALYZE, --concurrency {args.concurrency}", figures.tuned.rate,
         f"{figures.tuned.rate / source:.2f}", figures.tuned.cpu_per_1000()),
    ]  # fmt: skip
    print(f"\nside by side (one run; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    print(f"  {'':<78} {'msg/s':>7}  {'of smtp-source':<26} CPU per 1,000 messages")
    for name, rate, ratio, cpu in rows:
        print(f"  {name:<78} {rate:7,.0f}  {ratio:<26} {cpu}")
    if paced is not None:
        for rate, achieved, refused in paced.throttled:
            print(f"  {f'throttled at R = {rate:.0f}/s (target 0.8-1.2 R)':<78} {achieved:7,.0f}  "
                  f"{achieved / rate:.2f} of R, 421 to {refused:.1%} of transactions")  # fmt: skip
        print(f"  {f'20% random transient failures ({pacing.describe_faults(args)})':<78} "
              f"{paced.faulty.rate:7,.0f}  {paced.faulty_ratio:.2f} of the clean {paced.clean.rate:,.0f}/s "
              f"(target >= 0.50); ledger {paced.faulty.counts}")  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=100_000, help="campaign size for the rate figures")
    parser.add_argument("--dkim-recipients", type=int, default=50_000)
    parser.add_argument("--user-recipients", type=int, default=50_000, help="the user's path: CSV import size")
    parser.add_argument("--naive-recipients", type=int, default=2_000)
    parser.add_argument("--plan-recipients", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "4")))
    parser.add_argument("--source-messages", type=int, default=20_000)
    parser.add_argument(
        "--full", action="store_true", help="send the whole 1M campaign (minutes) instead of 30 s of it for memory"
    )
    parser.add_argument("--quick", action="store_true", help="only smtp-source and the main campaign (for tuning)")
    parser.add_argument(
        "--plan-only", action="store_true", help="only seed --plan-recipients subscribers and time planning them"
    )
    parser.add_argument("--plan-runs", type=int, default=1, help="with --plan-only: plan that many campaigns")
    parser.add_argument("--skip-pacing", action="store_true", help="without the throttle and random-failure runs")
    from bench import pacing

    pacing.arguments(parser)
    return parser.parse_args()


def _main_campaign(
    settings: Settings, digest: str, engine: Engine, work: Path, args: argparse.Namespace, sink_port: int
) -> Figures:
    """smtp-source's rate into the sink before and after, and the pipeline's on the main campaign between."""
    message = sample_message(settings, digest)
    print(f"message: the sample digest, {len(message):,} bytes (DKIM off), worker concurrency {args.concurrency}")

    # smtp-source sends the file with CRLF appended to each line: give it the message with LF endings
    message_file = work / "message.eml"
    message_file.write_bytes(message.replace(b"\r\n", b"\n"))
    source_before = smtp_source(sink_port, message_file, args.source_messages)
    print(f"smtp-source -d -s 4 (C, same message, same sink): {source_before:,.0f} messages/s", flush=True)

    # the user's path first, on tables the tuned seeding below has not analysed
    import_seconds, user_run = user_path(settings, digest, "users", args.user_recipients, work)
    dkim_settings = settings.model_copy(
        update={"dkim_domain": "example.org", "dkim_selector": "bench", "dkim_key_file": rsa_key(work)}
    )
    dkim_import, dkim_user_run = user_path(dkim_settings, digest, "usersdkim", args.user_recipients, work)

    seed(engine, "main", args.recipients)
    main_run = run_campaign(settings, digest, "main", args.concurrency, work / "workers.log")
    # smtp-source varies by a fifth from run to run here: measure it again and compare with its best
    source_after = smtp_source(sink_port, message_file, args.source_messages)
    source_rate = max(source_before, source_after)
    print(f"smtp-source again, after the pipeline: {source_after:,.0f} messages/s; the best, {source_rate:,.0f}/s, "
          "is the baseline")  # fmt: skip
    print(
        f"pipeline, {main_run.recipients:,} recipients: {main_run.rate:,.0f} messages/s end to end "
        f"({main_run.seconds:.1f}s from enqueue to finished, "
        f"{main_run.recipients / main_run.sending_seconds:,.0f}/s after planning; ledger {main_run.counts}); "
        f"worker peak RSS {main_run.peak_rss_mb:.0f} MB"
    )
    print(f"ratio pipeline / smtp-source: {main_run.rate / source_rate:.2f}  (target >= 0.65)")
    print(
        f"user's path (CLI import of {args.user_recipients:,} in {import_seconds:.1f}s, `campaigns send` at once, "
        f"`celery -A worker worker` with default flags, no manual ANALYZE): {user_run.rate:,.0f} messages/s "
        f"({user_run.seconds:.1f}s from send to finished; ledger {user_run.counts}); "
        f"ratio to smtp-source {user_run.rate / source_rate:.2f} (target >= 0.65); "
        f"tuned path above: {main_run.rate:,.0f} messages/s"
    )
    print(
        f"user's path with DKIM (import {dkim_import:.1f}s): {dkim_user_run.rate:,.0f} messages/s "
        f"(target >= 1,200; ledger {dkim_user_run.counts})"
    )
    return Figures(source_rate, user_run, dkim_user_run, main_run)


def _more_campaigns(
    settings: Settings, digest: str, engine: Engine, work: Path, args: argparse.Namespace, main_run: Run
) -> None:
    """DKIM, a small campaign, planning a million and sending some of it, and the naive route."""
    dkim_settings = settings.model_copy(
        update={"dkim_domain": "example.org", "dkim_selector": "bench", "dkim_key_file": rsa_key(work)}
    )
    seed(engine, "dkim", args.dkim_recipients)
    dkim_run = run_campaign(dkim_settings, digest, "dkim", args.concurrency, work / "workers.log")
    print(
        f"pipeline with DKIM (RSA-2048), {dkim_run.recipients:,} recipients: {dkim_run.rate:,.0f} messages/s "
        f"(target >= 1,200); worker peak RSS {dkim_run.peak_rss_mb:.0f} MB"
    )

    seed(engine, "small", 10_000)
    small_run = run_campaign(settings, digest, "small", args.concurrency, work / "workers.log")
    print(
        f"pipeline, 10,000 recipients: {small_run.rate:,.0f} messages/s; worker peak RSS {small_run.peak_rss_mb:.0f} MB"
    )

    started = time.monotonic()
    seed(engine, "million", args.plan_recipients)
    print(f"(seeding {args.plan_recipients:,} subscribers in SQL took {time.monotonic() - started:.1f}s)")
    plan_seconds, batches = plan_only(settings, digest, "million")
    print(
        f"planning {args.plan_recipients:,} recipients (render + one INSERT ... SELECT + batch ranges): "
        f"{plan_seconds:.1f}s, {batches:,} batches (target <= 15 s)"
    )
    big_run = run_campaign(
        settings, digest, "million", args.concurrency, work / "workers.log", stop_after=None if args.full else 30
    )
    print(
        f"pipeline on the {args.plan_recipients:,}-recipient campaign "
        f"({'all of it' if args.full else f'first {big_run.seconds:.0f}s, then cancelled'}): "
        f"{big_run.recipients:,} sent at {big_run.recipients / big_run.sending_seconds:,.0f}/s after planning; "
        f"worker peak RSS {big_run.peak_rss_mb:.0f} MB "
        f"(10k: {small_run.peak_rss_mb:.0f} MB; target <= 150 MB and flat)"
    )

    seed(engine, "naive", args.naive_recipients)
    naive_rate = naive_worker.run(settings, digest, "naive", work / "naive.log")
    print(
        f"naive route (one Celery task per recipient, stdlib EmailMessage, new SMTP connection each), "
        f"{args.naive_recipients:,} recipients: {naive_rate:,.0f} messages/s; "
        f"pipeline is {main_run.rate / naive_rate:.1f}x faster"
    )


if __name__ == "__main__":
    main()
