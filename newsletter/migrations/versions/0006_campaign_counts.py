"""per-campaign counters of ledger rows per status, kept by triggers; indexes for the latest retry reason
and for addresses by prefix

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:00:00

`campaign_counts` holds deltas of a campaign's ledger rows per status (see models.CampaignCount). Triggers
on `deliveries` keep it in the transaction of every change, whichever code path makes it (plan, claim,
record, retry, sweep, skip, cancel, resend, a bounce, deleting a subscriber): a progress poll reads a few
counter rows instead of scanning a million ledger rows.

PostgreSQL: statement-level triggers with transition tables, so a set-based UPDATE of a group costs one
aggregated upsert, and a plan of a million rows one more pass over them. Each connection writes its own
counter rows (shard = its backend pid): workers never wait on one hot row. SQLite: row triggers (one
writer, shard 0).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TICK_SECONDS = 5  # models.CampaignCount.tick: `sent` rows are counted per this many seconds of sent_at
# ledger.RESENT_AFTER_UNKNOWN, as it was when this migration was written (a migration must not change later)
RESENT = "resent: a worker died while an earlier attempt was in flight, so it may have arrived too"
_RETRY_WHERE = "status = 'pending' AND next_attempt_at IS NOT NULL"


def _pg_rows(table: str, sign: int) -> str:
    """The (campaign, status, tick, n, at) deltas of a set of ledger rows, with the `resent` pseudo-status."""
    return f"""
        SELECT campaign_id, status::text AS status,
            CASE WHEN status = 'sent' THEN coalesce(floor(extract(epoch FROM sent_at) / {TICK_SECONDS})::bigint, 0)
                ELSE 0 END AS tick,
            {sign} AS n, CASE WHEN status = 'sent' THEN sent_at END AS at
        FROM {table}
        UNION ALL
        SELECT campaign_id, 'resent', 0, {sign}, NULL FROM {table} WHERE status = 'sent' AND smtp_text = '{RESENT}'"""


def _pg_function(name: str, sources: Sequence[str]) -> str:
    deltas = " UNION ALL ".join(sources)
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO campaign_counts AS cc (campaign_id, status, tick, shard, n, last_at)
    SELECT g.campaign_id, g.status, g.tick, pg_backend_pid(), g.n, g.at
    FROM (
        SELECT d.campaign_id, d.status, d.tick, sum(d.n) AS n, max(d.at) AS at
        FROM ({deltas}) d
        GROUP BY d.campaign_id, d.status, d.tick
        HAVING sum(d.n) <> 0
    ) g
    WHERE EXISTS (SELECT 1 FROM campaigns c WHERE c.id = g.campaign_id)
    ON CONFLICT (campaign_id, status, tick, shard)
        DO UPDATE SET n = cc.n + excluded.n, last_at = greatest(cc.last_at, excluded.last_at);
    RETURN NULL;
END
$$"""


_PG_TRIGGERS = {
    "INSERT": ("REFERENCING NEW TABLE AS new_rows", [_pg_rows("new_rows", 1)]),
    "UPDATE": (
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        [_pg_rows("new_rows", 1), _pg_rows("old_rows", -1)],
    ),
    "DELETE": ("REFERENCING OLD TABLE AS old_rows", [_pg_rows("old_rows", -1)]),
}


def _sqlite_upsert(row: str, sign: int) -> str:
    tick = f"CASE WHEN {row}.status = 'sent' THEN coalesce(CAST(strftime('%s', {row}.sent_at) AS INTEGER) / {TICK_SECONDS}, 0) ELSE 0 END"
    return f"""
    INSERT INTO campaign_counts (campaign_id, status, tick, shard, n, last_at)
    SELECT {row}.campaign_id, {row}.status, {tick}, 0, {sign}, CASE WHEN {row}.status = 'sent' THEN {row}.sent_at END
    WHERE EXISTS (SELECT 1 FROM campaigns WHERE id = {row}.campaign_id)
    ON CONFLICT (campaign_id, status, tick, shard) DO UPDATE SET n = n + excluded.n,
        last_at = max(coalesce(last_at, excluded.last_at), coalesce(excluded.last_at, last_at));
    INSERT INTO campaign_counts (campaign_id, status, tick, shard, n, last_at)
    SELECT {row}.campaign_id, 'resent', 0, 0, {sign}, NULL
    WHERE {row}.status = 'sent' AND {row}.smtp_text = '{RESENT}'
        AND EXISTS (SELECT 1 FROM campaigns WHERE id = {row}.campaign_id)
    ON CONFLICT (campaign_id, status, tick, shard) DO UPDATE SET n = n + excluded.n;"""


_SQLITE_TRIGGERS = {
    "insert": f"AFTER INSERT ON deliveries BEGIN {_sqlite_upsert('new', 1)} END",
    "update": (
        "AFTER UPDATE OF status, sent_at, smtp_text ON deliveries "
        "WHEN old.status IS NOT new.status OR (old.status = 'sent' "
        "AND (old.sent_at IS NOT new.sent_at OR old.smtp_text IS NOT new.smtp_text)) "
        f"BEGIN {_sqlite_upsert('old', -1)} {_sqlite_upsert('new', 1)} END"
    ),
    "delete": f"AFTER DELETE ON deliveries BEGIN {_sqlite_upsert('old', -1)} END",
}


def upgrade() -> None:
    op.create_table(
        "campaign_counts",
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tick", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_counts_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "status", "tick", "shard", name=op.f("pk_campaign_counts")),
    )
    op.create_index(
        "ix_deliveries_retry_at",
        "deliveries",
        ["campaign_id", "next_attempt_at"],
        unique=False,
        postgresql_where=sa.text(_RETRY_WHERE),
        sqlite_where=sa.text(_RETRY_WHERE),
    )
    op.create_index(
        "ix_subscribers_email_prefix", "subscribers", ["email"], postgresql_ops={"email": "text_pattern_ops"}
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    rows = _pg_rows("deliveries", 1) if postgres else _sqlite_rows()
    # the campaigns that exist already start from one count of their ledger
    op.execute(
        "INSERT INTO campaign_counts (campaign_id, status, tick, shard, n, last_at) "
        f"SELECT campaign_id, status, tick, 0, sum(n), max(at) FROM ({rows}) d GROUP BY campaign_id, status, tick"
    )
    if postgres:
        for event, (referencing, sources) in _PG_TRIGGERS.items():
            name = f"campaign_counts_{event.lower()}"
            op.execute(_pg_function(name, sources))
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON deliveries {referencing} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    else:
        for event, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER campaign_counts_{event} {body}")


def _sqlite_rows() -> str:
    tick = f"CASE WHEN status = 'sent' THEN coalesce(CAST(strftime('%s', sent_at) AS INTEGER) / {TICK_SECONDS}, 0) ELSE 0 END"
    return (
        f"SELECT campaign_id, status, {tick} AS tick, 1 AS n, CASE WHEN status = 'sent' THEN sent_at END AS at "
        "FROM deliveries UNION ALL "
        f"SELECT campaign_id, 'resent', 0, 1, NULL FROM deliveries WHERE status = 'sent' AND smtp_text = '{RESENT}'"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS campaign_counts_{event}" + (" ON deliveries" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS campaign_counts_{event}()")
    op.drop_index(
        "ix_deliveries_retry_at",
        table_name="deliveries",
        postgresql_where=sa.text(_RETRY_WHERE),
        sqlite_where=sa.text(_RETRY_WHERE),
    )
    op.drop_index("ix_subscribers_email_prefix", table_name="subscribers")
    op.drop_table("campaign_counts")
