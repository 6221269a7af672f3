"""Tokens name one row forever: ids are never reused, and a bound token refuses a row that shares its id."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from newsletter import subscriptions
from newsletter.models import Event, Subscriber, Subscription, SubscriptionStatus
from newsletter.tokens import TokenPurpose, Tokens, UnknownToken, binding, bound_time
from tests.conftest import TEST_SECRET
from tests.factories import make_list, make_subscriber, subscription_of

TOKENS = Tokens(TEST_SECRET)


def _state(session: Session) -> list[tuple[object, ...]]:
    session.expire_all()
    return [
        *session.execute(
            select(Subscription.subscriber_id, Subscription.list_id, Subscription.status, Subscription.updated_at)
        ).all(),
        ("events", session.scalar(select(func.count()).select_from(Event))),
    ]


def test_a_deleted_subscribers_id_is_never_given_to_the_next_one(session: Session) -> None:
    """Issue 11 item 3: Dave's one-click link in old mail must not unsubscribe Eve, who came after him."""
    weekly = make_list(session)
    dave = make_subscriber(session, weekly, "dave@example.com")
    daves_link = TOKENS.make(TokenPurpose.unsubscribe, dave.id, weekly.id)  # as mail sent before binding
    dave_id = dave.id
    session.delete(dave)
    session.flush()
    eve = make_subscriber(session, weekly, "eve@example.com")
    assert eve.id > dave_id  # on SQLite too: the highest id was deleted, and is still not handed out again
    before = _state(session)
    with pytest.raises(UnknownToken):
        subscriptions.one_click_unsubscribe(session, TOKENS, token=daves_link)
    with pytest.raises(UnknownToken):
        subscriptions.unsubscribe(session, TOKENS, token=daves_link, source="page")
    assert _state(session) == before
    assert subscription_of(session, eve, weekly).status == SubscriptionStatus.confirmed


def test_a_bound_token_refuses_a_row_that_got_the_same_id(session: Session) -> None:
    """A database rebuilt from an export hands ids out again from 1: bound links still act only on their row."""
    weekly = make_list(session)
    dave = make_subscriber(session, weekly, "dave@example.com", confirmed=False)
    dave_id, created = dave.id, dave.created_at
    links = {
        purpose: TOKENS.make(purpose, *ids, bound_to=created)
        for purpose, ids in (
            (TokenPurpose.unsubscribe, (dave_id, weekly.id)),
            (TokenPurpose.confirm, (dave_id, weekly.id)),
            (TokenPurpose.preferences, (dave_id,)),
        )
    }
    session.delete(dave)
    session.flush()
    # Eve gets Dave's id, as she would in a database rebuilt from an export (explicit id, later creation time).
    later = created + dt.timedelta(seconds=5)
    session.execute(
        insert(Subscriber).values(
            id=dave_id, email="eve@example.com", email_hash="x", name="Eve", attributes={}, created_at=later,
            updated_at=later,
        )
    )  # fmt: skip
    eve = session.get(Subscriber, dave_id)
    assert eve is not None
    subscriptions.add_subscription(session, weekly, eve, source=subscriptions.SubscriptionSource.admin, confirmed=False)
    before = _state(session)

    for attempt in (
        lambda: subscriptions.one_click_unsubscribe(session, TOKENS, token=links[TokenPurpose.unsubscribe]),
        lambda: subscriptions.unsubscribe(session, TOKENS, token=links[TokenPurpose.unsubscribe], source="page"),
        lambda: subscriptions.resubscribe(session, TOKENS, token=links[TokenPurpose.unsubscribe]),
        lambda: subscriptions.confirm(session, TOKENS, token=links[TokenPurpose.confirm], ip="198.51.100.7"),
        lambda: subscriptions.preferences(session, TOKENS, token=links[TokenPurpose.preferences]),
        lambda: subscriptions.unsubscribe_everything(session, TOKENS, token=links[TokenPurpose.preferences]),
    ):
        with pytest.raises(UnknownToken):
            attempt()
    assert _state(session) == before
    assert subscription_of(session, eve, weekly).status == SubscriptionStatus.pending

    # Eve's own bound links work.
    own = TOKENS.make(TokenPurpose.confirm, eve.id, weekly.id, bound_to=eve.created_at)
    assert subscriptions.confirm(session, TOKENS, token=own).status == SubscriptionStatus.confirmed
    own_leave = TOKENS.make(TokenPurpose.unsubscribe, eve.id, weekly.id, bound_to=eve.created_at)
    assert subscriptions.one_click_unsubscribe(session, TOKENS, token=own_leave) is True
    assert subscription_of(session, eve, weekly).status == SubscriptionStatus.unsubscribed


def test_unbound_tokens_in_mail_already_sent_keep_working(session: Session) -> None:
    weekly = make_list(session)
    reader = make_subscriber(session, weekly)
    old_link = TOKENS.make(TokenPurpose.unsubscribe, reader.id, weekly.id)
    assert subscriptions.one_click_unsubscribe(session, TOKENS, token=old_link) is True
    assert subscription_of(session, reader, weekly).status == SubscriptionStatus.unsubscribed


def test_binding_round_trips_to_the_microsecond_and_is_signed() -> None:
    moment = dt.datetime(2026, 12, 1, 11, 7, 32, 123456, tzinfo=dt.UTC)
    assert bound_time(binding(moment)) == moment
    token = TOKENS.make(TokenPurpose.preferences, 5, bound_to=moment)
    assert TOKENS.read_bound(TokenPurpose.preferences, token, 1) == ((5,), moment, None)
    # A tracking read (unbound ids) does not accept a bound token, nor a token with a changed binding.
    with pytest.raises(UnknownToken):
        TOKENS.read(TokenPurpose.preferences, token, 1)
    signature = token.partition(".")[2]
    forged = TOKENS.make(TokenPurpose.preferences, 5, bound_to=moment + dt.timedelta(microseconds=1))
    with pytest.raises(UnknownToken):
        TOKENS.read_bound(TokenPurpose.preferences, forged.partition(".")[0] + "." + signature, 1)


@pytest.mark.postgres
def test_the_one_click_fast_path_checks_the_binding_in_its_single_statement(committed_pg: str) -> None:
    """The web app's PostgreSQL fast path (autocommit psycopg, no ORM) refuses a row that is not the token's."""
    import asyncio

    import psycopg

    from newsletter.db import libpq_url, make_engine

    engine = make_engine(committed_pg)
    with Session(engine) as session:
        weekly = make_list(session)
        old, new = (
            make_subscriber(session, weekly, "old@example.com"),
            make_subscriber(session, weekly, "new@example.com"),
        )
        session.commit()
        unbound = TOKENS.make(TokenPurpose.unsubscribe, old.id, weekly.id)
        bound = TOKENS.make(TokenPurpose.unsubscribe, new.id, weekly.id, bound_to=new.created_at)
        other_row = TOKENS.make(
            TokenPurpose.unsubscribe, new.id, weekly.id, bound_to=new.created_at - dt.timedelta(microseconds=1)
        )

    async def click(token: str) -> bool:
        async with await psycopg.AsyncConnection.connect(libpq_url(committed_pg), autocommit=True) as conn:
            return await subscriptions.one_click_unsubscribe_async(conn, TOKENS, token=token)

    with pytest.raises(UnknownToken):
        asyncio.run(click(other_row))
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0
        assert set(session.scalars(select(Subscription.status))) == {SubscriptionStatus.confirmed}
    assert asyncio.run(click(unbound)) is True
    assert asyncio.run(click(bound)) is True
    engine.dispose()
