"""Opens, clicks, bounces and complaints: turn tracking hits and feedback into events and subscriber state.

The open pixel and click redirects are the hottest endpoints of the service (every recipient's mail
client calls them), so each hit is one or two small Core statements, no ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Connection, and_, bindparam, distinct, func, insert, literal, select
from sqlalchemy.orm import Session

from newsletter import metrics, outbox
from newsletter.db import is_postgres, postgres_sql, utcnow
from newsletter.links import split_click_token
from newsletter.models import Delivery, Event, EventType, Link, MailingList, Subscriber, SuppressionReason
from newsletter.suppressions import suppress
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken

if TYPE_CHECKING:
    from psycopg import AsyncConnection

# The smallest transparent GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class UnknownLink(UnknownToken):
    """A click URL whose token is forged or whose link number is not registered for that campaign."""


# The statements of the two tracking hits, built once with named parameters (`delivery`, `position`,
# `now`): the Session path reuses them from SQLAlchemy's statement cache, and the PostgreSQL fast path of
# the web app (`*_async`) runs the same SQL, compiled once, on a bare psycopg connection.
_NOW = bindparam("now", type_=Event.created_at.type)

# One INSERT ... SELECT: the join both checks the delivery exists and honours the list's switch. RETURNING
# rather than rowcount: psycopg reports -1 for an INSERT ... SELECT.
_RECORD_OPEN = (
    insert(Event)
    .from_select(
        ["type", "campaign_id", "delivery_id", "subscriber_id", "list_id", "created_at"],
        select(
            literal(EventType.open.value),
            Delivery.campaign_id,
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.list_id,
            _NOW,
        )
        .join(MailingList, MailingList.id == Delivery.list_id)
        .where(Delivery.id == bindparam("delivery"), MailingList.tracking.is_(True)),
    )
    .returning(Event.id)
)
_DELIVERY = select(Delivery.id).where(Delivery.id == bindparam("delivery"))

_LINK_OF_DELIVERY = (
    select(
        Link.id.label("link_id"),
        Link.url,
        Delivery.campaign_id,
        Delivery.subscriber_id,
        Delivery.list_id,
        MailingList.tracking,
    )
    .join(Link, and_(Link.campaign_id == Delivery.campaign_id, Link.position == bindparam("position")))
    .join(MailingList, MailingList.id == Delivery.list_id)
    .where(Delivery.id == bindparam("delivery"))
)


def _click_in_one_statement() -> Any:
    # One round trip: find the link and record the click in a data-modifying CTE (PostgreSQL only).
    hit = _LINK_OF_DELIVERY.cte("hit")
    record = (
        insert(Event)
        .from_select(
            ["type", "campaign_id", "delivery_id", "subscriber_id", "list_id", "link_id", "url", "created_at"],
            select(
                literal(EventType.click.value),
                hit.c.campaign_id,
                bindparam("delivery", type_=BigInteger),
                hit.c.subscriber_id,
                hit.c.list_id,
                hit.c.link_id,
                hit.c.url,
                _NOW,
            ).where(hit.c.tracking.is_(True)),
        )
        .returning(Event.id)
        .cte("record")
    )
    return select(hit.c.url).add_cte(record)


_RECORD_CLICK = _click_in_one_statement()
_RECORD_OPEN_PG, _DELIVERY_PG, _RECORD_CLICK_PG = map(postgres_sql, (_RECORD_OPEN, _DELIVERY, _RECORD_CLICK))


def record_open(session: Session, tokens: Tokens, *, token: str) -> bool:
    """Record an open of the delivery the pixel token names; False when its list has tracking off.

    Every hit is stored; `stats` counts unique opens per delivery separately, so a mail client that
    loads the image twice does not inflate the unique figure.
    """
    (delivery_id,) = tokens.read(TokenPurpose.track, token, 1)
    connection = session.connection()  # Core statements on the session's transaction: no ORM objects
    if connection.execute(_RECORD_OPEN, {"delivery": delivery_id, "now": utcnow()}).first() is not None:
        metrics.TRACKING_EVENTS.labels("open").inc()
        return True
    if connection.scalar(_DELIVERY, {"delivery": delivery_id}) is None:
        raise UnknownToken("this link is not valid")  # e.g. the delivery's campaign was deleted
    return False


async def record_open_async(conn: AsyncConnection[Any], tokens: Tokens, *, token: str) -> bool:
    """`record_open` on an autocommit psycopg connection to PostgreSQL (the web app's fast path)."""
    (delivery_id,) = tokens.read(TokenPurpose.track, token, 1)
    inserted = await conn.execute(_RECORD_OPEN_PG.sql, _RECORD_OPEN_PG.params(delivery=delivery_id, now=utcnow()))
    if await inserted.fetchone() is not None:
        metrics.TRACKING_EVENTS.labels("open").inc()
        return True
    if await (await conn.execute(_DELIVERY_PG.sql, _DELIVERY_PG.params(delivery=delivery_id))).fetchone() is None:
        raise UnknownToken("this link is not valid")
    return False


def _click_target(tokens: Tokens, token: str) -> tuple[int, int]:
    """The delivery and link position a click token `SIGNED.POSITION` names, or UnknownLink."""
    parts = split_click_token(token)
    if parts is None:
        raise UnknownLink("this link is not valid")
    signed, position = parts
    try:
        (delivery_id,) = tokens.read(TokenPurpose.track, signed, 1)
    except UnknownToken:
        raise UnknownLink("this link is not valid") from None
    return delivery_id, position


def record_click(session: Session, tokens: Tokens, *, token: str) -> str:
    """The registered URL a click token `SIGNED.POSITION` leads to, recording the click.

    Raises UnknownLink for anything else, so the endpoint can never be used as an open redirect: the
    target always comes from the campaign's `links` rows, never from the request.
    """
    delivery_id, position = _click_target(tokens, token)
    params = {"delivery": delivery_id, "position": position, "now": utcnow()}
    connection = session.connection()  # Core statements on the session's transaction: no ORM objects
    if is_postgres(session):
        url = connection.scalar(_RECORD_CLICK, params)
    else:
        url = _click_in_two_statements(connection, params)
    if url is None:
        raise UnknownLink("this link is not valid")
    metrics.TRACKING_EVENTS.labels("click").inc()
    return str(url)


async def record_click_async(conn: AsyncConnection[Any], tokens: Tokens, *, token: str) -> str:
    """`record_click` on an autocommit psycopg connection to PostgreSQL (the web app's fast path)."""
    delivery_id, position = _click_target(tokens, token)
    params = _RECORD_CLICK_PG.params(delivery=delivery_id, position=position, now=utcnow())
    row = await (await conn.execute(_RECORD_CLICK_PG.sql, params)).fetchone()
    if row is None or row[0] is None:
        raise UnknownLink("this link is not valid")
    metrics.TRACKING_EVENTS.labels("click").inc()
    return str(row[0])


def _click_in_two_statements(connection: Connection, params: dict[str, Any]) -> str | None:
    row = connection.execute(_LINK_OF_DELIVERY, params).first()
    if row is None:
        return None
    if row.tracking:
        connection.execute(
            insert(Event).values(
                type=EventType.click,
                campaign_id=row.campaign_id,
                delivery_id=params["delivery"],
                subscriber_id=row.subscriber_id,
                list_id=row.list_id,
                link_id=row.link_id,
                url=row.url,
                created_at=params["now"],
            )
        )
    return str(row.url)


@dataclass(frozen=True)
class EngagementStats:
    opens: int
    unique_opens: int  # deliveries opened at least once
    clicks: int
    unique_clicks: int  # deliveries with at least one click


def stats(session: Session, campaign_id: int) -> EngagementStats:
    counts = {
        kind: (total, unique)
        for kind, total, unique in session.execute(
            select(Event.type, func.count(), func.count(distinct(Event.delivery_id)))
            .where(Event.campaign_id == campaign_id, Event.type.in_([EventType.open, EventType.click]))
            .group_by(Event.type)
        )
    }
    opens = counts.get(EventType.open, (0, 0))
    clicks = counts.get(EventType.click, (0, 0))
    return EngagementStats(opens=opens[0], unique_opens=opens[1], clicks=clicks[0], unique_clicks=clicks[1])


def record_complaint(session: Session, delivery_id: int, detail: str | None = None, source: str | None = None) -> None:
    """A spam complaint (feedback loop) for a delivery: event, and the address is never mailed again."""
    row = session.execute(
        select(Delivery.campaign_id, Delivery.subscriber_id, Delivery.list_id).where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        return
    campaign_id, subscriber_id, list_id = row
    session.add(
        Event(
            type=EventType.complaint,
            campaign_id=campaign_id,
            delivery_id=delivery_id,
            subscriber_id=subscriber_id,
            list_id=list_id,
            detail=detail,
            source=source,
        )
    )
    address = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
    if address is not None:
        suppress(session, address, SuppressionReason.complaint, detail=detail)
    ids = (subscriber_id, list_id, campaign_id, delivery_id)
    outbox.emit(
        session, "subscriber.complained", outbox.report_payload(address, ids, address is not None, detail or "")
    )
    session.flush()
