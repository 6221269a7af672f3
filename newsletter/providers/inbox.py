"""The inbox of provider events: what makes a webhook's 200 cheap and still lose nothing.

A provider wants a quick 2xx and retries anything else, so a verified request is *accepted* with one
data-modifying statement — the INSERT of its events into `provider_inbox`, unique per provider event (a
retry of the same event is a duplicate), together with the Mailgun token it spends — committed before the
answer. Their effects (ledger row, suppression, soft-bounce count, circuit breaker, outbox) are applied
afterwards, a batch at a time (`process`): in the same transaction as the rows' `processed_at`, so a crash
before or during a batch leaves its events unprocessed, to be applied by the next pass, and a batch applied
twice is impossible (each effect also checks whether its report was read before).

Who runs `process`: the `process_provider_events` Celery task, enqueued (at most a few times a second) by
`wake` after an acceptance, and by beat every sweep; without a broker, `newsletter serve`'s own thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter import bounces
from newsletter.config import Settings
from newsletter.db import is_postgres, utcnow
from newsletter.models import ProviderInboxEvent, WebhookNonce
from newsletter.providers import NotVerified, ProviderEvent, record
from newsletter.providers.mailgun import NONCE_KEPT, REPLAYED

if TYPE_CHECKING:
    from psycopg import AsyncConnection

BATCH = 500  # events applied per transaction
_FIELDS = ("kind", "recipient", "message_id", "provider_message_id", "status", "diagnostic")
_accepted: list[Callable[[], None]] = []


def event_key(event: ProviderEvent) -> str:
    """What makes two deliveries of a webhook the same event: the provider's id of it, else all it says."""
    identity = event.event_id or json.dumps(astuple(event), separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()


def _rows(provider: str, events: list[ProviderEvent]) -> dict[str, dict[str, Any]]:
    """The inbox rows of a request's events by key (an event repeated in one request counts once)."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        values = {name: getattr(event, name) for name in _FIELDS}
        values["provider_message_id"] = (event.provider_message_id or "")[:255] or None
        values["status"] = (event.status or "")[:32] or None
        rows.setdefault(event_key(event), {"provider": provider, **values})
    return rows


def accept(session: Session, provider: str, events: list[ProviderEvent], *, nonce: str | None = None) -> int:
    """Put a verified request's events in the inbox, spending its one-time token `nonce` (Mailgun's, when
    no Redis keeps them); the number of events new to the inbox. NotVerified, and nothing written, when
    the token was spent before. The caller commits (the web app: before it answers)."""
    now = utcnow()
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    if nonce is not None:
        spent = session.execute(
            insert(WebhookNonce)
            .values(provider=provider, token_hash=nonce, seen_at=now)
            .on_conflict_do_nothing()
            .returning(WebhookNonce.token_hash)  # (the driver's rowcount is -1 here: the row says it)
        )
        if spent.first() is None:
            raise NotVerified(REPLAYED)
    rows = _rows(provider, events)
    if not rows:
        return 0
    new = session.execute(
        insert(ProviderInboxEvent)
        .values([{**values, "event_key": key, "received_at": now} for key, values in rows.items()])
        .on_conflict_do_nothing(index_elements=["provider", "event_key"])
        .returning(ProviderInboxEvent.id)
    )
    return len(new.all())


# The same on PostgreSQL as one statement on an autocommit connection (the web app's fast path): one
# round trip and one commit. Arrays carry the rows, so the text is the same for any number of events.
_ACCEPT_PG = """
WITH nonce AS (
    INSERT INTO webhook_nonces (provider, token_hash, seen_at)
    SELECT %(provider)s, token, %(now)s FROM unnest(%(nonces)s::text[]) AS token
    ON CONFLICT DO NOTHING
    RETURNING 1
), accepted AS (
    INSERT INTO provider_inbox
        (provider, event_key, kind, recipient, message_id, provider_message_id, status, diagnostic, received_at)
    SELECT %(provider)s, e.*, %(now)s
    FROM unnest(%(keys)s::text[], %(kind)s::text[], %(recipient)s::text[], %(message_id)s::text[],
                %(provider_message_id)s::text[], %(status)s::text[], %(diagnostic)s::text[]) AS e
    WHERE cardinality(%(nonces)s::text[]) = 0 OR EXISTS (SELECT FROM nonce)
    ON CONFLICT (provider, event_key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM nonce), (SELECT count(*) FROM accepted)
"""


async def accept_async(
    conn: AsyncConnection[Any], provider: str, events: list[ProviderEvent], *, nonce: str | None = None
) -> int:
    """`accept` on an autocommit psycopg connection to PostgreSQL that commits durably (synchronous_commit
    on): when it returns, the events are on disk."""
    rows = _rows(provider, events)
    params: dict[str, Any] = {
        "provider": provider,
        "now": utcnow(),
        "nonces": [nonce] if nonce is not None else [],
        "keys": list(rows),
        **{name: [values[name] for values in rows.values()] for name in _FIELDS},
    }
    found = await (await conn.execute(_ACCEPT_PG, params)).fetchone()
    spent, new = found if found is not None else (0, 0)
    if nonce is not None and not spent:
        raise NotVerified(REPLAYED)
    return int(new)


def on_accept(callback: Callable[[], None]) -> None:
    """Run `callback` after events were accepted (the worker enqueues or wakes their processing)."""
    if callback not in _accepted:
        _accepted.append(callback)


def wake() -> None:
    for callback in _accepted:
        callback()


# --- processing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processed:
    inbox_id: int
    provider: str
    outcome: bounces.Outcome


def process(session: Session, settings: Settings, *, limit: int = BATCH) -> list[Processed]:
    """Apply the oldest `limit` accepted events, and mark them processed with what each did, in the
    caller's transaction. On PostgreSQL concurrent passes skip each other's rows; SQLite has one writer."""
    query = (
        select(ProviderInboxEvent)
        .where(ProviderInboxEvent.processed_at.is_(None))
        .order_by(ProviderInboxEvent.id)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    by_provider: dict[str, list[ProviderInboxEvent]] = {}
    for row in rows:
        by_provider.setdefault(row.provider, []).append(row)
    done: list[Processed] = []
    now = utcnow()
    for provider, group in by_provider.items():
        events = [ProviderEvent(**{name: getattr(row, name) for name in _FIELDS}) for row in group]
        for row, outcome in zip(group, record(session, settings, events, source=provider), strict=True):
            row.processed_at, row.result, row.reason = now, outcome.result, outcome.reason[:2000]
            row.delivery_id = outcome.delivery_id
            done.append(Processed(row.id, provider, outcome))
    session.flush()
    return sorted(done, key=lambda p: p.inbox_id)


def prune(session: Session, settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Forget processed events older than PROVIDER_INBOX_DAYS (a provider's retry after that would count
    again; none retries so long) and Mailgun tokens past their window; the events deleted."""
    now = now or utcnow()
    session.execute(delete(WebhookNonce).where(WebhookNonce.seen_at < now - NONCE_KEPT))
    old = now - dt.timedelta(days=settings.provider_inbox_days)
    gone = session.execute(
        delete(ProviderInboxEvent)
        .where(ProviderInboxEvent.processed_at < old)
        .execution_options(synchronize_session=False)
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def backlog(session: Session) -> tuple[int, dt.datetime | None]:
    """How many accepted events wait to be applied, and since when the oldest of them waits."""
    count, oldest = session.execute(
        select(func.count(), func.min(ProviderInboxEvent.received_at)).where(ProviderInboxEvent.processed_at.is_(None))
    ).one()
    return int(count or 0), oldest
