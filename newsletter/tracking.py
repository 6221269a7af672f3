"""Opens, clicks, bounces and complaints: turn tracking hits and feedback into events and subscriber state.

The open pixel and click redirects are the hottest endpoints of the service (every recipient's mail
client calls them), so each hit is one or two small Core statements, no ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, distinct, func, insert, literal, select
from sqlalchemy.orm import Session

from newsletter.db import is_postgres, utcnow
from newsletter.models import Delivery, Event, EventType, Link, MailingList, Subscriber, SuppressionReason
from newsletter.subscriptions import TokenPurpose, Tokens, UnknownToken, suppress

# The smallest transparent GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class UnknownLink(UnknownToken):
    """A click URL whose token is forged or whose link number is not registered for that campaign."""


def record_open(session: Session, tokens: Tokens, *, token: str) -> bool:
    """Record an open of the delivery the pixel token names; False when its list has tracking off.

    Every hit is stored; `stats` counts unique opens per delivery separately, so a mail client that
    loads the image twice does not inflate the unique figure.
    """
    (delivery_id,) = tokens.read(TokenPurpose.track, token, 1)
    # One INSERT ... SELECT: the join both checks the delivery exists and honours the list's switch.
    source = (
        select(
            literal(EventType.open.value),
            Delivery.campaign_id,
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.list_id,
            literal(utcnow(), Event.created_at.type),
        )
        .join(MailingList, MailingList.id == Delivery.list_id)
        .where(Delivery.id == delivery_id, MailingList.tracking.is_(True))
    )
    # RETURNING rather than rowcount: psycopg reports -1 for an INSERT ... SELECT.
    inserted = session.execute(
        insert(Event)
        .from_select(["type", "campaign_id", "delivery_id", "subscriber_id", "list_id", "created_at"], source)
        .returning(Event.id)
    ).first()
    if inserted is not None:
        return True
    if session.scalar(select(Delivery.id).where(Delivery.id == delivery_id)) is None:
        raise UnknownToken("this link is not valid")  # e.g. the delivery's campaign was deleted
    return False


def record_click(session: Session, tokens: Tokens, *, token: str) -> str:
    """The registered URL a click token `SIGNED.POSITION` leads to, recording the click.

    Raises UnknownLink for anything else, so the endpoint can never be used as an open redirect: the
    target always comes from the campaign's `links` rows, never from the request.
    """
    signed, dot, position_text = token.rpartition(".")
    if not dot or not position_text.isascii() or not position_text.isdigit() or len(position_text) > 9:
        raise UnknownLink("this link is not valid")
    try:
        (delivery_id,) = tokens.read(TokenPurpose.track, signed, 1)
    except UnknownToken:
        raise UnknownLink("this link is not valid") from None
    position = int(position_text)
    if is_postgres(session):
        url = _click_in_one_statement(session, delivery_id, position)
    else:
        url = _click_in_two_statements(session, delivery_id, position)
    if url is None:
        raise UnknownLink("this link is not valid")
    return url


def _link_of(delivery_id: int, position: int) -> Any:
    return (
        select(
            Link.id.label("link_id"),
            Link.url,
            Delivery.campaign_id,
            Delivery.subscriber_id,
            Delivery.list_id,
            MailingList.tracking,
        )
        .join(Link, and_(Link.campaign_id == Delivery.campaign_id, Link.position == position))
        .join(MailingList, MailingList.id == Delivery.list_id)
        .where(Delivery.id == delivery_id)
    )


def _click_in_one_statement(session: Session, delivery_id: int, position: int) -> str | None:
    # One round trip: find the link and record the click in a data-modifying CTE (PostgreSQL only).
    hit = _link_of(delivery_id, position).cte("hit")
    record = (
        insert(Event)
        .from_select(
            ["type", "campaign_id", "delivery_id", "subscriber_id", "list_id", "link_id", "url", "created_at"],
            select(
                literal(EventType.click.value),
                hit.c.campaign_id,
                literal(delivery_id),
                hit.c.subscriber_id,
                hit.c.list_id,
                hit.c.link_id,
                hit.c.url,
                literal(utcnow(), Event.created_at.type),
            ).where(hit.c.tracking.is_(True)),
        )
        .returning(Event.id)
        .cte("record")
    )
    url = session.scalar(select(hit.c.url).add_cte(record))
    return None if url is None else str(url)


def _click_in_two_statements(session: Session, delivery_id: int, position: int) -> str | None:
    row = session.execute(_link_of(delivery_id, position)).first()
    if row is None:
        return None
    if row.tracking:
        session.execute(
            insert(Event).values(
                type=EventType.click,
                campaign_id=row.campaign_id,
                delivery_id=delivery_id,
                subscriber_id=row.subscriber_id,
                list_id=row.list_id,
                link_id=row.link_id,
                url=row.url,
                created_at=utcnow(),
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


def record_complaint(session: Session, delivery_id: int, detail: str | None = None) -> None:
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
        )
    )
    address = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
    if address is not None:
        suppress(session, address, SuppressionReason.complaint, detail=detail)
    session.flush()
