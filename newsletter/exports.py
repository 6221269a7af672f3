"""Subscriber exports as CSV, streamed, with every cell neutralised against spreadsheet formula injection."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from typing import Any, Literal

from sqlalchemy import Select, exists
from sqlalchemy.orm import Session

from newsletter import lists
from newsletter.errors import Invalid
from newsletter.models import Subscriber, SubscriberStatus, Subscription, SubscriptionStatus, Suppression
from newsletter.subscribers import Search, search_query

# OWASP's list, plus LF: spreadsheets (LibreOffice, Excel) evaluate a formula after a leading line break too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def unneutralise(cell: str) -> str:
    """Undo the export's formula neutralisation, so exported files import back unchanged."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in FORMULA_STARTS:
        return cell[1:]
    return cell


def neutralise(cell: str) -> str:
    """OWASP CSV injection: a cell a spreadsheet would run as a formula is prefixed with a quote."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


class _Line:
    """A file-like sink for csv.writer that hands back what was written, one row at a time."""

    def __init__(self) -> None:
        self.value = ""

    def write(self, value: str) -> int:
        self.value = value
        return len(value)


ExportStatus = Literal["confirmed", "pending", "unsubscribed", "all"]


EXPORT_STATUSES: tuple[ExportStatus, ...] = ("confirmed", "pending", "unsubscribed", "all")


def export_csv(
    session: Session, search: Search, *, status: ExportStatus = "confirmed", batch: int = 5000
) -> Iterator[str]:
    """CSV lines (header first) of the subscribers a search finds: email, name, then one column per attribute.

    The export of a list (`search.list_slug`) has a `status` column after the name, the subscription's
    state on that list, and holds the subscriptions in `status`: by default `confirmed`, the people the
    list mails (blocklisted and suppressed addresses left out); `all` is everyone, whatever their state.
    An explicit `search.subscription_status` wins over `status`.
    Two streamed passes (attribute names, then rows) keep memory flat for any list size.
    """
    if status not in EXPORT_STATUSES:
        raise Invalid(f"status: must be one of {', '.join(EXPORT_STATUSES)}, got {status!r}")
    fields: list[Any] = [Subscriber.email, Subscriber.name]
    if search.list_slug:
        mailing_list = lists.get_list(session, search.list_slug)
        query = search_query(session, dataclasses.replace(search, list_slug=None, subscription_status=None))
        query = query.join(
            Subscription, (Subscription.subscriber_id == Subscriber.id) & (Subscription.list_id == mailing_list.id)
        )
        if search.subscription_status is not None:
            query = query.where(Subscription.status == search.subscription_status)
        elif status != "all":
            query = query.where(Subscription.status == SubscriptionStatus(status))
            if status == "confirmed":
                query = query.where(
                    Subscriber.status == SubscriberStatus.active,
                    ~exists().where(Suppression.email_hash == Subscriber.email_hash),
                )
        fields.append(Subscription.status)
    else:
        query = search_query(session, search)
    return _stream(session, query, fields, batch)


def query_csv(session: Session, query: Select[Any], *, batch: int = 5000) -> Iterator[str]:
    """CSV lines (header first) of the subscribers a query selects (a segment): email, name, attributes."""
    return _stream(session, query, [Subscriber.email, Subscriber.name], batch)


def _stream(session: Session, query: Select[Any], fields: list[Any], batch: int) -> Iterator[str]:
    query = query.order_by(Subscriber.id)
    names: set[str] = set()
    for attributes in session.scalars(
        query.with_only_columns(Subscriber.attributes).execution_options(yield_per=batch)
    ):
        names.update(attributes or {})
    columns = sorted(names - {"email", "name", "status"})
    sink = _Line()
    writer = csv.writer(sink, lineterminator="\r\n")
    # Attribute names come from people too (a CSV header, the API): neutralised like every cell.
    heading = ["email", "name", *(["status"] if len(fields) > 2 else []), *columns]
    writer.writerow([neutralise(cell) for cell in heading])
    yield sink.value
    rows = session.execute(query.with_only_columns(*fields, Subscriber.attributes).execution_options(yield_per=batch))
    for *cells, attributes in rows:
        attributes = attributes or {}
        values = ["" if attributes.get(c) is None else str(attributes[c]) for c in columns]
        known = [cell.value if isinstance(cell, SubscriptionStatus) else cell for cell in cells]
        writer.writerow([neutralise(cell) for cell in (*known, *values)])
        yield sink.value
