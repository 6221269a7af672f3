"""Subscriber growth per day (the dashboard's chart) equals a count of the subscriptions themselves after any
change — new, confirmed on another day, unsubscribed, a second list, erased — on both backends; on
PostgreSQL the days counted once are read back until a change makes them stale, a change still uncommitted
is never missed once it commits, and neither a view nor a writer waits for the other."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import growth
from newsletter.db import make_engine, utcnow
from newsletter.models import CountedDay, GrowthChange, MailingList, Subscriber, Subscription
from tests.conftest import fresh_database
from tests.factories import make_list, make_subscriber, make_subscribers

DAYS = 30


def agree(session: Session, days: int = DAYS) -> list[growth.GrowthDay]:
    session.flush()
    today = utcnow().date()
    shown = growth.subscriber_growth(session, days, today)
    assert shown == growth.scan(session, today - dt.timedelta(days=days - 1), today)
    return shown


def test_growth_equals_a_count_of_the_subscriptions_after_every_change(session: Session) -> None:
    weekly, daily = make_list(session, slug="weekly"), make_list(session, slug="daily")
    people = make_subscribers(session, weekly, 6)
    ids = [p.id for p in people]
    assert agree(session)[-1] == growth.GrowthDay(utcnow().date(), 6, 0)
    now = utcnow()
    # two of them joined a week ago, one left yesterday
    session.execute(
        update(Subscription).where(Subscription.subscriber_id.in_(ids[:2])).values(confirmed_at=now - dt.timedelta(7))
    )
    session.execute(
        update(Subscription).where(Subscription.subscriber_id == ids[2]).values(unsubscribed_at=now - dt.timedelta(1))
    )
    shown = agree(session)
    assert (shown[-1].joined, shown[-8].joined, shown[-2].left) == (4, 2, 1)
    # a second list the same day: still one person that day
    session.add(Subscription(subscriber_id=ids[3], list_id=daily.id, status="confirmed", confirmed_at=now))
    assert agree(session)[-1].joined == 4
    # a second list another day: one more that day
    session.add(
        Subscription(subscriber_id=ids[0], list_id=daily.id, status="confirmed", confirmed_at=now - dt.timedelta(3))
    )
    assert agree(session)[-4].joined == 1
    # erased: the person's subscriptions go, and with them their days
    session.execute(delete(Subscriber).where(Subscriber.id == ids[0]))
    session.expire_all()
    shown = agree(session)
    assert (shown[-8].joined, shown[-4].joined) == (1, 0)
    assert sum(d.joined for d in agree(session, 90)) == 5


def test_counted_days_are_read_back_until_a_change_makes_them_stale(pg_session: Session) -> None:
    session = pg_session
    weekly = make_list(session, slug="weekly")
    people = make_subscribers(session, weekly, 3)
    today = utcnow().date()
    agree(session)
    kept = session.scalars(select(CountedDay).where(CountedDay.day == today)).one()
    assert (kept.joined, kept.unsubscribed) == (3, 0)
    # a view reads the kept day: a number only the kept row holds is what it shows
    session.execute(update(CountedDay).where(CountedDay.day == yesterday(today)).values(joined=41))
    assert growth.subscriber_growth(session, DAYS, today)[-2].joined == 41
    # a longer period counts only the days it adds
    assert growth.subscriber_growth(session, 90, today)[-2].joined == 41
    assert session.scalar(select(func.count()).select_from(CountedDay)) == 90
    # a change to that day makes it stale: counted again, exactly
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id == people[0].id)
        .values(confirmed_at=utcnow() - dt.timedelta(days=1))
    )
    assert [d.joined for d in agree(session)[-2:]] == [1, 2]
    # an update that changes no join or unsubscribe leaves every day as it was counted
    changes = select(func.count()).select_from(GrowthChange)
    before = session.scalar(changes)
    session.execute(update(Subscription).values(reason="kept"))
    assert session.scalar(changes) == before
    assert [d.joined for d in agree(session)[-2:]] == [1, 2]


def yesterday(today: dt.date) -> dt.date:
    return today - dt.timedelta(days=1)


def test_a_change_committed_after_a_view_counted_its_day_is_never_missed() -> None:
    # real concurrent transactions on PostgreSQL: a database of its own, not the rolled-back test one
    with fresh_database("newsletter_test_growth") as url:
        engine = make_engine(url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        try:
            with sessions() as setup:
                weekly = make_list(setup, slug="weekly")
                make_subscribers(setup, weekly, 2)
                setup.commit()
                list_id = weekly.id
            writer, viewer = sessions(), sessions()
            make_subscriber(writer, writer.get(MailingList, list_id), "late@example.com")
            writer.flush()  # not committed: its trigger's row is invisible to the view
            viewer.execute(text("SET lock_timeout = '2s'"))  # a view that waited on the writer would fail
            assert growth.subscriber_growth(viewer, DAYS)[-1].joined == 2
            viewer.commit()
            done = threading.Event()

            def confirm_another() -> None:  # a second writer does not wait on the first or on the view
                with sessions() as other:
                    other.execute(text("SET lock_timeout = '2s'"))
                    other.execute(update(Subscription).values(confirmed_at=utcnow()))
                    other.rollback()
                done.set()

            thread = threading.Thread(target=confirm_another)
            thread.start()
            thread.join(timeout=10)
            assert done.is_set()
            writer.commit()
            with sessions() as later:
                assert agree(later)[-1].joined == 3  # the day the view kept is stale now: counted again
                later.commit()
            with sessions() as last:  # and the changes that count saw are forgotten
                assert last.scalar(select(func.count()).select_from(GrowthChange)) == 0
            writer.close()
            viewer.close()
        finally:
            engine.dispose()
