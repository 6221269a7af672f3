"""Alembic environment: runs migrations on the connection or URL handed over by newsletter.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from newsletter import models  # noqa: F401 - registers every table on Base.metadata
from newsletter.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with make_engine(config.get_main_option("sqlalchemy.url") or "").connect() as conn:
        run(conn)
        conn.commit()
