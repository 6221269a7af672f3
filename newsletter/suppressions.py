"""The suppression list admin: list, add (one address or a CSV file) and remove, each removal logged."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import subscriptions
from newsletter.models import Suppression, SuppressionReason, email_hash

audit = logging.getLogger("newsletter.audit")
MAX_PAGE = 1000


class SuppressionNotFound(LookupError):
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
    if email:
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
    email = subscriptions.normalise_email(address)
    existing = session.scalar(select(Suppression).where(Suppression.email_hash == email_hash(email)))
    if existing is not None:
        return existing, False
    return subscriptions.suppress(session, email, reason, detail=detail), True


@dataclass
class BulkResult:
    added: int = 0
    already: int = 0
    errors: list[tuple[int, str]] | None = None


def add_csv(session: Session, stream: IO[str], *, detail: str | None = None) -> BulkResult:
    """Suppress every address of a CSV file: its `email` column, or its first column when there is no header."""
    result = BulkResult(errors=[])
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
            _, created = add(session, record[column], detail=detail)
        except subscriptions.InvalidEmail as exc:
            result.errors.append((line, f"{record[column]!r}: {exc}"))  # type: ignore[union-attr]
            continue
        if created:
            result.added += 1
        else:
            result.already += 1
    return result


def remove(session: Session, address: str, *, by: str) -> None:
    """Allow mail to an address again. Logged with who did it: the list is the last safeguard."""
    key = email_hash(subscriptions.normalise_email(address))
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


def iter_all(session: Session) -> Iterator[Suppression]:
    yield from session.scalars(select(Suppression).order_by(Suppression.id).execution_options(yield_per=1000))
