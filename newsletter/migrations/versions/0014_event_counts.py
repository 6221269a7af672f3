"""per-campaign counters of engagement events (per kind, hour and link) and of the recipients who had
each kind, kept by triggers; what kind of bounce an event was

Revision ID: 0014
Revises: 0007
Create Date: 2026-12-01 16:30:00

A campaign's report (opens and clicks per hour, clicks per link, unique openers and clickers, bounces,
soft bounces, complaints, unsubscribes) read every event of the campaign on each view: hundreds of ms at
a million recipients. `event_counts` holds deltas kept by triggers on `events` in the transaction of every
change, as `campaign_counts` (0006) does for the ledger: `n` counts events per (campaign, kind, hour,
link); `people` counts the recipients (deliveries) who had a kind at least once, overall (link 0) and
per link for clicks. "At least once" is exact: `event_firsts` holds one row per (delivery, kind, link),
inserted ON CONFLICT DO NOTHING by the events trigger, and its own triggers count the rows it gained or
lost (a unique index decides, so two concurrent first opens count once).

`events.bounce_class` says what a bounce was: `hard`, `soft`, or `soft_suppressed` (the soft bounce that
reached the soft-bounce threshold); the pseudo-kinds `soft_bounce` and `soft_suppressed` count them.

PostgreSQL: statement-level triggers with transition tables, each connection on its own rows (`shard` =
its backend pid), folded by the sweep. SQLite: row triggers, shard 0.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOUR = 3600
SOFT = "('soft', 'soft_suppressed')"
_ID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def _pg_events(table: str, sign: int) -> str:
    """(campaign, kind, hour, link, n) deltas of a set of events, with the soft-bounce pseudo-kinds."""
    hour = f"floor(extract(epoch FROM created_at) / {HOUR})::bigint"
    return f"""
        SELECT campaign_id, type::text AS kind, {hour} AS hour, coalesce(link_id, 0) AS link_id, {sign} AS n
        FROM {table} WHERE campaign_id IS NOT NULL
        UNION ALL
        SELECT campaign_id, 'soft_bounce', {hour}, 0, {sign} FROM {table}
        WHERE campaign_id IS NOT NULL AND type = 'bounce' AND bounce_class IN {SOFT}
        UNION ALL
        SELECT campaign_id, 'soft_suppressed', {hour}, 0, {sign} FROM {table}
        WHERE campaign_id IS NOT NULL AND type = 'bounce' AND bounce_class = 'soft_suppressed'"""


def _pg_firsts_of(table: str) -> str:
    """The (delivery, kind, link, campaign) keys of a set of opens and clicks: link 0 is the kind at all."""
    return f"""
        SELECT delivery_id, type::text, 0::bigint, campaign_id FROM {table}
        WHERE type IN ('open', 'click') AND delivery_id IS NOT NULL AND campaign_id IS NOT NULL
        UNION
        SELECT delivery_id, 'click', link_id, campaign_id FROM {table}
        WHERE type = 'click' AND link_id IS NOT NULL AND delivery_id IS NOT NULL AND campaign_id IS NOT NULL"""


def _pg_upsert(select: str, column: str) -> str:
    return f"""
    INSERT INTO event_counts AS ec (campaign_id, kind, hour, link_id, shard, n, people)
    SELECT g.campaign_id, g.kind, g.hour, g.link_id, pg_backend_pid(), {"g.n" if column == "n" else "0"},
        {"g.n" if column == "people" else "0"}
    FROM (
        SELECT d.campaign_id, d.kind, d.hour, d.link_id, sum(d.n) AS n FROM ({select}) d
        GROUP BY d.campaign_id, d.kind, d.hour, d.link_id HAVING sum(d.n) <> 0
    ) g
    WHERE EXISTS (SELECT 1 FROM campaigns c WHERE c.id = g.campaign_id)
    ON CONFLICT (campaign_id, kind, hour, link_id, shard)
        DO UPDATE SET {column} = ec.{column} + excluded.{column};"""


def _pg_function(name: str, body: str) -> str:
    return f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}\n    RETURN NULL;\nEND\n$$"


def _pg_people(table: str, sign: int) -> str:
    return f"SELECT campaign_id, kind, 0::bigint AS hour, link_id, {sign} AS n FROM {table}"


_PG_TRIGGERS = {
    "events_insert": (
        "events",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _pg_upsert(_pg_events("new_rows", 1), "n")
        + "\n    INSERT INTO event_firsts (delivery_id, kind, link_id, campaign_id) "
        + _pg_firsts_of("new_rows")
        + "\n    ON CONFLICT DO NOTHING;",
    ),
    "events_update": (
        "events",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        _pg_upsert(_pg_events("new_rows", 1) + " UNION ALL " + _pg_events("old_rows", -1), "n"),
    ),
    "events_delete": (
        "events",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
        _pg_upsert(_pg_events("old_rows", -1), "n"),
    ),
    "firsts_insert": (
        "event_firsts",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
        _pg_upsert(_pg_people("new_rows", 1), "people"),
    ),
    "firsts_delete": (
        "event_firsts",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
        _pg_upsert(_pg_people("old_rows", -1), "people"),
    ),
}


def _sqlite_count(row: str, sign: int) -> str:
    hour = f"CAST(strftime('%s', {row}.created_at) AS INTEGER) / {HOUR}"
    kinds = [
        (f"{row}.type", "1"),
        ("'soft_bounce'", f"{row}.type = 'bounce' AND {row}.bounce_class IN {SOFT}"),
        ("'soft_suppressed'", f"{row}.type = 'bounce' AND {row}.bounce_class = 'soft_suppressed'"),
    ]
    return "".join(
        f"""
    INSERT INTO event_counts (campaign_id, kind, hour, link_id, shard, n, people)
    SELECT {row}.campaign_id, {kind}, {hour}, {f"coalesce({row}.link_id, 0)" if kind == f"{row}.type" else "0"},
        0, {sign}, 0
    WHERE {row}.campaign_id IS NOT NULL AND {when} AND EXISTS (SELECT 1 FROM campaigns WHERE id = {row}.campaign_id)
    ON CONFLICT (campaign_id, kind, hour, link_id, shard) DO UPDATE SET n = n + excluded.n;"""
        for kind, when in kinds
    )


_SQLITE_FIRSTS = """
    INSERT INTO event_firsts (delivery_id, kind, link_id, campaign_id)
    SELECT new.delivery_id, new.type, 0, new.campaign_id
    WHERE new.type IN ('open', 'click') AND new.delivery_id IS NOT NULL AND new.campaign_id IS NOT NULL
    ON CONFLICT DO NOTHING;
    INSERT INTO event_firsts (delivery_id, kind, link_id, campaign_id)
    SELECT new.delivery_id, 'click', new.link_id, new.campaign_id
    WHERE new.type = 'click' AND new.link_id IS NOT NULL AND new.delivery_id IS NOT NULL
        AND new.campaign_id IS NOT NULL
    ON CONFLICT DO NOTHING;"""


def _sqlite_people(row: str, sign: int) -> str:
    return f"""
    INSERT INTO event_counts (campaign_id, kind, hour, link_id, shard, n, people)
    SELECT {row}.campaign_id, {row}.kind, 0, {row}.link_id, 0, 0, {sign}
    WHERE EXISTS (SELECT 1 FROM campaigns WHERE id = {row}.campaign_id)
    ON CONFLICT (campaign_id, kind, hour, link_id, shard) DO UPDATE SET people = people + excluded.people;"""


_SQLITE_TRIGGERS = {
    "events_insert": f"AFTER INSERT ON events BEGIN {_sqlite_count('new', 1)} {_SQLITE_FIRSTS} END",
    "events_update": (
        "AFTER UPDATE OF type, campaign_id, link_id, created_at, bounce_class ON events "
        f"BEGIN {_sqlite_count('old', -1)} {_sqlite_count('new', 1)} END"
    ),
    "events_delete": f"AFTER DELETE ON events BEGIN {_sqlite_count('old', -1)} END",
    "firsts_insert": f"AFTER INSERT ON event_firsts BEGIN {_sqlite_people('new', 1)} END",
    "firsts_delete": f"AFTER DELETE ON event_firsts BEGIN {_sqlite_people('old', -1)} END",
}


def upgrade() -> None:
    op.add_column("events", sa.Column("bounce_class", sa.String(length=16), nullable=True))
    op.create_table(
        "event_counts",
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hour", _ID, nullable=False),
        sa.Column("link_id", _ID, nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", _ID, nullable=False),
        sa.Column("people", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_event_counts_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "kind", "hour", "link_id", "shard", name=op.f("pk_event_counts")),
    )
    op.create_table(
        "event_firsts",
        sa.Column("delivery_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("link_id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], name=op.f("fk_event_firsts_delivery_id_deliveries"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_event_firsts_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("delivery_id", "kind", "link_id", name=op.f("pk_event_firsts")),
    )
    # the report's lists of bounces, complaints and unsubscribes: newest first from an index
    op.create_index("ix_events_campaign_id_type_id", "events", ["campaign_id", "type", "id"])
    op.drop_index("ix_events_campaign_id_type", table_name="events")
    postgres = op.get_bind().dialect.name == "postgresql"
    _backfill(postgres)
    if postgres:
        for name, (table, event, referencing, body) in _PG_TRIGGERS.items():
            op.execute(_pg_function(f"event_counts_{name}", body))
            op.execute(
                f"CREATE TRIGGER event_counts_{name} AFTER {event} ON {table} {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION event_counts_{name}()"
            )
    else:
        for name, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER event_counts_{name} {body}")


def _backfill(postgres: bool) -> None:
    """The campaigns that exist already start from one count of their events."""
    if postgres:
        events = _pg_events("events", 1)
        firsts = _pg_firsts_of("events")
    else:
        hour = f"CAST(strftime('%s', created_at) AS INTEGER) / {HOUR}"
        events = (
            f"SELECT campaign_id, type AS kind, {hour} AS hour, coalesce(link_id, 0) AS link_id, 1 AS n FROM events "
            f"WHERE campaign_id IS NOT NULL UNION ALL SELECT campaign_id, 'soft_bounce', {hour}, 0, 1 FROM events "
            f"WHERE campaign_id IS NOT NULL AND type = 'bounce' AND bounce_class IN {SOFT}"
        )
        firsts = (
            "SELECT delivery_id, type, 0, campaign_id FROM events WHERE type IN ('open', 'click') "
            "AND delivery_id IS NOT NULL AND campaign_id IS NOT NULL UNION SELECT delivery_id, 'click', link_id, "
            "campaign_id FROM events WHERE type = 'click' AND link_id IS NOT NULL AND delivery_id IS NOT NULL "
            "AND campaign_id IS NOT NULL"
        )
    op.execute(
        "INSERT INTO event_counts (campaign_id, kind, hour, link_id, shard, n, people) "
        f"SELECT campaign_id, kind, hour, link_id, 0, sum(n), 0 FROM ({events}) d "
        "GROUP BY campaign_id, kind, hour, link_id"
    )
    op.execute(f"INSERT INTO event_firsts (delivery_id, kind, link_id, campaign_id) {firsts}")
    op.execute(
        "INSERT INTO event_counts (campaign_id, kind, hour, link_id, shard, n, people) "
        "SELECT campaign_id, kind, 0, link_id, 0, 0, count(*) FROM event_firsts WHERE true GROUP BY campaign_id, kind, link_id "
        "ON CONFLICT (campaign_id, kind, hour, link_id, shard) DO UPDATE SET people = excluded.people"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, (table, *_) in _PG_TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS event_counts_{name}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS event_counts_{name}()")
    op.create_index("ix_events_campaign_id_type", "events", ["campaign_id", "type"])
    op.drop_index("ix_events_campaign_id_type_id", table_name="events")
    op.drop_table("event_firsts")
    op.drop_table("event_counts")
    op.drop_column("events", "bounce_class")
