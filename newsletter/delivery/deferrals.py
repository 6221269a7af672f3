"""Deferring the recipients a server refused for now (4xx): back to `pending` with a backoff, or `failed`
once out of attempts or too old; one statement for a whole group's deferred rows, never one per row."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Integer, String, case, literal, or_, text, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import UTCDateTime, utcnow
from newsletter.mailer import SendResult
from newsletter.models import Delivery, DeliveryStatus


class Deferral(NamedTuple):
    delivery_id: int
    attempts: int  # including the attempt just refused
    result: SendResult


# A group's temporarily refused rows: back to `pending` with each row's own next attempt (backoff with
# jitter, computed here), or `failed` once out of attempts or older than the retry age, which the statement
# reads from the row. One fixed text with arrays, like the ledger's for sent rows, found by id and claim
# token (see ledger._PG_RECORD_SENT_SQL for why no status test).
_GAVE_UP = "(deliveries.attempts >= :max_attempts OR deliveries.created_at < :oldest)"
PG_RECORD_DEFERRED_SQL = f"""
UPDATE deliveries SET
    status = CASE WHEN {_GAVE_UP} THEN '{DeliveryStatus.failed.value}' ELSE '{DeliveryStatus.pending.value}' END,
    next_attempt_at = CASE WHEN {_GAVE_UP} THEN deliveries.next_attempt_at ELSE r.next_at END,
    smtp_code = r.code,
    smtp_text = CASE WHEN {_GAVE_UP} THEN r.last_text ELSE r.text END,
    claimed_by = NULL
FROM unnest(CAST(:deferred AS bigint[]), CAST(:next_at AS timestamptz[]), CAST(:codes AS integer[]),
    CAST(:texts AS text[]), CAST(:last_texts AS text[])) AS r(id, next_at, code, text, last_text)
WHERE deliveries.id = r.id AND claimed_by = :worker
"""
PG_RECORD_DEFERRED = text(PG_RECORD_DEFERRED_SQL)


@dataclass(frozen=True)
class _Values:
    """Each deferred row's own values, in the order of `ids`."""

    ids: list[int]
    next_at: list[dt.datetime]
    codes: list[int | None]
    texts: list[str]
    last_texts: list[str]  # the reply as kept if this attempt was the last


def _values(settings: Settings, deferrals: Sequence[Deferral], now: dt.datetime) -> _Values:
    values = _Values([], [], [], [], [])
    for delivery_id, attempts, result in deferrals:
        delay = settings.retry_base_seconds * 2 ** (attempts - 1)
        delay *= random.uniform(0.8, 1.2)  # jitter so retries of one outage do not arrive together
        values.ids.append(delivery_id)
        values.next_at.append(now + dt.timedelta(seconds=delay))
        values.codes.append(result.code or None)
        values.texts.append(result.text[:2000])
        values.last_texts.append(f"gave up after {attempts} attempts: {result.text}"[:2000])
    return values


def deferred_params(settings: Settings, deferrals: Sequence[Deferral], worker: str) -> dict[str, Any]:
    """The parameters of PG_RECORD_DEFERRED (alone, or inside the record-and-claim statement)."""
    now = utcnow()
    values = _values(settings, deferrals, now)
    return {
        "deferred": values.ids,
        "next_at": values.next_at,
        "codes": values.codes,
        "texts": values.texts,
        "last_texts": values.last_texts,
        "max_attempts": settings.retry_max_attempts,
        "oldest": now - dt.timedelta(hours=settings.retry_max_age_hours),
        "worker": worker,
    }


def record_deferred(
    session: Session, settings: Settings, deferrals: Sequence[Deferral], now: dt.datetime, mine: Any
) -> None:
    """PG_RECORD_DEFERRED on SQLite (no arrays): each row's values picked by its id (CASE), as the sent rows'
    Message-IDs are; `mine` is the ledger's "still claimed by this worker" condition."""
    values = _values(settings, deferrals, now)
    gave_up = or_(
        Delivery.attempts >= settings.retry_max_attempts,
        Delivery.created_at < now - dt.timedelta(hours=settings.retry_max_age_hours),
    )

    def by_id(column: Sequence[Any], type_: Any) -> Any:
        return case({i: literal(v, type_) for i, v in zip(values.ids, column, strict=True)}, value=Delivery.id)

    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(values.ids), *mine)
        .values(
            status=case(
                (gave_up, literal(DeliveryStatus.failed, Delivery.status.type)),
                else_=literal(DeliveryStatus.pending, Delivery.status.type),
            ),
            next_attempt_at=case((gave_up, Delivery.next_attempt_at), else_=by_id(values.next_at, UTCDateTime())),
            smtp_code=by_id(values.codes, Integer()),
            smtp_text=case((gave_up, by_id(values.last_texts, String())), else_=by_id(values.texts, String())),
            claimed_by=None,
        )
        .execution_options(synchronize_session=False)
    )
