"""outgoing webhooks: the outbox, endpoints and their delivery log

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-01 16:30:00

`outbox_events` holds what happened (a subscriber confirmed, a campaign finished), written in the same
transaction as the change; the dispatcher fans each event out to the `webhook_endpoints` subscribed to its
type after commit, one `webhook_deliveries` row per attempt.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_STATUSES = ("pending", "sending", "succeeded", "failed", "exhausted")


def _when(condition: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_events_undispatched", "outbox_events", ["id"], **_when("dispatched_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_outbox_events_undispatched", table_name="outbox_events")
    op.drop_table("outbox_events")
