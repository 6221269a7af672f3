"""the inbox of verified provider webhook events; VERP per list

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-01 20:00:00

`provider_inbox` holds each bounce, complaint and delivery a provider reported, accepted by the webhook in
one INSERT (unique per provider event, so a provider's retry is a duplicate) and applied to the ledger in
batches afterwards. `mailing_lists.verp` / `.verp_address`: whether a list's messages carry a per-delivery
return path, and from which address (NULL: the installation's VERP_ADDRESS).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
_UNPROCESSED = "processed_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "provider_inbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("event_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("delivery_id", _ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_inbox")),
        sa.UniqueConstraint("provider", "event_key", name=op.f("uq_provider_inbox_provider_event_key")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_provider_inbox_unprocessed",
        "provider_inbox",
        ["id"],
        postgresql_where=sa.text(_UNPROCESSED),
        sqlite_where=sa.text(_UNPROCESSED),
    )
    op.create_index(op.f("ix_provider_inbox_processed_at"), "provider_inbox", ["processed_at"])
    op.add_column("mailing_lists", sa.Column("verp", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("mailing_lists", sa.Column("verp_address", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailing_lists") as batch:
        batch.drop_column("verp_address")
        batch.drop_column("verp")
    op.drop_index(op.f("ix_provider_inbox_processed_at"), table_name="provider_inbox")
    op.drop_index("ix_provider_inbox_unprocessed", table_name="provider_inbox")
    op.drop_table("provider_inbox")
