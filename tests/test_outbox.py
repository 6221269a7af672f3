"""The outbox: an event exists exactly when the change it describes was committed (both backends)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import outbox
from newsletter.db import make_engine
from newsletter.models import OutboxEvent
from tests.factories import make_list, make_subscriber


def _types(session: Session) -> list[str]:
    return list(session.scalars(select(OutboxEvent.type).order_by(OutboxEvent.id)))


def test_an_event_is_kept_with_the_change_that_commits(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, session.begin():
        make_list(session)
        outbox.emit(session, "campaign.started", {"campaign": {"id": 1}})
    with sessions() as session:
        (event,) = session.scalars(select(OutboxEvent))
        assert (event.type, event.payload, event.dispatched_at) == ("campaign.started", {"campaign": {"id": 1}}, None)


def test_a_rolled_back_change_leaves_no_event(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(RuntimeError), session.begin():
        make_subscriber(session, make_list(session), email="ada@example.org")
        outbox.emit(session, "subscriber.subscribed", {"email": "ada@example.org"})
        raise RuntimeError("the request failed after the subscribe")
    with sessions() as session:
        assert _types(session) == []


def test_an_unknown_type_is_refused_and_nothing_is_added(session: Session) -> None:
    with pytest.raises(outbox.UnknownEventType, match=r"subscriber\.exploded"):
        outbox.emit(session, "subscriber.exploded", {})
    assert _types(session) == []


def test_emit_many_is_one_statement_and_commit_notifies_once(sessions: sessionmaker[Session]) -> None:
    calls: list[int] = []
    notify = lambda: calls.append(1)  # noqa: E731
    outbox.on_commit(notify)
    try:
        with sessions() as session, session.begin():
            assert outbox.emit_many(session, "subscriber.bounced", [{"n": 1}, {"n": 2}, {"n": 3}]) == 3
        with sessions() as session, session.begin():
            make_list(session)  # a commit without events does not wake the dispatcher
        assert calls == [1]
    finally:
        outbox._after_commit.remove(notify)
    with sessions() as session:
        assert _types(session) == ["subscriber.bounced"] * 3


def test_claiming_marks_events_dispatched_oldest_first(session: Session) -> None:
    for n in range(3):
        outbox.emit(session, "campaign.started", {"n": n})
    session.flush()
    claimed = outbox.claim_undispatched(session, limit=2)
    assert [e.payload["n"] for e in claimed] == [0, 1]
    assert outbox.undispatched_count(session) == 1
    assert [e.payload["n"] for e in outbox.claim_undispatched(session, limit=10)] == [2]
    assert outbox.claim_undispatched(session, limit=10) == []


@pytest.mark.postgres
def test_concurrent_dispatchers_skip_each_others_events(committed_pg: str) -> None:
    engine: Engine = make_engine(committed_pg)
    try:
        with Session(engine) as session, session.begin():
            for n in range(4):
                outbox.emit(session, "campaign.started", {"n": n})
        first_claimed = threading.Event()
        release = threading.Event()
        seen: dict[str, list[int]] = {}

        def first() -> None:
            with Session(engine) as session, session.begin():
                seen["first"] = [e.payload["n"] for e in outbox.claim_undispatched(session, limit=2)]
                first_claimed.set()
                release.wait(10)

        thread = threading.Thread(target=first)
        thread.start()
        assert first_claimed.wait(10)
        with Session(engine) as session, session.begin():  # does not wait for the first one's locks
            seen["second"] = [e.payload["n"] for e in outbox.claim_undispatched(session, limit=10)]
        release.set()
        thread.join(10)
        assert seen == {"first": [0, 1], "second": [2, 3]}
    finally:
        engine.dispose()
