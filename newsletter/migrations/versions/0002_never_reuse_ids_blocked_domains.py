"""never reuse ids on SQLite; the domain blocklist

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 11:20:00

SQLite hands out the id of a deleted row again unless the table is AUTOINCREMENT, and tokens in mail
already sent carry ids: a deleted subscriber's old unsubscribe link would act on the next subscriber. The
tables whose ids links and tokens carry are rebuilt with AUTOINCREMENT (SQLite cannot add it in place).
PostgreSQL's identity columns never reuse a value, so there this part is a no-op.

Also: `subscribers.email_domain` (filled from the address) and `blocked_domains`, for the domain blocklist.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEVER_REUSE = ("mailing_lists", "subscribers", "subscriptions", "campaigns", "deliveries", "links")
_ID = re.compile(r"^(\s*)id INTEGER NOT NULL,", re.MULTILINE)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_with_autoincrement(bind, NEVER_REUSE)
    op.add_column("subscribers", sa.Column("email_domain", sa.String(length=255), nullable=False, server_default=""))
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE subscribers SET email_domain = split_part(email, '@', 2)")
    else:
        # Normalised addresses hold exactly one @ (email-validator refuses quoted local parts).
        op.execute("UPDATE subscribers SET email_domain = substr(email, instr(email, '@') + 1)")
    if bind.dialect.name == "postgresql":
        # SQLite keeps the (harmless) default: removing it would mean another rebuild of the table.
        op.alter_column("subscribers", "email_domain", server_default=None)
    op.create_index(op.f("ix_subscribers_email_domain"), "subscribers", ["email_domain"], unique=False)
    op.create_table(
        "blocked_domains",
        sa.Column("id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocked_domains")),
        sa.UniqueConstraint("domain", name=op.f("uq_blocked_domains_domain")),
    )


def _rebuild_with_autoincrement(bind: sa.Connection, tables: Sequence[str]) -> None:
    """SQLite's own recipe for changing a table (https://sqlite.org/lang_altertable.html#otheralter).

    Foreign keys must be off while a referenced table is dropped, or the DROP's implicit DELETE would run
    every ON DELETE CASCADE (dropping `subscribers` would empty `subscriptions`). That pragma is a no-op
    inside a transaction, so the work so far is committed, the tables are rebuilt in a transaction of
    their own (checked by `foreign_key_check` before it commits), and the rest runs in a new one. A rebuild
    interrupted half way is simply done again: tables already AUTOINCREMENT are skipped.
    """
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        bind.exec_driver_sql("BEGIN")
        for table in tables:
            create, indexes = _schema(bind, table)
            if "AUTOINCREMENT" in create:
                continue
            new = _ID.sub(r"\1id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,", create, count=1)
            new = new.replace(f"CONSTRAINT pk_{table} PRIMARY KEY (id), ", "")
            new = new.replace(f"CREATE TABLE {table} (", f"CREATE TABLE _new_{table} (", 1)
            if "AUTOINCREMENT" not in new or f"pk_{table}" in new:
                raise RuntimeError(f"unexpected schema of table {table}: {create}")
            bind.exec_driver_sql(new)
            bind.exec_driver_sql(f"INSERT INTO _new_{table} SELECT * FROM {table}")
            bind.exec_driver_sql(f"DROP TABLE {table}")
            bind.exec_driver_sql(f"ALTER TABLE _new_{table} RENAME TO {table}")
            for index in indexes:
                bind.exec_driver_sql(index)
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


def _schema(bind: sa.Connection, table: str) -> tuple[str, list[str]]:
    rows = bind.exec_driver_sql(
        "SELECT type, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (table,)
    ).fetchall()
    create = next(sql for kind, sql in rows if kind == "table")
    return create, [sql for kind, sql in rows if kind == "index"]


def downgrade() -> None:
    op.drop_table("blocked_domains")
    op.drop_index(op.f("ix_subscribers_email_domain"), table_name="subscribers")
    # On SQLite this rebuilds the table: run it with foreign keys off (see _rebuild_with_autoincrement).
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("email_domain")
