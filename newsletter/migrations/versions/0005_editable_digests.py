"""editable digest drafts: language and updated_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 14:00:00

A digest stays an editable draft until a campaign uses it, so it gets `updated_at` (when the draft last
changed; existing rows start at their publication time) and the optional `language` of DESIGN §5's format.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("digests", sa.Column("language", sa.String(length=35), nullable=True))
    # SQLite adds a NOT NULL column only with a constant default, and rebuilding `digests` there would
    # cascade to its items: the placeholder default is overwritten at once and never read.
    op.add_column(
        "digests",
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default="1970-01-01 00:00:00.000000"
        ),
    )
    op.execute("UPDATE digests SET updated_at = published_at")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("digests", "updated_at", server_default=None)


def downgrade() -> None:
    op.drop_column("digests", "updated_at")
    op.drop_column("digests", "language")
