"""RFC 8058 one-click unsubscribe: what mailbox providers call for every click on their unsubscribe button,
in one statement on PostgreSQL (re-exported by newsletter/subscriptions.py, where the rest of consent is)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, literal, select, update
from sqlalchemy.orm import Session

from newsletter import metrics, outbox
from newsletter.db import is_postgres, postgres_sql, utcnow
from newsletter.models import Event, EventType, Subscriber, Subscription, SubscriptionStatus
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken

if TYPE_CHECKING:
    from psycopg import AsyncConnection


def _one_click_statements() -> tuple[Any, Any, Any]:
    """The statements of `one_click_unsubscribe`, with named parameters `subscriber`, `list` and `now`.

    (Not `subscriber_id`: a parameter named like a column of an UPDATE's table would become a SET clause.)
    `created` is the creation time the token is bound to, or None for a token made before tokens were bound.
    """
    created = bindparam("created", type_=Subscriber.created_at.type)
    # coalesce, not `:created IS NULL OR ...`: PostgreSQL infers the parameter's type from the column.
    same_row = (
        select(Subscriber.id)
        .where(
            Subscriber.id == bindparam("subscriber"),
            Subscriber.created_at == func.coalesce(created, Subscriber.created_at),
        )
        .scalar_subquery()
    )
    this_one = (
        Subscription.subscriber_id == same_row,
        Subscription.list_id == bindparam("list"),
    )
    now = bindparam("now", type_=Subscription.updated_at.type)
    leave = (
        update(Subscription)
        .where(*this_one, Subscription.status != SubscriptionStatus.unsubscribed)
        .values(
            status=SubscriptionStatus.unsubscribed,
            unsubscribed_at=now,
            unsubscribe_source="one-click",
            reason=None,
            updated_at=now,
        )
        .returning(Subscription.subscriber_id, Subscription.list_id, Subscription.source)
    )
    exists = select(Subscription.id).where(*this_one).exists()
    # PostgreSQL: the conditional UPDATE ... RETURNING feeds the event INSERT in one data-modifying CTE.
    changed_rows = leave.cte("changed")
    record = (
        insert(Event)
        .from_select(
            ["type", "subscriber_id", "list_id", "detail", "created_at"],
            select(
                literal(EventType.unsubscribe.value),
                changed_rows.c.subscriber_id,
                changed_rows.c.list_id,
                literal("one-click"),
                bindparam("now", type_=Event.created_at.type),
            ),
        )
        .returning(Event.id)
        .cte("record")
    )
    count = select(func.count()).select_from(changed_rows).scalar_subquery()
    in_one_statement = select(count, exists).add_cte(record).add_cte(outbox.unsubscribed_cte(changed_rows, "one-click"))
    return leave, select(exists), in_one_statement


_ONE_CLICK_LEAVE, _ONE_CLICK_FOUND, _ONE_CLICK = _one_click_statements()
_ONE_CLICK_PG = postgres_sql(_ONE_CLICK)


def one_click_unsubscribe(session: Session, tokens: Tokens, *, token: str) -> bool:
    """RFC 8058 one-click: the same effect as `unsubscribe`, in one statement on PostgreSQL.

    Mailbox providers call this for every click on their unsubscribe button, so it skips the ORM: a
    conditional UPDATE ... RETURNING feeding the event INSERT, in a single data-modifying CTE (atomic on
    its own, so it may run on an autocommit connection: one round trip). Returns whether the status
    changed; raises UnknownToken for a token whose subscription does not exist.
    """
    (subscriber_id, list_id), created, _ = tokens.read_bound(TokenPurpose.unsubscribe, token, 2)
    params = {"subscriber": subscriber_id, "list": list_id, "created": created, "now": utcnow()}
    connection = session.connection()  # Core statements on the session's transaction: no ORM objects
    if is_postgres(session):
        changed, found = connection.execute(_ONE_CLICK, params).one()
        changed = bool(changed)
    else:
        changed = connection.execute(_ONE_CLICK_LEAVE, params).first() is not None
        found = changed or bool(connection.scalar(_ONE_CLICK_FOUND, params))
        if changed:
            connection.execute(
                insert(Event).values(
                    type=EventType.unsubscribe,
                    subscriber_id=subscriber_id,
                    list_id=list_id,
                    detail="one-click",
                    created_at=params["now"],
                )
            )
            left = session.scalars(
                select(Subscription).where(Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id)
            ).one()
            outbox.emit_subscription(session, "subscriber.unsubscribed", left, source="one-click", reason=None)
    if not found:
        raise UnknownToken("this link is not valid")
    if changed:
        metrics.UNSUBSCRIBES.labels("one-click").inc()
    return changed


async def one_click_unsubscribe_async(conn: AsyncConnection[Any], tokens: Tokens, *, token: str) -> bool:
    """`one_click_unsubscribe` on an autocommit psycopg connection to PostgreSQL (the web app's fast path).

    The connection must commit durably (synchronous_commit on): the 200 that follows means it is recorded.
    """
    (subscriber_id, list_id), created, _ = tokens.read_bound(TokenPurpose.unsubscribe, token, 2)
    params = _ONE_CLICK_PG.params(subscriber=subscriber_id, list=list_id, created=created, now=utcnow())
    row = await (await conn.execute(_ONE_CLICK_PG.sql, params)).fetchone()
    changed, found = row if row is not None else (0, False)
    if not found:
        raise UnknownToken("this link is not valid")
    if changed:
        metrics.UNSUBSCRIBES.labels("one-click").inc()
    return bool(changed)
