"""Celery tasks: thin wrappers that open a unit of work, call newsletter.delivery and enqueue what it returns."""

from __future__ import annotations

import logging
import socket
import threading
import time
from functools import cache

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from newsletter import confirmations, delivery, import_jobs, logs, metrics, outbox, sequences
from newsletter.config import Settings, get_settings
from newsletter.db import session_factory, session_scope
from newsletter.delivery import scheduling, sending
from newsletter.mailer import Mailer, get_mailer
from newsletter.models import Subscription
from newsletter.pacing import get_pacer
from newsletter.providers import inbox
from newsletter.ratelimit import RateLimiter, get_rate_limiter
from newsletter.webhooks import dispatch
from worker.app import app

log = logging.getLogger(__name__)


@cache
def _mailer() -> Mailer:
    settings = get_settings()
    # one pace per SMTP server for the whole fleet (Redis), or this process in embedded mode
    return get_mailer(settings.smtp_url, settings.outbox_dir, get_pacer(settings))


@cache
def _rate_limiter() -> RateLimiter | None:
    return get_rate_limiter(get_settings())


def enqueue_batches(ranges: list[delivery.BatchRange]) -> None:
    """Enqueue after the transaction that made the rows visible has committed (callers guarantee it)."""
    now = time.time()
    for batch in ranges:
        send_batch.apply_async(
            (batch.campaign_id, batch.first_id, batch.last_id),
            {"due": now + (batch.countdown or 0)},  # for the queue latency metric
            countdown=batch.countdown,
        )


@app.task(acks_late=True)
def start_campaign(campaign_id: int) -> None:
    with session_scope(get_settings()) as session:
        ranges = delivery.start(session, get_settings(), campaign_id)
    enqueue_batches(ranges)


@app.task(acks_late=True)
def send_batch(campaign_id: int, first_id: int, last_id: int, due: float | None = None) -> None:
    """`due`: when the batch was meant to start (enqueue time + countdown), for the queue latency."""
    settings = get_settings()
    limiter = _rate_limiter()
    started = time.time()
    if due is not None:
        metrics.QUEUE_LATENCY.observe(max(0.0, started - due))
    report = sending.send_batch(
        session_factory(settings),
        settings,
        _mailer(),
        campaign_id,
        first_id,
        last_id,
        throttle=metrics.timed_wait(limiter.acquire) if limiter else None,
    )
    seconds = time.time() - started
    metrics.BATCH_SECONDS.observe(seconds)
    logs.event(
        log, "batch",
        f"campaign {campaign_id} batch {first_id}-{last_id}: {report.sent} sent, {report.retried} deferred, "
        f"{report.failed} failed in {seconds:.2f}s",
        campaign=campaign_id, first_id=first_id, last_id=last_id, sent=report.sent, deferred=report.retried,
        failed=report.failed, released=report.released, seconds=round(seconds, 3), server=report.server,
        host=socket.gethostname(),
    )  # fmt: skip
    # In embedded mode a countdown would run at once and spin; the sweep (or --wait loop) picks retries up.
    if report.retry_after is not None and not app.conf.task_always_eager:
        send_batch.apply_async(
            (campaign_id, first_id, last_id), {"due": time.time() + report.retry_after}, countdown=report.retry_after
        )


@app.task(acks_late=True)
def sweep() -> None:
    """The periodic recovery pass that Celery beat enqueues; it leaves the beat's heartbeat."""
    settings = get_settings()
    try:
        with session_scope(settings) as session:
            scheduling.record_beat(session)
    except SQLAlchemyError:  # the heartbeat only informs `campaigns send --at`: recovery must go on
        log.exception("sweep: could not record the beat's heartbeat")
    run_sweep(settings)


def run_sweep(settings: Settings) -> None:
    """The sweep and what it finds to do: enqueued, or run in this process in embedded mode."""
    with session_scope(settings) as session:
        report = delivery.sweep(session, settings)
        abandoned = import_jobs.fail_abandoned(session, settings.import_stale_seconds)
    if abandoned:
        logs.event(
            log, "sweep", f"sweep: import(s) {', '.join(map(str, abandoned))} lost their process; marked failed",
            level=logging.WARNING, imports=abandoned,
        )  # fmt: skip
    metrics.count_unknown(report.unknown)
    if report.unknown or report.requeued or report.started:
        became = "pending again (policy resend)" if settings.unknown_policy == "resend" else "unknown"
        logs.event(
            log, "sweep",
            f"sweep: {report.unknown} deliveries in flight when their worker died are now {became}; "
            f"{len(report.requeued)} batches re-enqueued, {len(report.started)} scheduled campaigns started",
            level=logging.WARNING if report.unknown else logging.INFO,
            unknown=report.unknown, policy=settings.unknown_policy, requeued=len(report.requeued),
            started=list(report.started),
        )  # fmt: skip
    enqueue_batches(report.requeued)
    for campaign_id in report.started:
        start_campaign.delay(campaign_id)
    plan_sequences(settings)


def plan_sequences(settings: Settings, subscriber_id: int | None = None) -> None:
    """Plan the sequence steps that fell due (for one subscriber, or all) and send them."""
    with session_scope(settings) as session:
        ranges = sequences.plan_due(session, settings, subscriber_id=subscriber_id)
    enqueue_batches(ranges)


@app.task(acks_late=True)
def start_sequences(subscription_id: int) -> None:
    """A subscription was confirmed (enqueued after that commit): its welcome step without waiting for the
    sweep."""
    settings = get_settings()
    with session_scope(settings) as session:
        subscriber_id = session.scalar(select(Subscription.subscriber_id).where(Subscription.id == subscription_id))
    if subscriber_id is not None:
        plan_sequences(settings, subscriber_id)


@app.task(acks_late=True)
def send_confirmation(subscription_id: int) -> None:
    """The double opt-in email of one pending subscription (enqueued after the subscribe request commits)."""
    settings = get_settings()
    with session_scope(settings) as session:
        result = confirmations.send_confirmation(session, settings, _mailer(), subscription_id)
    if result is not None and not result.ok:
        log.warning("confirmation email of subscription %s not sent: %s %s", subscription_id, result.code, result.text)


@app.task(acks_late=True)
def send_import_confirmations(list_id: int) -> None:
    """Double opt-in emails for subscriptions an import left pending, a batch at a time, rate-limited."""
    settings = get_settings()
    limiter = _rate_limiter()
    deadline = time.monotonic() + 20  # keep tasks short; the rest goes to a fresh task
    while True:
        with session_scope(settings) as session:
            claimed = confirmations.claim_unsent_confirmations(session, list_id, limit=settings.batch_size)
        if not claimed:
            return
        with session_scope(settings) as session:
            confirmations.send_confirmations(
                session, settings, _mailer(), claimed, throttle=limiter.acquire if limiter else None
            )
        # In embedded mode a new task would run nested in this one: loop instead of recursing.
        if time.monotonic() > deadline and not app.conf.task_always_eager:
            send_import_confirmations.delay(list_id)
            return


@app.task(acks_late=True)
def run_import(job_id: int) -> None:
    """An import job of the admin's wizard; its progress goes to its row, which the web page polls."""
    settings = get_settings()
    sessions = session_factory(settings)
    report = import_jobs.run(sessions, job_id, progress_sessions=sessions)
    if report is not None and report.pending_confirmation:
        with sessions() as session:
            list_id = import_jobs.get_job(session, job_id).list_id
        if list_id is not None:
            send_import_confirmations.delay(list_id)


# --- outgoing webhooks ----------------------------------------------------------------------------------

# Set after a commit that emitted events when there is no broker: the embedded scheduler's webhook thread
# (`newsletter serve`) wakes up and dispatches them. Nothing is sent from the committing request itself.
webhooks_due = threading.Event()


def _outbox_committed() -> None:
    if app.conf.task_always_eager:
        webhooks_due.set()
        return
    try:
        dispatch_webhooks.delay()
    except Exception:  # the change is committed whatever the broker says: beat's pass sends the events
        log.exception("webhooks: could not enqueue a dispatch; the periodic one will send the events")


outbox.on_commit(_outbox_committed)


@app.task(acks_late=True)
def dispatch_webhooks() -> None:
    """Send what the outbox holds and what is due for a retry; Celery beat also runs it periodically, which
    picks up events whose task was lost and attempts a crashed dispatcher left."""
    report = run_webhooks(get_settings())
    if report.more and not app.conf.task_always_eager:
        dispatch_webhooks.delay()


def run_webhooks(settings: Settings) -> dispatch.DispatchReport:
    report = dispatch.dispatch(session_factory(settings), settings)
    if report.fanned_out or report.failed or report.disabled:
        log.info("webhooks: %s", report)
    return report


# --- provider webhook events (newsletter/providers/inbox.py) ---------------------------------------------

# Set after a webhook accepted events when there is no broker: `newsletter serve`'s provider-events thread
# wakes up and applies them.
provider_events_due = threading.Event()
# With a broker, a web process enqueues at most one pass per this many seconds: that pass starts after
# them and applies every event accepted meanwhile, so a thousand requests a second cost a few tasks.
# Without one, serve's thread gathers the events of this long into one pass likewise.
PROVIDER_EVENTS_DELAY = 0.2
_enqueued = {"at": 0.0}
_enqueue_lock = threading.Lock()


def _inbox_accepted() -> None:
    if app.conf.task_always_eager:
        provider_events_due.set()
        return
    with _enqueue_lock:
        now = time.monotonic()
        if now - _enqueued["at"] < PROVIDER_EVENTS_DELAY:
            return
        _enqueued["at"] = now
    try:
        process_provider_events.apply_async(countdown=PROVIDER_EVENTS_DELAY)
    except Exception:  # the events are committed whatever the broker says: beat's pass applies them
        _enqueued["at"] = 0.0
        log.exception("provider events: could not enqueue a pass; the periodic one will apply them")


inbox.on_accept(_inbox_accepted)


@app.task(acks_late=True)
def process_provider_events(prune: bool = False) -> None:
    """Apply the provider events accepted so far, a batch per transaction; Celery beat also runs it each
    sweep (with `prune`), which picks up events whose task was lost."""
    settings = get_settings()
    deadline = time.monotonic() + 20  # keep tasks short; the rest goes to a fresh task
    while run_provider_events(settings, prune=prune) == inbox.BATCH:
        prune = False
        if time.monotonic() > deadline:
            process_provider_events.delay()
            return


def run_provider_events(settings: Settings, *, prune: bool = False) -> int:
    """One batch of accepted provider events applied (and, with `prune`, old ones forgotten); how many."""
    with session_scope(settings) as session:
        done = inbox.process(session, settings)
        pruned = inbox.prune(session, settings) if prune else 0
    if done or pruned:
        acted = sum(1 for p in done if p.outcome.result in ("suppressed", "recorded"))
        log.info("provider events: %d applied (%d changed something), %d old ones forgotten", len(done), acted, pruned)
    return len(done)
