"""The dispatcher: fans committed outbox events out to the endpoints subscribed to them, signs each request
the Standard Webhooks way, POSTs it, and retries failures with exponential backoff for up to a day, after
which the endpoint is disabled. Every attempt is a row of the endpoint's delivery log."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import outbox
from newsletter.config import Settings
from newsletter.db import is_postgres, unit_of_work, utcnow
from newsletter.errors import Conflict, NotFound
from newsletter.models import OutboxEvent, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from newsletter.webhooks import endpoints

if TYPE_CHECKING:
    import httpx

# httpx and standardwebhooks are imported by the first webhook sent: a web process whose publication has no
# endpoint never loads them (their ~6 MB), though its embedded scheduler runs `dispatch` every sweep.

log = logging.getLogger(__name__)

Status = WebhookDeliveryStatus
CHUNK = 50  # events fanned out, or attempts claimed, per transaction
PARALLEL = 8  # POSTs in flight at once: one slow endpoint must not hold up the others
MAX_DELAY_SECONDS = 6 * 3600
EXCERPT_BYTES = 512  # of the endpoint's answer, kept for the log
MAX_ERROR = 500


class DeliveryNotFound(NotFound):
    def __init__(self, delivery_id: int) -> None:
        super().__init__(f"no webhook delivery {delivery_id}")


@dataclass(frozen=True)
class Attempt:
    """What one POST needs, read when it was claimed (no ORM object crosses into the sending threads)."""

    delivery_id: int
    endpoint_id: int
    event_id: int
    attempt: int
    manual: bool
    url: str
    secret: str
    body: bytes


@dataclass(frozen=True)
class Answer:
    code: int | None
    excerpt: str | None
    duration_ms: int
    error: str | None
    final: bool = False  # no point retrying (the event is too large to send)

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


@dataclass
class DispatchReport:
    fanned_out: int = 0  # delivery rows made from new events
    succeeded: int = 0
    failed: int = 0
    disabled: int = 0  # endpoints disabled after a day of failures
    more: bool = False  # stopped at the time budget with work left


def message_id(event_id: int) -> str:
    """The `webhook-id`: one per event, the same for every attempt and endpoint (receivers dedupe on it)."""
    return f"evt_{event_id}"


def body_of(event: OutboxEvent) -> bytes:
    envelope = {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.payload}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signed_headers(secret: str, msg_id: str, body: bytes, at: dt.datetime) -> dict[str, str]:
    """The three Standard Webhooks headers (the package's signer: v1 = HMAC-SHA256 of id.timestamp.body)."""
    from standardwebhooks import Webhook

    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


def retry_delay(settings: Settings, attempt: int) -> float:
    """After failed attempt n: base * 2^(n-1) times a jitter of 0.8-1.2 (so retries of many endpoints
    failing at once spread out), at most six hours."""
    delay = settings.webhook_retry_base_seconds * 2 ** min(attempt - 1, 30) * random.uniform(0.8, 1.2)
    return float(min(delay, MAX_DELAY_SECONDS))


# --- fan-out and claims -------------------------------------------------------------------------------


def fan_out(session: Session, *, now: dt.datetime, limit: int = CHUNK) -> tuple[int, int]:
    """Turn up to `limit` undispatched events into first attempts for their endpoints, in one transaction
    (the caller's). Returns (events, delivery rows)."""
    receivers = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))).all()
    if not receivers:
        # Nobody listens: every event is dispatched at once, none loaded. An import of 50,000 emits 100,000
        # events, and fanning them out a chunk at a time kept two workers busy for 25 s beside a campaign.
        return outbox.mark_all_dispatched(session, now=now), 0
    events = outbox.claim_undispatched(session, limit=limit, now=now)
    if not events:
        return 0, 0
    rows = [
        {"endpoint_id": e.id, "event_id": event.id, "attempt": 1, "status": Status.pending, "next_attempt_at": now}
        for event in events
        for e in receivers
        if event.type in e.event_types
    ]
    if rows:
        session.execute(insert(WebhookDelivery), [{**row, "manual": False, "created_at": now} for row in rows])
    return len(events), len(rows)


def claim(session: Session, *, now: dt.datetime, limit: int = CHUNK) -> list[Attempt]:
    """Due attempts of enabled endpoints, moved to `sending`. PostgreSQL: concurrent dispatchers skip each
    other's rows; the status guard of the UPDATE covers SQLite's single writer."""
    due = (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == Status.pending,
            WebhookDelivery.next_attempt_at <= now,
            WebhookEndpoint.enabled.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if is_postgres(session):
        due = due.with_for_update(of=WebhookDelivery, skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    claimed = session.scalars(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == Status.pending)
        .values(status=Status.sending, claimed_at=now)
        .returning(WebhookDelivery.id)
    ).all()
    rows = session.execute(
        select(WebhookDelivery, WebhookEndpoint, OutboxEvent)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id.in_(claimed))
        .order_by(WebhookDelivery.id)
    ).all()
    return [Attempt(d.id, e.id, event.id, d.attempt, d.manual, e.url, e.secret, body_of(event)) for d, e, event in rows]


def prune(session: Session, settings: Settings, *, now: dt.datetime) -> int:
    """Delete events dispatched more than WEBHOOK_LOG_DAYS ago, with their delivery log, unless an attempt
    of theirs is still to come. Returns how many events went."""
    busy = select(WebhookDelivery.event_id).where(WebhookDelivery.status.in_([Status.pending, Status.sending]))
    result = session.execute(
        delete(OutboxEvent)
        .where(
            OutboxEvent.dispatched_at < now - dt.timedelta(days=settings.webhook_log_days),
            OutboxEvent.id.not_in(busy),
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def reclaim_stuck(session: Session, settings: Settings, *, now: dt.datetime) -> int:
    """Attempts left in `sending` by a dispatcher that died are due again (the receiver may see the same
    webhook-id twice: webhooks are at-least-once, which is why the id is stable)."""
    lease = dt.timedelta(seconds=3 * settings.webhook_timeout_seconds + 60)
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.status == Status.sending, WebhookDelivery.claimed_at < now - lease)
        .values(status=Status.pending, next_attempt_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- sending ------------------------------------------------------------------------------------------


def post(http: httpx.Client, settings: Settings, attempt: Attempt, *, now: dt.datetime) -> Answer:
    """One signed POST; never raises. Only the start of the answer is read."""
    import httpx

    if len(attempt.body) > settings.webhook_max_payload_bytes:
        error = f"the event is {len(attempt.body)} bytes, over NEWSLETTER_WEBHOOK_MAX_PAYLOAD_BYTES; not sent"
        return Answer(None, None, 0, error, final=True)
    headers = signed_headers(attempt.secret, message_id(attempt.event_id), attempt.body, now)
    started = time.perf_counter()
    try:
        with http.stream("POST", attempt.url, content=attempt.body, headers=headers) as response:
            excerpt = b""
            for chunk in response.iter_raw():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
            code = response.status_code
    except httpx.HTTPError as failure:
        elapsed = round((time.perf_counter() - started) * 1000)
        return Answer(None, None, elapsed, f"{type(failure).__name__}: {failure}"[:MAX_ERROR])
    elapsed = round((time.perf_counter() - started) * 1000)
    text = excerpt[:EXCERPT_BYTES].decode("utf-8", "replace").replace("\x00", "")
    problem = None if 200 <= code < 300 else f"HTTP {code}" + (" (redirects are not followed)" if code < 400 else "")
    return Answer(code, text, elapsed, problem)


def record(session: Session, settings: Settings, attempt: Attempt, answer: Answer, *, now: dt.datetime) -> str | None:
    """Write an attempt's outcome; schedule the next attempt, or give up and disable the endpoint after a
    day of failures. Returns the reason when it disabled the endpoint."""
    if answer.ok or attempt.manual or answer.final:
        _write(session, attempt, answer, Status.succeeded if answer.ok else Status.failed)
        return None
    series_start = _series_start(session, attempt)
    deadline = series_start + dt.timedelta(hours=settings.webhook_retry_max_hours)
    if now < deadline:  # the last retry is at the deadline: a day of trying, not a day minus the last delay
        next_at = min(now + dt.timedelta(seconds=retry_delay(settings, attempt.attempt)), deadline)
        _write(session, attempt, answer, Status.failed)
        session.add(
            WebhookDelivery(
                endpoint_id=attempt.endpoint_id,
                event_id=attempt.event_id,
                attempt=attempt.attempt + 1,
                status=Status.pending,
                next_attempt_at=next_at,
                manual=False,
                created_at=now,
            )
        )
        return None
    _write(session, attempt, answer, Status.exhausted)
    return _disable_if_failing(session, attempt, answer, series_start)


def _write(session: Session, attempt: Attempt, answer: Answer, status: Status) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == attempt.delivery_id)
        .values(
            status=status,
            response_code=answer.code,
            response_excerpt=answer.excerpt,
            duration_ms=answer.duration_ms,
            error=answer.error,
            next_attempt_at=None,
        )
    )


def _series_start(session: Session, attempt: Attempt) -> dt.datetime:
    start = session.scalar(
        select(func.min(WebhookDelivery.created_at)).where(
            WebhookDelivery.endpoint_id == attempt.endpoint_id,
            WebhookDelivery.event_id == attempt.event_id,
            WebhookDelivery.manual.is_(False),
        )
    )
    assert start is not None
    return start


def _disable_if_failing(session: Session, attempt: Attempt, answer: Answer, since: dt.datetime) -> str | None:
    """Disable the endpoint unless something reached it since this event's first attempt (then only this
    event failed, say a payload it cannot take)."""
    reached = session.scalar(
        select(func.count()).where(
            WebhookDelivery.endpoint_id == attempt.endpoint_id,
            WebhookDelivery.status == Status.succeeded,
            WebhookDelivery.created_at >= since,
        )
    )
    if reached:
        return None
    reason = (
        f"every attempt failed since {since:%Y-%m-%d %H:%M} UTC ({attempt.attempt} attempts of event "
        f"{attempt.event_id}; the last: {answer.error})"
    )
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == attempt.endpoint_id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason, updated_at=utcnow())
    )
    log.warning("webhook endpoint %s disabled: %s", attempt.endpoint_id, reason)
    return reason


def dispatch(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    now: Callable[[], dt.datetime] = utcnow,
    http: httpx.Client | None = None,
    budget_seconds: float = 20.0,
) -> DispatchReport:
    """Everything due now: new events fanned out, due attempts sent, outcomes recorded. Stops after
    `budget_seconds` (tasks stay short) with `more` set when work is left."""
    report = DispatchReport()
    deadline = time.monotonic() + budget_seconds
    own_client = http is None
    try:
        with unit_of_work(sessions) as session:
            reclaim_stuck(session, settings, now=now())
            prune(session, settings, now=now())
        while True:
            with unit_of_work(sessions) as session:
                events, rows = fan_out(session, now=now())
            report.fanned_out += rows
            if not events:
                break
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="webhook") as pool:
            while time.monotonic() < deadline:
                with unit_of_work(sessions) as session:
                    attempts = claim(session, now=now())
                if not attempts:
                    return report
                if http is None:  # the first attempt to send: only now the HTTP client (and httpx)
                    from newsletter.webhooks import transport

                    http = transport.client(
                        allow_private=settings.webhooks_allow_private, timeout=settings.webhook_timeout_seconds
                    )
                answers = list(pool.map(functools.partial(_post_now, http, settings, now), attempts))
                _record_all(sessions, settings, attempts, answers, report, now())
        report.more = True
        return report
    finally:
        if own_client and http is not None:
            http.close()


def _post_now(http: httpx.Client, settings: Settings, now: Callable[[], dt.datetime], attempt: Attempt) -> Answer:
    return post(http, settings, attempt, now=now())


def _record_all(
    sessions: sessionmaker[Session],
    settings: Settings,
    attempts: list[Attempt],
    answers: list[Answer],
    report: DispatchReport,
    now: dt.datetime,
) -> None:
    with unit_of_work(sessions) as session:
        for attempt, answer in zip(attempts, answers, strict=True):
            if answer.ok:
                report.succeeded += 1
            else:
                report.failed += 1
                log.info("webhook %s to %s failed: %s", attempt.delivery_id, attempt.url, answer.error)
            report.disabled += record(session, settings, attempt, answer, now=now) is not None


# --- the log and manual redelivery --------------------------------------------------------------------


def log_of(session: Session, endpoint_id: int, *, before: int | None = None, limit: int = 50) -> list[WebhookDelivery]:
    """An endpoint's attempts, newest first (keyset: pass the last id shown as `before`)."""
    endpoints.get(session, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    return list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))


def get_delivery(session: Session, delivery_id: int) -> WebhookDelivery:
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:
        raise DeliveryNotFound(delivery_id)
    return row


def redeliver(session: Session, delivery_id: int, *, now: dt.datetime | None = None) -> WebhookDelivery:
    """Send a delivery's event to its endpoint again, once, now (the same webhook-id: receivers that
    already processed it can tell). The endpoint must be enabled."""
    original = get_delivery(session, delivery_id)
    endpoint = endpoints.get(session, original.endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"webhook endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); enable it first")
    last = session.scalar(
        select(func.max(WebhookDelivery.attempt)).where(
            WebhookDelivery.endpoint_id == original.endpoint_id, WebhookDelivery.event_id == original.event_id
        )
    )
    row = WebhookDelivery(
        endpoint_id=original.endpoint_id,
        event_id=original.event_id,
        attempt=(last or 0) + 1,
        status=Status.pending,
        next_attempt_at=now or utcnow(),
        manual=True,
        created_at=now or utcnow(),
    )
    session.add(row)
    session.flush()
    outbox.notify_on_commit(session)
    return row
