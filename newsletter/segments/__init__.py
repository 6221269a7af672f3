"""Segments: saved, named filters over subscribers (filters.py), counted and exported in SQL.

A segment's members are the subscribers its filter matches, whatever their state; a campaign's audience
is its lists' eligible subscribers (ledger.plan) that are also members of its segment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from newsletter import exports
from newsletter.errors import Conflict, Invalid, NotFound
from newsletter.models import Campaign, Segment, Subscriber, column_length
from newsletter.segments.filters import Filter, InvalidFilter, compile_filter, dump, parse
from newsletter.text import single_line

__all__ = [
    "InvalidFilter",
    "InvalidSegment",
    "SegmentExists",
    "SegmentNotFound",
    "count",
    "create",
    "delete",
    "export_csv",
    "get_segment",
    "list_segments",
    "members",
    "update",
]

NAME_LENGTH = column_length(Segment.__table__.c.name)
DESCRIPTION_LENGTH = 2000


class SegmentNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no segment named {name!r}")


class SegmentExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"a segment named {name!r} exists already: choose another name or update it")


class InvalidSegment(Invalid):
    """A segment's name or description that cannot be stored; the message names the field."""


def check_name(name: str) -> str:
    clean = " ".join(single_line(name).split())
    if not clean:
        raise InvalidSegment("name: must not be empty")
    if "\x00" in clean:
        raise InvalidSegment("name: contains a NUL character")
    if len(clean) > NAME_LENGTH:
        raise InvalidSegment(f"name: at most {NAME_LENGTH} characters")
    return clean


def _check_description(description: str) -> str:
    if len(description) > DESCRIPTION_LENGTH:
        raise InvalidSegment(f"description: at most {DESCRIPTION_LENGTH} characters")
    if "\x00" in description:
        raise InvalidSegment("description: contains a NUL character")
    return description.strip()


def validated(session: Session, raw: Any) -> Filter:
    """Parse a filter (JSON text or data) and compile it once, so unknown lists are refused before storing."""
    filt = parse(raw)
    compile_filter(session, filt)
    return filt


def get_segment(session: Session, name: str) -> Segment:
    segment = session.scalar(select(Segment).where(Segment.name == name))
    if segment is None:
        raise SegmentNotFound(name)
    return segment


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.name)))


def create(
    session: Session, name: str, raw_filter: Any, *, description: str = "", created_by: str | None = None
) -> Segment:
    clean = check_name(name)
    text = _check_description(description)
    filt = validated(session, raw_filter)
    if session.scalar(select(Segment.id).where(Segment.name == clean)) is not None:
        raise SegmentExists(clean)
    segment = Segment(name=clean, description=text, filter=dump(filt), created_by=created_by, updated_by=created_by)
    session.add(segment)
    session.flush()
    return segment


def update(
    session: Session,
    name: str,
    *,
    new_name: str | None = None,
    raw_filter: Any = None,
    description: str | None = None,
    updated_by: str | None = None,
) -> Segment:
    """Change what is given; everything is checked before anything changes."""
    segment = get_segment(session, name)
    clean = check_name(new_name) if new_name is not None else segment.name
    text = _check_description(description) if description is not None else segment.description
    filt = validated(session, raw_filter) if raw_filter is not None else None
    if clean != segment.name and session.scalar(select(Segment.id).where(Segment.name == clean)) is not None:
        raise SegmentExists(clean)
    segment.name = clean
    segment.description = text
    if filt is not None:
        segment.filter = dump(filt)
    segment.updated_by = updated_by
    session.flush()
    return segment


def delete(session: Session, name: str) -> None:
    """Campaigns that used it keep the filter they were sent with."""
    segment = get_segment(session, name)
    session.execute(
        sa_update(Campaign)
        .where(Campaign.segment_id == segment.id)
        .values(segment_id=None)
        .execution_options(synchronize_session=False)
    )
    session.delete(segment)
    session.flush()


def members(session: Session, raw_filter: Any, *, now: dt.datetime | None = None) -> Select[Any]:
    """The subscribers a filter matches, as a query to count, page or export."""
    condition = compile_filter(session, parse(raw_filter), now=now)
    return select(Subscriber).where(condition)


def count(session: Session, raw_filter: Any, *, now: dt.datetime | None = None) -> int:
    query = members(session, raw_filter, now=now)
    return session.scalar(select(func.count()).select_from(query.with_only_columns(Subscriber.id).subquery())) or 0


def export_csv(session: Session, name: str) -> Iterator[str]:
    """The members of a segment as CSV (email, name, attributes), cells neutralised like every export."""
    return exports.query_csv(session, members(session, get_segment(session, name).filter))
