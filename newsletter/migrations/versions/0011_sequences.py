"""sequences: welcome and follow-up emails per list, sent through the campaign ledger

Revision ID: 0011
Revises: 0012
Create Date: 2026-12-01 16:40:00

`sequences` (one per list, on or off) and `sequence_steps` (ordered, each a Markdown subject + body and a
delay). Each step owns a long-lived campaign row whose ledger (`deliveries`) gets one row per subscriber
when the step falls due for them, so steps are sent, retried, recovered and counted like any campaign.
Such a campaign has no digest: `campaigns.digest_id` becomes nullable. On SQLite that needs the table
rebuilt, with foreign keys off so that dropping the old table runs no ON DELETE CASCADE (as in 0002).
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIGEST_NOT_NULL = re.compile(r"digest_id (BIGINT|INTEGER) NOT NULL")


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), autoincrement=True, nullable=False)


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_digest_nullable(bind, nullable=True)
    else:
        op.alter_column("campaigns", "digest_id", existing_type=sa.BigInteger(), nullable=True)
    op.create_table(
        "sequences",
        _id(),
        sa.Column("list_id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=True),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["list_id"], ["mailing_lists.id"], name=op.f("fk_sequences_list_id_mailing_lists"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
        sa.UniqueConstraint("list_id", name=op.f("uq_sequences_list_id")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "sequence_steps",
        _id(),
        sa.Column("sequence_id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("delay_hours", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("template_id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=True),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["sequence_id"], ["sequences.id"], name=op.f("fk_sequence_steps_sequence_id_sequences"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name=op.f("fk_sequence_steps_template_id_templates"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_sequence_steps_campaign_id_campaigns"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_steps")),
        sa.UniqueConstraint("sequence_id", "position", name=op.f("uq_sequence_steps_sequence_id_position")),
        sa.UniqueConstraint("campaign_id", name=op.f("uq_sequence_steps_campaign_id")),
        sqlite_autoincrement=True,
    )


def _sqlite_digest_nullable(bind: sa.Connection, *, nullable: bool) -> None:
    """SQLite's recipe for changing a column (https://sqlite.org/lang_altertable.html#otheralter)."""
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        bind.exec_driver_sql("BEGIN")
        rows = bind.exec_driver_sql(
            "SELECT type, sql FROM sqlite_master WHERE tbl_name = 'campaigns' AND sql IS NOT NULL"
        ).fetchall()
        create = next(sql for kind, sql in rows if kind == "table")
        if nullable:
            new, found = _DIGEST_NOT_NULL.subn(r"digest_id \1", create, count=1)
        else:
            new, found = re.subn(r"digest_id (BIGINT|INTEGER)(?! NOT NULL)", r"digest_id \1 NOT NULL", create, count=1)
        if not found:
            raise RuntimeError(f"unexpected schema of table campaigns: {create}")
        # after an earlier rebuild's RENAME, SQLite stores the name quoted
        new, renamed = re.subn(r'^CREATE TABLE "?campaigns"? ', "CREATE TABLE _new_campaigns ", new, count=1)
        if not renamed:
            raise RuntimeError(f"unexpected schema of table campaigns: {create}")
        bind.exec_driver_sql(new)
        bind.exec_driver_sql("INSERT INTO _new_campaigns SELECT * FROM campaigns")
        bind.exec_driver_sql("DROP TABLE campaigns")
        # The counter triggers on `deliveries` name `campaigns`: legacy mode renames without rewriting or
        # checking them, and they find the new table by that name.
        bind.exec_driver_sql("PRAGMA legacy_alter_table=ON")
        bind.exec_driver_sql("ALTER TABLE _new_campaigns RENAME TO campaigns")
        bind.exec_driver_sql("PRAGMA legacy_alter_table=OFF")
        for kind, sql in rows:
            if kind == "index":
                bind.exec_driver_sql(sql)
        problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise RuntimeError(f"foreign keys broken by the rebuild: {problems[:5]}")
        bind.exec_driver_sql("COMMIT")
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
        bind.exec_driver_sql("BEGIN")


def downgrade() -> None:
    op.drop_table("sequence_steps")
    op.drop_table("sequences")
    # The steps' campaigns have no digest: they go with their steps (their ledger rows with them).
    op.execute("DELETE FROM campaigns WHERE digest_id IS NULL")
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_digest_nullable(bind, nullable=False)
    else:
        op.alter_column("campaigns", "digest_id", existing_type=sa.BigInteger(), nullable=False)
