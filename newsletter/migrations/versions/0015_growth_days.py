"""subscriber growth per day, counted once and kept until a change makes it stale; indexes on when
subscriptions were confirmed and ended

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 20:00:00

The dashboard's growth chart counted, on every view, the people who joined and who left on each of the
last 30 or 90 days: two passes over every subscription (1.6 s at a million). `growth_days` keeps each
day's two numbers as counted once, with the snapshot of that count (`pg_current_snapshot()`);
`growth_changes` holds one row per (day, transaction) that changed that day's joins or unsubscribes,
written by statement-level triggers on `subscriptions` (insert-only, so writers never wait on each other
or on a reader). A counted day is stale when a change its snapshot did not see is visible: an uncommitted
change is invisible to the reader until it commits, and from then on it is not in the counted snapshot,
so no change is ever missed. See newsletter/growth.py. PostgreSQL only: on SQLite the days are counted on
each view (a small database), and the tables stay empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")


def _days(rows: str, alias: str) -> str:
    """The UTC days a set of subscription rows joined or left on."""
    return (
        f"SELECT ({alias}.confirmed_at AT TIME ZONE 'UTC')::date AS day FROM {rows} "
        f"WHERE {alias}.confirmed_at IS NOT NULL "
        f"UNION SELECT ({alias}.unsubscribed_at AT TIME ZONE 'UTC')::date FROM {rows} "
        f"WHERE {alias}.unsubscribed_at IS NOT NULL"
    )


# An update: the days before and after of the rows whose join, unsubscribe or person changed.
_CHANGED_DAYS = """
    SELECT (v.t AT TIME ZONE 'UTC')::date AS day
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    CROSS JOIN LATERAL (VALUES (o.confirmed_at), (n.confirmed_at), (o.unsubscribed_at), (n.unsubscribed_at)) v(t)
    WHERE v.t IS NOT NULL AND (o.confirmed_at IS DISTINCT FROM n.confirmed_at
        OR o.unsubscribed_at IS DISTINCT FROM n.unsubscribed_at OR o.subscriber_id <> n.subscriber_id)
    GROUP BY 1"""


def _record(days: str) -> str:
    """One change row per day for this transaction. A day this same transaction counted is dropped instead:
    its snapshot shows this transaction's own changes as seen, even those made after it."""
    return f"""
    WITH d AS ({days}),
    own AS (DELETE FROM growth_days g USING d WHERE g.day = d.day AND g.counted_by = pg_current_xact_id()::text::bigint)
    INSERT INTO growth_changes (day, xid) SELECT d.day, pg_current_xact_id()::text::bigint FROM d
    ON CONFLICT DO NOTHING;"""


_PG_TRIGGERS = {
    "insert": ("INSERT", "REFERENCING NEW TABLE AS new_rows", _record(_days("new_rows s", "s"))),
    "update": ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", _record(_CHANGED_DAYS)),
    "delete": ("DELETE", "REFERENCING OLD TABLE AS old_rows", _record(_days("old_rows s", "s"))),
}


def upgrade() -> None:
    op.create_table(
        "growth_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("joined", sa.Integer(), nullable=False),
        sa.Column("unsubscribed", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("counted_by", _ID, nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_growth_days")),
    )
    op.create_table(
        "growth_changes",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("xid", _ID, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("day", "xid", name=op.f("pk_growth_changes")),
    )
    op.create_index("ix_subscriptions_confirmed_at", "subscriptions", ["confirmed_at"])
    # only those who left: an import of a million new subscriptions adds nothing to it
    where = sa.text("unsubscribed_at IS NOT NULL")
    op.create_index(
        "ix_subscriptions_unsubscribed_at",
        "subscriptions",
        ["unsubscribed_at"],
        postgresql_where=where,
        sqlite_where=where,
    )
    if op.get_bind().dialect.name == "postgresql":
        for name, (event, referencing, body) in _PG_TRIGGERS.items():
            op.execute(
                f"CREATE FUNCTION growth_changes_{name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n    {body}\n    RETURN NULL;\nEND\n$$"
            )
            op.execute(
                f"CREATE TRIGGER growth_changes_{name} AFTER {event} ON subscriptions {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION growth_changes_{name}()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS growth_changes_{name} ON subscriptions")
            op.execute(f"DROP FUNCTION IF EXISTS growth_changes_{name}()")
    op.drop_index("ix_subscriptions_unsubscribed_at", table_name="subscriptions")
    op.drop_index("ix_subscriptions_confirmed_at", table_name="subscriptions")
    op.drop_table("growth_changes")
    op.drop_table("growth_days")
