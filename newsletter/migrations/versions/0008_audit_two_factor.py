"""audit log, two-factor sign-in, deactivated users, named API tokens

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 16:30:00

`audit_log` records who did what (the actor's name as text, so it outlives the user). `users` gains the
encrypted TOTP secret, when two-factor was switched on, the time step of the last code accepted (replays
are refused) and `deactivated_at`; `recovery_codes` holds hashes of one-time recovery codes.
`api_tokens.name` says what a token is for; `events.source` where a bounce or complaint report came from;
`mailing_lists.default_template_id` the uploaded template a list's campaigns use unless told otherwise.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
ACTOR_KINDS = ("user", "token", "cli", "system")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column(
            "actor_kind",
            sa.Enum(*ACTOR_KINDS, name="actor_kind", native_enum=False, create_constraint=True, length=32),
            nullable=False,
        ),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor", "at"], unique=False)
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"], unique=False)
    # Plain ADD COLUMN (nullable columns): no table copy on SQLite.
    op.add_column("users", sa.Column("totp_secret", sa.String(length=255), nullable=True))
    op.add_column("users", sa.Column("totp_enabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("totp_last_step", ID, nullable=True))
    op.add_column("users", sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_tokens", sa.Column("name", sa.String(length=100), nullable=True))
    op.add_column("events", sa.Column("source", sa.String(length=16), nullable=True))
    op.create_index("ix_events_type_id", "events", ["type", "id"], unique=False)
    # No foreign key: SQLite could add one only by copying mailing_lists (AUTOINCREMENT since 0002), and
    # templates are never deleted; a default naming no template is read as the bundled one.
    op.add_column("mailing_lists", sa.Column("default_template_id", ID, nullable=True))
    op.create_table(
        "recovery_codes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_recovery_codes_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_recovery_codes_code_hash")),
    )
    op.create_index(op.f("ix_recovery_codes_user_id"), "recovery_codes", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_recovery_codes_user_id"), table_name="recovery_codes")
    op.drop_table("recovery_codes")
    with op.batch_alter_table("mailing_lists", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("default_template_id")
    op.drop_index("ix_events_type_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("name")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("deactivated_at")
        batch.drop_column("totp_last_step")
        batch.drop_column("totp_enabled_at")
        batch.drop_column("totp_secret")
    op.drop_index("ix_audit_log_action_at", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_at", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
