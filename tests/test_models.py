"""The schema: migrations produce exactly the models, and the constraints that carry the guarantees hold."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, delete, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.db import Base, make_engine
from newsletter.migrate import current_revision, upgrade
from newsletter.models import Campaign, Delivery, DeliveryStatus, MailingList, Subscriber, email_hash
from tests.factories import make_list, make_subscriber, publish_sample


def test_migrations_produce_exactly_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_on_empty_sqlite_is_repeatable(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(engine)
    upgrade(engine)  # a second run is a no-op
    assert current_revision(engine) == "0018"
    assert {"deliveries", "subscribers", "mailing_lists", "suppressions", "heartbeats"} <= set(
        inspect(engine).get_table_names()
    )


def test_list_slug_is_unique(session: Session) -> None:
    make_list(session, slug="weekly")
    session.add(
        MailingList(slug="weekly", name="Copy", from_email="a@example.org", theme={}, form_fields=[], cors_origins=[])
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_subscriber_email_is_unique(session: Session) -> None:
    make_subscriber(session, email="ana@example.com")
    session.add(Subscriber(email="ana@example.com", email_hash=email_hash("ana@example.com"), attributes={}))
    with pytest.raises(IntegrityError):
        session.flush()


def test_one_ledger_row_per_campaign_and_subscriber(session: Session) -> None:
    mailing_list = make_list(session)
    subscriber = make_subscriber(session, mailing_list)
    digest = publish_sample(session)
    campaign = Campaign(digest_id=digest.id, subject="s", lists=[mailing_list])
    session.add(campaign)
    session.flush()
    session.add(Delivery(campaign_id=campaign.id, subscriber_id=subscriber.id, list_id=mailing_list.id))
    session.flush()
    session.add(Delivery(campaign_id=campaign.id, subscriber_id=subscriber.id, list_id=mailing_list.id))
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_ledger_row_names_one_of_the_campaigns_lists(session: Session) -> None:
    weekly, other = make_list(session, slug="weekly"), make_list(session, slug="other")
    subscriber = make_subscriber(session, weekly)
    campaign = Campaign(digest_id=publish_sample(session).id, subject="s", lists=[weekly])
    session.add(campaign)
    session.flush()
    with pytest.raises(IntegrityError), session.begin_nested():
        session.add(Delivery(campaign_id=campaign.id, subscriber_id=subscriber.id, list_id=other.id))
    with pytest.raises(IntegrityError), session.begin_nested():
        session.add(Delivery(campaign_id=campaign.id + 1, subscriber_id=subscriber.id, list_id=weekly.id))
    session.add(Delivery(campaign_id=campaign.id, subscriber_id=subscriber.id, list_id=weekly.id))
    session.flush()


def test_deleting_a_campaign_deletes_its_ledger(session: Session) -> None:
    weekly = make_list(session)
    subscriber = make_subscriber(session, weekly)
    campaign = Campaign(digest_id=publish_sample(session).id, subject="s", lists=[weekly])
    session.add(campaign)
    session.flush()
    session.add(Delivery(campaign_id=campaign.id, subscriber_id=subscriber.id, list_id=weekly.id))
    session.flush()
    session.execute(delete(Campaign).where(Campaign.id == campaign.id))
    assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_timestamps_come_back_timezone_aware(session: Session) -> None:
    subscriber = make_subscriber(session)
    session.expire_all()
    loaded = session.scalar(select(Subscriber).where(Subscriber.id == subscriber.id))
    assert loaded is not None and loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_enum_values_are_stored_by_value(session: Session) -> None:
    mailing_list = make_list(session)
    subscriber = make_subscriber(session, mailing_list)
    digest = publish_sample(session)
    campaign = Campaign(digest_id=digest.id, subject="s", lists=[mailing_list])
    session.add(campaign)
    session.flush()
    session.add(
        Delivery(
            campaign_id=campaign.id, subscriber_id=subscriber.id, list_id=mailing_list.id, status=DeliveryStatus.pending
        )
    )
    session.flush()
    raw = session.connection().exec_driver_sql("SELECT status FROM deliveries").scalar()
    assert raw == "pending"


def test_migration_0002_rebuilds_sqlite_tables_so_ids_are_never_reused_and_keeps_every_row(tmp_path) -> None:
    """Upgrading a database with data: the rebuild must not run the ON DELETE CASCADEs of the old tables."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    now = "2025-01-01 00:00:00.000000"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mailing_lists (slug, name, description, from_name, from_email, opt_in, visibility, "
                "postal_address, theme, tracking, form_fields, cors_origins, created_at, updated_at) VALUES "
                "('weekly', 'Weekly', '', '', 'news@example.org', 'double', 'public', '', '{}', 1, '[]', '[]', "
                ":now, :now)"
            ),
            {"now": now},
        )
        for n in (1, 2, 3):
            conn.execute(
                text(
                    "INSERT INTO subscribers (email, email_hash, name, attributes, status, created_at, updated_at) "
                    "VALUES (:email, 'h', '', '{}', 'active', :now, :now)"
                ),
                {"email": f"reader{n}@example.org", "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO subscriptions (subscriber_id, list_id, status, source, created_at, updated_at) "
                    "VALUES (:n, 1, 'confirmed', 'api', :now, :now)"
                ),
                {"n": n, "now": now},
            )
    upgrade(engine)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM subscriptions")).scalar() == 3
        assert conn.execute(text("SELECT email_domain FROM subscribers")).scalars().all() == ["example.org"] * 3
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        conn.execute(text("DELETE FROM subscribers WHERE id = 3"))
        assert conn.execute(text("SELECT count(*) FROM subscriptions")).scalar() == 2  # cascades still work
        conn.execute(
            text(
                "INSERT INTO subscribers (email, email_hash, email_domain, name, attributes, status, created_at, "
                "updated_at) VALUES ('eve@example.org', 'h', 'example.org', '', '{}', 'active', :now, :now)"
            ),
            {"now": now},
        )
        assert conn.execute(text("SELECT id FROM subscribers WHERE email = 'eve@example.org'")).scalar() == 4
        for table in ("mailing_lists", "subscribers", "subscriptions", "campaigns", "deliveries", "links"):
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar()
            assert "PRIMARY KEY AUTOINCREMENT" in sql, table
    engine.dispose()


def test_an_engine_pushed_out_of_the_cache_closes_its_connections(tmp_path, make_settings) -> None:
    from newsletter.db import get_engine, session_scope

    first = make_settings(database_url=f"sqlite:///{tmp_path / 'first.db'}")
    with session_scope(first) as session:
        session.execute(text("SELECT 1"))
    engine = get_engine(first)
    assert engine.pool.checkedin() == 1  # the connection waits in the pool
    for n in range(4):
        get_engine(make_settings(database_url=f"sqlite:///{tmp_path / f'other{n}.db'}"))
    assert engine.pool.checkedin() == 0  # disposed, not left for the garbage collector
    assert get_engine(first) is not engine
