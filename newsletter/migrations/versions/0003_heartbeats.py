"""scheduler heartbeats

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:20:00

`heartbeats` holds one row per scheduler: when Celery beat's sweep last ran (so `campaigns send --at` can
warn that nothing will start the campaign), and which `newsletter serve` process starts due campaigns in
embedded mode (so several `--workers` elect one).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("heartbeats")
