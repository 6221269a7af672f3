"""The suppression list admin: list, add (one address or a CSV file) and remove, each removal logged;
and the domain blocklist (`*@mailinator.com`): whole domains that are never subscribed nor mailed."""

from __future__ import annotations

import csv
import datetime as dt
import logging
from dataclasses import dataclass
from typing import IO

from sqlalchemy import ColumnElement, distinct, exists, false, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter import addresses
from newsletter.config import Settings
from newsletter.db import is_postgres, utcnow
from newsletter.errors import Invalid, NotFound
from newsletter.models import (
    BlockedDomain,
    Event,
    EventType,
    Subscriber,
    Suppression,
    SuppressionReason,
    email_domain,
    email_hash,
)

audit = logging.getLogger("newsletter.audit")
MAX_PAGE = 1000


class SuppressionNotFound(NotFound):
    def __init__(self, address: str) -> None:
        super().__init__(f"{address} is not on the suppression list")


@dataclass
class SuppressionPage:
    items: list[Suppression]
    next_cursor: int | None


def list_suppressions(
    session: Session,
    *,
    reason: SuppressionReason | None = None,
    email: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> SuppressionPage:
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Suppression).order_by(Suppression.id).limit(limit + 1)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    if email and "\x00" in email:
        # No stored address holds a NUL (PostgreSQL refuses it): nothing matches, and the database is not asked.
        query = query.where(false())
    elif email:
        # Erased addresses are kept only as a hash, so look an exact address up by its hash too.
        pattern = email.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            Suppression.email.like(f"%{pattern}%", escape="\\") | (Suppression.email_hash == email_hash(email))
        )
    if after is not None:
        query = query.where(Suppression.id > after)
    rows = list(session.scalars(query))
    items = rows[:limit]
    return SuppressionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


def add(
    session: Session, address: str, *, reason: SuppressionReason = SuppressionReason.manual, detail: str | None = None
) -> tuple[Suppression, bool]:
    """Suppress an address; returns the row and whether it is new (an existing entry keeps its reason)."""
    email = addresses.normalise_email(address)
    existing = session.scalar(select(Suppression).where(Suppression.email_hash == email_hash(email)))
    if existing is not None:
        return existing, False
    return suppress(session, email, reason, detail=detail), True


@dataclass
class BulkResult:
    added: int = 0
    already: int = 0
    errors: list[tuple[int, str]] | None = None


_CHUNK = 1000  # addresses per INSERT: a million-row list from another tool goes in at set speed


def add_csv(session: Session, stream: IO[str], *, detail: str | None = None) -> BulkResult:
    """Suppress every address of a CSV file: its `email` column, or its first column when there is no header.

    Addresses go in a chunk at a time (INSERT … ON CONFLICT DO NOTHING); one already suppressed, here or
    earlier in the file, counts as `already` and keeps its first reason.
    """
    result = BulkResult(errors=[])
    chunk: dict[str, str] = {}  # hash -> normalised address
    valid = 0  # rows of the chunk with a usable address, repeats included

    def flush() -> None:
        nonlocal valid
        added = _insert_new(session, chunk, detail) if chunk else 0
        result.added += added
        result.already += valid - added
        chunk.clear()
        valid = 0

    reader = csv.reader(stream)
    column = 0
    for record in reader:
        line = reader.line_num
        if line == 1 and record and "email" in [c.strip().lower() for c in record]:
            column = [c.strip().lower() for c in record].index("email")
            continue
        if not record or len(record) <= column or not record[column].strip():
            continue
        try:
            email = addresses.normalise_email(record[column])
        except addresses.InvalidEmail as exc:
            result.errors.append((line, f"{record[column]!r}: {exc}"))  # type: ignore[union-attr]
            continue
        chunk.setdefault(email_hash(email), email)
        valid += 1
        if len(chunk) >= _CHUNK:
            flush()
    flush()
    return result


def _insert_new(session: Session, by_hash: dict[str, str], detail: str | None) -> int:
    """Insert the addresses not suppressed yet; returns how many were new."""
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    now = utcnow()
    rows = [
        {"email_hash": key, "email": email, "reason": SuppressionReason.manual, "detail": detail, "created_at": now}
        for key, email in by_hash.items()
    ]
    statement = insert(Suppression).on_conflict_do_nothing(index_elements=["email_hash"]).returning(Suppression.id)
    return len(session.execute(statement, rows).all())


def remove(session: Session, address: str, *, by: str) -> None:
    """Allow mail to an address again. Logged with who did it: the list is the last safeguard."""
    key = email_hash(addresses.normalise_email(address))
    suppression = session.scalar(select(Suppression).where(Suppression.email_hash == key))
    if suppression is None:
        raise SuppressionNotFound(address)
    audit.warning(
        "suppression removed by %s: hash %s (reason was %s, added %s)",
        by,
        key[:12],
        suppression.reason.value,
        suppression.created_at.isoformat(),
    )
    session.delete(suppression)
    session.flush()


def is_suppressed(session: Session, address: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(address))) is not None


def suppress(
    session: Session, address: str, reason: SuppressionReason, detail: str | None = None, keep_address: bool = True
) -> Suppression:
    """Add an address to the never-mail list (idempotent: the first reason is kept)."""
    key = email_hash(address)
    existing = session.scalar(select(Suppression).where(Suppression.email_hash == key))
    if existing is not None:
        return existing
    suppression = Suppression(email_hash=key, email=address if keep_address else None, reason=reason, detail=detail)
    session.add(suppression)
    session.flush()
    return suppression


def suppress_quickly(session: Session, address: str, reason: SuppressionReason, detail: str | None = None) -> bool:
    """`suppress` in one statement (INSERT ... ON CONFLICT DO NOTHING: the first reason is kept), for the
    paths that record many reports and need no row back; True when the address was not suppressed yet."""
    session.flush()  # what the unit of work holds goes first, as `suppress` would have it
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    row = {
        "email_hash": email_hash(address),
        "email": address,
        "reason": reason,
        "detail": detail,
        "created_at": utcnow(),
    }
    statement = insert(Suppression).values(row).on_conflict_do_nothing(index_elements=["email_hash"])
    return session.execute(statement.returning(Suppression.id)).first() is not None


SOFT_SUPPRESSED = "soft_suppressed"  # events.bounce_class of the soft bounce that reached the threshold


def soft_bounce_count(
    session: Session, settings: Settings, subscriber_id: int, *, now: dt.datetime | None = None
) -> int:
    """How many of the subscriber's deliveries bounced softly within the last SOFT_BOUNCE_DAYS (what the
    soft-bounce threshold counts, for the subscriber's page). A bounce recorded before bounces had a class
    counts too; hard bounces do not (they suppress at once). One message reported twice is one bounce."""
    since = (now or utcnow()) - dt.timedelta(days=settings.soft_bounce_days)
    bounced = session.scalar(
        select(func.count(distinct(Event.delivery_id))).where(
            Event.subscriber_id == subscriber_id,
            Event.type == EventType.bounce,
            Event.created_at >= since,
            or_(Event.bounce_class.is_(None), Event.bounce_class != "hard"),
        )
    )
    return int(bounced or 0)


def suppress_if_soft_bouncing(session: Session, settings: Settings, subscriber_id: int, address: str) -> bool:
    """Suppress the address (reason `soft_bounce`) once SOFT_BOUNCE_LIMIT of its deliveries bounced softly
    within SOFT_BOUNCE_DAYS, the bounce just recorded included; True when this did it."""
    if settings.soft_bounce_limit == 0:
        return False
    bounced = soft_bounce_count(session, settings, subscriber_id)
    if bounced < settings.soft_bounce_limit or is_suppressed(session, address):
        return False
    detail = f"{bounced} soft bounces within {settings.soft_bounce_days:g} days"
    suppress(session, address, SuppressionReason.soft_bounce, detail=detail)
    return True


# --- the domain blocklist ---------------------------------------------------------------------------------


class InvalidDomain(Invalid):
    """Not a mail domain; the message says why."""


class DomainNotBlocked(NotFound):
    def __init__(self, domain: str) -> None:
        super().__init__(f"{domain} is not on the domain blocklist")


def normalise_domain(value: str) -> str:
    """`mailinator.com`, `@mailinator.com` or `*@mailinator.com`, in the form subscribers' addresses store it."""
    domain = value.strip().removeprefix("*").removeprefix("@").strip()
    if not domain or "@" in domain or "*" in domain:
        raise InvalidDomain(f"{value!r}: give a domain like mailinator.com (or *@mailinator.com)")
    try:
        # The address validator's rules and normal form, so that the entry matches stored addresses exactly.
        return email_domain(addresses.normalise_email(f"blocked@{domain}"))
    except addresses.InvalidEmail as exc:
        raise InvalidDomain(f"{value!r}: not a mail domain ({exc})") from None


def block_domain(session: Session, domain: str, *, detail: str | None = None) -> tuple[BlockedDomain, bool]:
    """Never subscribe nor mail addresses at `domain`; returns the entry and whether it is new."""
    name = normalise_domain(domain)
    existing = session.scalar(select(BlockedDomain).where(BlockedDomain.domain == name))
    if existing is not None:
        return existing, False
    entry = BlockedDomain(domain=name, detail=detail)
    session.add(entry)
    session.flush()
    return entry, True


def unblock_domain(session: Session, domain: str, *, by: str) -> None:
    name = normalise_domain(domain)
    entry = session.scalar(select(BlockedDomain).where(BlockedDomain.domain == name))
    if entry is None:
        raise DomainNotBlocked(name)
    audit.warning("blocked domain %s removed by %s (added %s)", name, by, entry.created_at.isoformat())
    session.delete(entry)
    session.flush()


def blocked_domains(session: Session) -> list[BlockedDomain]:
    return list(session.scalars(select(BlockedDomain).order_by(BlockedDomain.domain)))


def is_blocked_domain(session: Session, address: str) -> bool:
    """Whether a normalised address is at a blocked domain."""
    query = select(BlockedDomain.id).where(BlockedDomain.domain == email_domain(address))
    return session.scalar(query) is not None


def not_in_blocked_domain() -> ColumnElement[bool]:
    """The condition "this subscriber's address is not at a blocked domain", for planning and claiming.

    An anti-join on two indexes (`subscribers.email_domain`, the blocklist's unique domain): no string
    function runs per row. Use it in a statement that has `subscribers` in its FROM clause.
    """
    return ~exists().where(BlockedDomain.domain == Subscriber.email_domain)
