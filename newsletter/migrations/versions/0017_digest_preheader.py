"""a digest's own preheader: the inbox snippet, instead of the intro's first words

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-01 20:00:00

`digests.preheader` is one line of plain text that mail clients show after the subject in the inbox.
NULL (every digest stored before) keeps the snippet made from the intro, else the first headlines.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("digests") as batch:
        batch.add_column(sa.Column("preheader", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("digests") as batch:
        batch.drop_column("preheader")
