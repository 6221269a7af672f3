"""readers' languages: a list's default language and a subscriber's own

Revision ID: 0013
Revises: 0007
Create Date: 2026-12-01 16:30:00

`mailing_lists.language` is the language of a list's pages and of emails whose digest declares none;
`subscribers.language` is the reader's own choice (subscribe form, preferences page, import, API). Both
are NULL when nobody chose: pages then follow the browser's Accept-Language.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailing_lists") as batch:
        batch.add_column(sa.Column("language", sa.String(35), nullable=True))
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("language", sa.String(35), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("mailing_lists") as batch:
        batch.drop_column("language")
