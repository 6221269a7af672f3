"""segments (saved filters over subscribers), a campaign's segment, a GIN index on subscriber attributes

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-01 16:40:00

`segments` holds named filters in the JSON language of newsletter/segments/filters.py (never SQL).
`campaigns.segment_id` names the segment (no foreign key, see models.Campaign) a campaign was sent to and `campaigns.segment_filter` keeps the
filter as it was then (the segment may change or go later). On PostgreSQL, a GIN index on
`subscribers.attributes` serves the segments' `attributes @> '{"city": "Almaty"}'` and `attributes ? 'x'`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("filter", _JSON, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("updated_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    # no foreign key: SQLite adds one only by rebuilding `campaigns` (0002); segments.delete sets it NULL
    op.add_column(
        "campaigns", sa.Column("segment_id", sa.BigInteger().with_variant(sa.INTEGER(), "sqlite"), nullable=True)
    )
    op.add_column("campaigns", sa.Column("segment_filter", _JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("campaigns", "segment_filter")
    op.drop_column("campaigns", "segment_id")
    op.drop_table("segments")
