"""provider message ids, soft-bounce suppressions, webhook nonces

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:00:00

`deliveries.provider_message_id` keeps the id a relay answered with ("250 Ok: queued as <id>"), which is
what SES, SendGrid, Postmark and Mailgun name a message by in their webhooks. The suppression reason
`soft_bounce` marks an address that bounced softly too often. `webhook_nonces` remembers the one-time
tokens of signed webhooks (Mailgun) when there is no Redis, so a captured request cannot be replayed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_REASONS = ("hard_bounce", "complaint", "manual", "erased")
_NEW_REASONS = ("hard_bounce", "soft_bounce", "complaint", "manual", "erased")


def _reasons(values: Sequence[str]) -> sa.Enum:
    return sa.Enum(*values, name="suppression_reason", native_enum=False, create_constraint=True, length=32)


def _allow_reasons(old: Sequence[str], new: Sequence[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_suppressions_suppression_reason"), "suppressions", type_="check")
        check = "reason IN (" + ", ".join(f"'{value}'" for value in new) + ")"
        op.create_check_constraint(op.f("ck_suppressions_suppression_reason"), "suppressions", check)
        return
    # SQLite cannot change a CHECK in place: the (small) table is copied with the new one.
    with op.batch_alter_table("suppressions") as batch:
        batch.alter_column("reason", type_=_reasons(new), existing_type=_reasons(old), existing_nullable=False)


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch copy: on SQLite `deliveries` was rebuilt AUTOINCREMENT by 0002.
    op.add_column("deliveries", sa.Column("provider_message_id", sa.String(length=255), nullable=True))
    op.create_index(op.f("ix_deliveries_provider_message_id"), "deliveries", ["provider_message_id"], unique=False)
    _allow_reasons(_OLD_REASONS, _NEW_REASONS)
    op.create_table(
        "webhook_nonces",
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "token_hash", name=op.f("pk_webhook_nonces")),
    )
    op.create_index(op.f("ix_webhook_nonces_seen_at"), "webhook_nonces", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_nonces_seen_at"), table_name="webhook_nonces")
    op.drop_table("webhook_nonces")
    op.execute("DELETE FROM suppressions WHERE reason = 'soft_bounce'")
    _allow_reasons(_NEW_REASONS, _OLD_REASONS)
    op.drop_index(op.f("ix_deliveries_provider_message_id"), table_name="deliveries")
    op.drop_column("deliveries", "provider_message_id")
