"""import_jobs.heartbeat_at: when the process running an import last showed it was alive

Revision ID: 0018
Revises: 0014
Create Date: 2026-12-01 20:10:00

An import whose process died (a restart, the OOM killer) stayed `running` for ever. The running import
refreshes `heartbeat_at` every few seconds (PostgreSQL); the sweep marks a running job whose heartbeat
(or start, when it has none) is older than NEWSLETTER_IMPORT_STALE_SECONDS as failed, with the reason.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("heartbeat_at")
