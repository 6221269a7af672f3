"""import jobs of the admin's wizard; indexes for the admin's subscriber search

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:30:00

`import_jobs` holds each CSV import run from /admin/imports: the uploaded file, the choices, its progress
and its report, so past imports and their bad lines can be looked at again. On PostgreSQL two indexes
keep the subscriber search fast on a million rows: names by prefix whatever the case, and attribute =
value through a GIN index (`attributes @> '{"city": "Almaty"}'`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_STATUSES = ("uploaded", "queued", "running", "finished", "failed")


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("list_id", _ID, nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("size", _ID, nullable=False),
        sa.Column("delimiter", sa.String(length=1), nullable=False),
        sa.Column("columns", _JSON, nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("update_existing", sa.Boolean(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*_STATUSES, name="import_status", native_enum=False, create_constraint=True, length=32),
            nullable=False,
        ),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("bytes_done", _ID, nullable=False),
        sa.Column("report", _JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["list_id"], ["mailing_lists.id"], name=op.f("fk_import_jobs_list_id_mailing_lists"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
    )
    op.create_index(op.f("ix_import_jobs_list_id"), "import_jobs", ["list_id"], unique=False)
    op.create_index(
        "ix_subscribers_attributes",
        "subscribers",
        ["attributes"],
        postgresql_using="gin",
        sqlite_where=sa.text("0"),  # attribute search and segments: `@>` and `?` on PostgreSQL; none on SQLite
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_subscribers_name_prefix",
            "subscribers",
            [sa.func.lower(sa.literal_column("name")).label("lower_name")],
            postgresql_ops={"lower_name": "text_pattern_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_subscribers_name_prefix", table_name="subscribers")
    op.drop_index("ix_subscribers_attributes", table_name="subscribers")
    op.drop_index(op.f("ix_import_jobs_list_id"), table_name="import_jobs")
    op.drop_table("import_jobs")
