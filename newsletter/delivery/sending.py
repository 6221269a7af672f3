"""The batch loop: claim a group of a keyset range, send it on one connection, record it, repeat.

Rows are claimed `outcome_flush_count` at a time and their outcomes written before the next claim, so a
worker killed at any instant leaves at most one group in `sending`: that bounds the `unknown` set, and
nothing claimed-but-never-tried is lost silently. Also here: the per-process caches the loop reuses from
batch to batch (the prepared campaign, the failure window) and the auto-pause they drive.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from newsletter import metrics, outbox
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery import finish_if_done, get_campaign, log_state
from newsletter.delivery.claims import next_retry_delay, release_claims, renew_claims
from newsletter.delivery.composing import NothingWanted, PreparedCampaign, envelope_address
from newsletter.delivery.ledger import (
    Claimed,
    Outcomes,
    claim,
    record,
    record_sent_and_claim,
    rowcount,
)
from newsletter.dkim import signer_for
from newsletter.mailer import Mailer, MailSession, WireBytes
from newsletter.messages import InvalidHeader
from newsletter.models import Campaign, CampaignStatus, EmailSequence, MailingList, SequenceStep
from newsletter.tokens import Tokens

log = logging.getLogger(__name__)

# How long a worker keeps retrying to write outcomes it holds while the database is unreachable: the
# messages went out, so a short outage must not turn them into `unknown`. Capped by the claim lease.
_RECORD_PATIENCE_SECONDS = 60.0
# A claim is renewed at least this many times per lease while its group is being sent: the margin covers a
# slow statement or a message that takes a while to be answered.
_RENEWALS_PER_LEASE = 4


@dataclass
class BatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    retry_after: float | None = None  # seconds until the earliest retry of this range is due
    server: str = "none"  # host:port of the SMTP server the batch ended on

    def count(self, outcomes: Outcomes) -> None:
        """Add a group's outcomes, once they are written (so the metrics count what the ledger holds)."""
        sent, retried, failed = len(outcomes.sent), len(outcomes.retry), len(outcomes.failed) + len(outcomes.invalid)
        self.sent += sent
        self.retried += retried
        self.failed += failed
        metrics.count_outcomes(sent=sent, deferred=retried, failed=failed)


def worker_name() -> str:
    """Who holds a claim: host and process, plus a token of this one batch run, so that a run gives back
    only its own claims (never those a crashed earlier task of the same process left to the sweep)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


_prepared: dict[tuple[Settings, int, dt.datetime | None], PreparedCampaign] = {}


def prepare(session: Session, settings: Settings, campaign_id: int) -> PreparedCampaign:
    """The campaign's pre-encoded message, built once per process and reused by every batch of it."""
    # planned_at tells a re-planned campaign, or another database's campaign with the same id, apart
    planned_at = session.scalar(select(Campaign.planned_at).where(Campaign.id == campaign_id))
    key = (settings, campaign_id, planned_at)
    if key not in _prepared:
        campaign = get_campaign(session, campaign_id)
        _prepared.clear()  # one campaign at a time per process is the common case; keep memory flat
        prepared = PreparedCampaign(settings, campaign, Tokens(settings.secret_key), signer_for(settings))
        prepared.step = _sequence_step(session, campaign_id)
        _prepared[key] = prepared
    return _prepared[key]


def _sequence_step(session: Session, campaign_id: int) -> dict[str, Any] | None:
    """What a `sequence.step_sent` event says of the step whose campaign this is; None for a digest's."""
    row = session.execute(
        select(SequenceStep.id, SequenceStep.position, SequenceStep.subject, MailingList.slug)
        .join(EmailSequence, EmailSequence.id == SequenceStep.sequence_id)
        .join(MailingList, MailingList.id == EmailSequence.list_id)
        .where(SequenceStep.campaign_id == campaign_id)
    ).first()
    if row is None:
        return None
    return {"list": row.slug, "step": {"id": row.id, "position": row.position, "subject": row.subject}}


def emit_step_sent(session: Session, prepared: PreparedCampaign, claimed: dict[int, Claimed], sent: list[int]) -> None:
    """`sequence.step_sent` for each accepted message of a sequence step, in the transaction that records it."""
    assert prepared.step is not None
    now = utcnow().isoformat()
    outbox.emit_many(
        session,
        "sequence.step_sent",
        (
            prepared.step
            | {
                "subscriber": {"id": claimed[d].subscriber_id, "email": claimed[d].email},
                "delivery_id": d,
                "message_id": prepared.ids.of(d),
                "sent_at": now,
            }
            for d in sent
            if d in claimed
        ),
    )


class FailureWindow:
    """The outcomes of this process's last N messages of one campaign, for auto-pause."""

    def __init__(self, campaign_id: int, size: int) -> None:
        self.campaign_id = campaign_id
        self.outcomes: deque[bool] = deque(maxlen=size)  # True: failed or deferred
        self.last_failure = ""

    def add(self, outcomes: Outcomes) -> None:
        self.outcomes.extend([False] * len(outcomes.sent))
        for _, result in (*outcomes.retry, *outcomes.failed):
            self.outcomes.append(True)
            self.last_failure = f"{result.code} {result.text}" if result.code else result.text

    def verdict(self, threshold: float) -> str | None:
        """The reason to pause, when the window is full and its failure share is past the threshold."""
        size, failed = len(self.outcomes), sum(self.outcomes)
        if not threshold or size < (self.outcomes.maxlen or 0) or failed / size <= threshold:
            return None
        self.outcomes.clear()  # after a resume, judge afresh
        return (
            f"auto-paused: {failed} of the last {size} messages failed or were deferred "
            f"(over {threshold:.0%}); last answer: {self.last_failure[:300]}"
        )


_windows: dict[int, FailureWindow] = {}


def failure_window(settings: Settings, campaign_id: int) -> FailureWindow:
    window = _windows.get(campaign_id)
    if window is None:
        _windows.clear()
        window = _windows[campaign_id] = FailureWindow(campaign_id, settings.auto_pause_window)
    return window


def auto_pause(session: Session, campaign_id: int, reason: str) -> bool:
    """Pause a sending campaign from inside the send loop (no lock wait: a plain conditional UPDATE)."""
    result = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.sending)
        .values(status=CampaignStatus.paused, pause_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result):
        log_state(campaign_id, CampaignStatus.paused, reason)
        outbox.emit_campaign(session, "campaign.paused", campaign_id, reason=reason, by="failure rate")
    return bool(rowcount(result))


def send_batch(
    sessions: sessionmaker[Session],
    settings: Settings,
    mailer: Mailer,
    campaign_id: int,
    first_id: int,
    last_id: int,
    *,
    throttle: Callable[[int], None] | None = None,
) -> BatchReport:
    """Send one keyset range: claim a group, send it on one connection, record it, repeat.

    Takes a session factory rather than a session because the claim must be committed before a message
    leaves (so a crash shows the row as `sending`) and outcomes are committed as they come: every
    `outcome_flush_count` messages or `outcome_flush_ms`, the last ones of a group together with the
    next claim, in one transaction. A worker killed at any instant thus leaves at most one group in
    `sending`, and that is the bound on the `unknown` set.
    """
    with sessions() as session:
        prepared = prepare(session, settings, campaign_id)
    run = _BatchRun(sessions, settings, prepared, first_id, last_id)
    try:
        with mailer.session() as smtp:
            try:
                run.send_range(smtp, throttle)
            finally:
                run.report.server = getattr(smtp, "server", "local")
    finally:
        run.close()
    report = run.report
    with sessions.begin() as session:
        report.released = release_claims(session, campaign_id, first_id, last_id, run.worker)
        report.retry_after = next_retry_delay(session, campaign_id, first_id, last_id)
        finish_if_done(session, campaign_id)
    return report


class _BatchRun:
    """One run of `send_batch`: its claim owner, its database session and connection, its report."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, prepared: PreparedCampaign, first: int, last: int
    ) -> None:
        self.sessions, self.settings, self.prepared = sessions, settings, prepared
        self.first_id, self.last_id = first, last
        self.worker = worker_name()
        self.report = BatchReport()
        self.window = failure_window(settings, prepared.campaign_id)
        self.flush_after = settings.outcome_flush_ms / 1000
        self.patience = min(_RECORD_PATIENCE_SECONDS, settings.claim_lease_seconds / 3)
        # Held rows are renewed this often while a group is sent (each write of outcomes checks), so a group
        # that takes longer than the lease on a slow or paced server is never taken by the sweep.
        self.renew_every = settings.claim_lease_seconds / _RENEWALS_PER_LEASE
        self.claimed_at = time.monotonic()
        # One session for the whole batch; on PostgreSQL, groups that went out cleanly use `fast` instead,
        # except for a sequence step: its `sequence.step_sent` events are written with the outcomes.
        self.session = sessions()
        self.fast = _autocommit_connection(sessions) if prepared.step is None else None
        self.group: dict[int, Claimed] = {}
        self.reconnect = False

    def close(self) -> None:
        self.session.close()
        if self.fast is not None:
            self.fast.close()

    def send_range(self, smtp: MailSession, throttle: Callable[[int], None] | None) -> None:
        outcomes = Outcomes()
        while True:
            group = self.record_and_claim(outcomes, claim_next=True)
            self.report.count(outcomes)
            if not group:
                return
            if throttle is not None:
                throttle(len(group))
            outcomes = self.send_group(smtp, group)

    def send_group(self, smtp: MailSession, group: list[Claimed]) -> Outcomes:
        """Compose and send one claimed group; returns the outcomes not written yet."""
        prepared, flush_after = self.prepared, self.flush_after
        self.group = {claimed.delivery_id: claimed for claimed in group}
        outcomes = Outcomes()
        ready: list[Claimed] = []
        items: list[tuple[str, str, bytes]] = []
        for claimed in group:
            try:
                data = WireBytes(prepared.render(claimed))  # the composer writes wire form
                items.append((prepared.envelope_for(claimed.delivery_id), envelope_address(claimed.email), data))
                ready.append(claimed)
            except InvalidHeader as error:
                outcomes.invalid.append((claimed, f"not sent: {error}"))
            except NothingWanted:
                outcomes.unwanted.append(claimed)
        flushed_at = started = time.monotonic()
        codes: list[int] = []
        for claimed, result in zip(ready, smtp.send_many(items), strict=True):
            outcomes.add(claimed, result)
            codes.append(result.code)
            if time.monotonic() - flushed_at > flush_after and claimed is not ready[-1]:
                # a slow server: write what is known, so a crash now leaves fewer rows unknown
                self.record_and_claim(outcomes, claim_next=False)
                self.report.count(outcomes)
                metrics.count_replies(getattr(smtp, "server", "local"), codes)
                outcomes, codes = Outcomes(), []
                flushed_at = time.monotonic()
        metrics.SEND_SECONDS.observe(time.monotonic() - started)
        metrics.count_replies(getattr(smtp, "server", "local"), codes)
        return outcomes

    def record_and_claim(self, outcomes: Outcomes, *, claim_next: bool) -> list[Claimed]:
        """Write the outcomes (and claim the next group), riding out a short database outage."""
        self.window.add(outcomes)
        reason = self.window.verdict(self.settings.auto_pause_failure_rate)
        # sent and deferred rows are written by the one-statement fast path; failures need their events
        clean = reason is None and len(outcomes.sent) + len(outcomes.retry) == len(outcomes)
        deadline = time.monotonic() + self.patience
        while True:
            try:
                return self._write(outcomes, reason, clean=clean, claim_next=claim_next)
            except DBAPIError as error:
                self.session.close()
                self.session = self.sessions()
                if self.fast is not None:
                    self.fast.close()
                    self.fast = None  # connecting may fail while the server is down: reconnect in the loop
                    self.reconnect = True
                if not (outcomes and _database_down(error)) or time.monotonic() > deadline:
                    raise
                log.warning("database unreachable, keeping %d outcomes and retrying: %s", len(outcomes), error)
                time.sleep(1.0)

    def _write(self, outcomes: Outcomes, reason: str | None, *, clean: bool, claim_next: bool) -> list[Claimed]:
        prepared, group_size = self.prepared, self.settings.outcome_flush_count
        if self.reconnect:
            self.fast, self.reconnect = _autocommit_connection(self.sessions), False
        renew = not claim_next and time.monotonic() - self.claimed_at > self.renew_every
        if self.fast is not None and clean:
            if renew:
                self._renew(self.fast)
            return self._claimed(
                record_sent_and_claim(
                    self.fast,
                    self.settings,
                    prepared.ids,
                    outcomes,
                    self.worker,
                    claim_next=claim_next,
                    first_id=self.first_id,
                    last_id=self.last_id,
                    limit=group_size,
                ),
                claim_next,
            )
        session = self.session
        record(session, self.settings, prepared.ids, outcomes, self.worker)
        if prepared.step is not None and outcomes.sent:
            emit_step_sent(session, prepared, self.group, outcomes.sent)
        if reason is not None:
            auto_pause(session, prepared.campaign_id, reason)  # the claim below then finds nothing
        group = (
            claim(session, prepared.campaign_id, self.first_id, self.last_id, limit=group_size, worker=self.worker)
            if claim_next
            else []
        )
        if renew:
            self._renew(session)
        session.commit()
        return self._claimed(group, claim_next)

    def _renew(self, bind: Session | Connection) -> None:
        renew_claims(bind, self.prepared.campaign_id, self.first_id, self.last_id, self.worker)
        self.claimed_at = time.monotonic()

    def _claimed(self, group: list[Claimed], claim_next: bool) -> list[Claimed]:
        if claim_next:
            self.claimed_at = time.monotonic()  # the claim wrote the new group's claim time
        return group


def _database_down(error: BaseException) -> bool:
    return isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def _autocommit_connection(sessions: sessionmaker[Session]) -> Connection | None:
    """A connection of the batch's own in autocommit mode, for the one-statement record-and-claim; None
    on SQLite, or when the factory is bound to a connection (a caller's transaction, as in tests)."""
    bind = sessions.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        return bind.connect().execution_options(isolation_level="AUTOCOMMIT")
    return None
