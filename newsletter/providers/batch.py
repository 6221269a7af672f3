"""The hard bounces and complaints of a batch of provider events, applied with a handful of set-based
statements instead of five round trips each: the effects `bounces.apply` gives one report (the event,
the ledger row failed, the address suppressed, the outbox's webhook event, the metric), found and written
for the whole batch at once. Soft bounces (counted against a threshold, address by address) and
deliveries keep their own paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter import bounces, metrics, outbox
from newsletter.db import is_postgres, utcnow
from newsletter.models import Delivery, DeliveryStatus, Event, EventType, Subscriber, Suppression, SuppressionReason
from newsletter.models import email_hash as hash_of

HARD = "hard bounce: the address does not exist or refuses mail for good"
COMPLAINT = "complaint: never mailed again"
_SMTP_CODE = re.compile(r"\s*smtp\s*;\s*([2-5]\d\d)\b", re.IGNORECASE)


def batchable(report: bounces.Report) -> bool:
    return report.kind == "complaint" or (report.kind == "bounce" and report.hard is True)


@dataclass
class _Writes:
    events: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    suppressions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bounced: list[dict[str, Any]] = field(default_factory=list)  # outbox payloads
    complained: list[dict[str, Any]] = field(default_factory=list)


def apply_many(
    session: Session, items: list[tuple[Delivery, bounces.Report]], *, source: str
) -> list[bounces.Outcome | None]:
    """Each item's outcome when it is a hard bounce or a complaint (`batchable`), else None (the caller
    applies it with `bounces.apply`). Their circuit breaker is the caller's (`bounces.breaker_verdict`)."""
    wanted = [n for n, (_, report) in enumerate(items) if batchable(report)]
    outcomes: list[bounces.Outcome | None] = [None] * len(items)
    if not wanted:
        return outcomes
    subscriber_ids = {items[n][0].subscriber_id for n in wanted}
    delivery_ids = {items[n][0].id for n in wanted}
    found = session.execute(select(Subscriber.id, Subscriber.email).where(Subscriber.id.in_(subscriber_ids)))
    addresses: dict[int, str | None] = {subscriber_id: address for subscriber_id, address in found}
    kinds = [EventType.bounce, EventType.complaint]
    reported = select(Event.delivery_id, Event.type).where(Event.delivery_id.in_(delivery_ids), Event.type.in_(kinds))
    seen: set[tuple[int | None, EventType]] = {(delivery_id, kind) for delivery_id, kind in session.execute(reported)}
    writes = _Writes()
    for n in wanted:
        row, report = items[n]
        outcomes[n] = _one(row, report, addresses.get(row.subscriber_id), seen, writes, source)
    _write(session, writes, [row for row, _ in items])
    return outcomes


def _one(
    row: Delivery,
    report: bounces.Report,
    address: str | None,
    seen: set[tuple[int | None, EventType]],
    writes: _Writes,
    source: str,
) -> bounces.Outcome:
    """What one report does, its writes added to the batch's (the rules of `bounces._apply`)."""
    complaint = report.kind == "complaint"
    kind = EventType.complaint if complaint else EventType.bounce
    named = {a.lower() for a in (report.recipient, report.original_recipient) if a}
    if not complaint and (address or "").lower() not in named:
        why = "the bounce names another address than this delivery's recipient"
        return bounces.Outcome(report, row.id, row.campaign_id, "ignored", why)
    if (row.id, kind) in seen:
        return bounces.Outcome(report, row.id, row.campaign_id, "already recorded", "this report was read before")
    seen.add((row.id, kind))
    detail = report.detail[:2000]
    writes.events.append({
        "type": kind, "campaign_id": row.campaign_id, "delivery_id": row.id, "subscriber_id": row.subscriber_id,
        "list_id": row.list_id, "detail": detail, "source": source, "bounce_class": None if complaint else "hard",
        "created_at": utcnow(),
    })  # fmt: skip
    if not complaint:
        code = _SMTP_CODE.match(report.diagnostic or "")
        writes.failed.append({
            "row_id": row.id, "code": int(code[1]) if code else None,
            "words": f"bounced after the relay accepted it: {report.detail}"[:2000],
        })  # fmt: skip
    if address is not None:
        reason = SuppressionReason.complaint if complaint else SuppressionReason.hard_bounce
        writes.suppressions.setdefault(
            hash_of(address),
            {
                "email_hash": hash_of(address),
                "email": address,
                "reason": reason,
                "detail": detail,
                "created_at": utcnow(),
            },
        )
    ids = (row.subscriber_id, row.list_id, row.campaign_id, row.id)
    if complaint:
        writes.complained.append(outbox.report_payload(address, ids, address is not None, report.detail))
    else:
        writes.bounced.append(outbox.report_payload(address, ids, True, report.detail, bounce=True))
    metrics.BOUNCES.labels("complaint" if complaint else "hard", metrics.word(source)).inc()
    return bounces.Outcome(report, row.id, row.campaign_id, "suppressed", COMPLAINT if complaint else HARD)


def _write(session: Session, writes: _Writes, rows: list[Delivery]) -> None:
    session.flush()  # what the unit of work holds goes first
    connection = session.connection()
    if writes.events:
        connection.execute(insert(Event), writes.events)
    if writes.failed:
        connection.execute(
            update(Delivery)
            # (no IN: executemany takes no expanding parameter)
            .where(
                Delivery.id == bindparam("row_id"),
                or_(Delivery.status == DeliveryStatus.sent, Delivery.status == DeliveryStatus.unknown),
            )
            .values(status=DeliveryStatus.failed, smtp_code=bindparam("code"), smtp_text=bindparam("words")),
            writes.failed,
        )
        changed = {f["row_id"] for f in writes.failed}
        for row in rows:  # the ORM's copies of the rows just changed behind its back
            if row.id in changed and row in session:
                session.expire(row)
    if writes.suppressions:
        upsert = postgresql.insert if is_postgres(session) else sqlite.insert
        connection.execute(
            upsert(Suppression)
            .values(list(writes.suppressions.values()))
            .on_conflict_do_nothing(index_elements=["email_hash"])
        )
    for type_, payloads in (("subscriber.bounced", writes.bounced), ("subscriber.complained", writes.complained)):
        if payloads:
            outbox.emit_many(session, type_, payloads)
