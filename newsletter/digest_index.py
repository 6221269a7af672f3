"""Digests as a table for people: each with the word for where it stands, searched by title, in keyset pages."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from newsletter.errors import Invalid
from newsletter.models import Campaign, CampaignStatus, Digest, DigestItem

__all__ = ["DigestPage", "DigestRow", "Status", "page", "status_of"]

Status = Literal["draft", "ready", "scheduled", "sending", "sent", "cancelled"]
# Where a digest stands is the furthest any of its campaigns got: one that went out makes it "sent".
_RANK: list[tuple[Status, set[CampaignStatus]]] = [
    ("sending", {CampaignStatus.sending, CampaignStatus.paused}),
    ("sent", {CampaignStatus.finished}),
    ("scheduled", {CampaignStatus.scheduled}),
    ("ready", {CampaignStatus.draft}),
    ("cancelled", {CampaignStatus.cancelled}),
]
_CURSOR = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\d{1,19})$")
MAX_SEARCH = 200


class BadCursor(Invalid):
    def __init__(self, cursor: str) -> None:
        super().__init__(f"{cursor!r} is not a page of this table; start again from the first page")


@dataclass(frozen=True)
class DigestRow:
    slug: str
    title: str
    date: dt.date
    items: int
    status: Status
    published_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class DigestPage:
    rows: list[DigestRow]
    newer: str | None  # cursor of the page before this one (newer digests), None on the first page
    older: str | None  # cursor of the next page (older digests), None on the last


def status_of(statuses: Sequence[CampaignStatus]) -> Status:
    """The word for a digest whose campaigns have these statuses: no campaign at all is a draft."""
    for word, members in _RANK:
        if any(status in members for status in statuses):
            return word
    return "draft"


def page(
    session: Session,
    *,
    search: str | None = None,
    older: str | None = None,
    newer: str | None = None,
    limit: int = 25,
) -> DigestPage:
    """Digests newest first (by date, then id); `older`/`newer` are the cursors a previous page returned."""
    query = select(Digest.id, Digest.slug, Digest.title, Digest.date, Digest.published_at, Digest.updated_at)
    if search and search.strip():
        escaped = re.sub(r"([\\%_])", r"\\\1", search.strip()[:MAX_SEARCH])
        query = query.where(Digest.title.ilike(f"%{escaped}%", escape="\\"))
    key = (Digest.date, Digest.id)
    if newer is not None:
        date, digest_id = _parse(newer)
        query = query.where(or_(key[0] > date, and_(key[0] == date, key[1] > digest_id)))
        query = query.order_by(Digest.date, Digest.id)
    else:
        if older is not None:
            date, digest_id = _parse(older)
            query = query.where(or_(key[0] < date, and_(key[0] == date, key[1] < digest_id)))
        query = query.order_by(Digest.date.desc(), Digest.id.desc())
    fetched = session.execute(query.limit(limit + 1)).all()
    more = len(fetched) > limit
    found = list(reversed(fetched[:limit])) if newer is not None else list(fetched[:limit])
    rows = _rows(session, found)
    first_page = newer is None and older is None
    cursor = [f"{row.date.isoformat()}.{row.id}" for row in found]
    return DigestPage(
        rows=rows,
        newer=None if first_page or not found or (newer is not None and not more) else cursor[0],
        older=cursor[-1] if found and (more or newer is not None) else None,
    )


def _parse(cursor: str) -> tuple[dt.date, int]:
    match = _CURSOR.match(cursor)
    if match is None:
        raise BadCursor(cursor)
    try:
        return dt.date.fromisoformat(match.group(1)), int(match.group(2))
    except ValueError:
        raise BadCursor(cursor) from None


def _rows(session: Session, found: Sequence[Any]) -> list[DigestRow]:
    ids = [row.id for row in found]
    counts = dict(
        session.execute(
            select(DigestItem.digest_id, func.count())
            .where(DigestItem.digest_id.in_(ids))
            .group_by(DigestItem.digest_id)
        ).all()
    )
    statuses: dict[int, list[CampaignStatus]] = {}
    for digest_id, status in session.execute(
        select(Campaign.digest_id, Campaign.status).where(Campaign.digest_id.in_(ids)).distinct()
    ):
        if digest_id is not None:  # always, given the IN; a sequence step's campaign has none
            statuses.setdefault(digest_id, []).append(status)
    return [
        DigestRow(
            slug=row.slug,
            title=row.title,
            date=row.date,
            items=counts.get(row.id, 0),
            status=status_of(statuses.get(row.id, [])),
            published_at=row.published_at,
            updated_at=row.updated_at,
        )
        for row in found
    ]
