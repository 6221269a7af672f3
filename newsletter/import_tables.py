"""The import wizard's table, `import_jobs` (newsletter/import_jobs.py): in a module of its own beside
models.py, which imports it so that `newsletter.models` still names every table."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, BigID, JSONType, UTCDateTime, created_at, intpk

__all__ = ["ImportJob", "ImportStatus"]


class ImportStatus(enum.StrEnum):
    uploaded = "uploaded"  # the file is stored and previewed; list and options not chosen yet
    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"


class ImportJob(Base):
    """One CSV import run through the admin's wizard: the uploaded file, the choices, progress, the report."""

    __tablename__ = "import_jobs"

    id: Mapped[intpk]
    list_id: Mapped[int | None] = mapped_column(ForeignKey("mailing_lists.id", ondelete="SET NULL"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str | None] = mapped_column(Text)  # the stored upload; None once the import is done with it
    size: Mapped[int] = mapped_column(BigID, default=0)
    delimiter: Mapped[str] = mapped_column(String(1), default=",")
    columns: Mapped[list[str]] = mapped_column(JSONType, default=list)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    update_existing: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[ImportStatus] = mapped_column(
        Enum(
            ImportStatus,
            name="import_status",
            native_enum=False,
            create_constraint=True,
            length=32,
            values_callable=lambda members: [m.value for m in members],
            validate_strings=True,
        ),
        default=ImportStatus.uploaded,
    )  # stored by value, as models._enum does
    stage: Mapped[str] = mapped_column(String(32), default="")
    bytes_done: Mapped[int] = mapped_column(BigID, default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[created_at]
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # refreshed while the import runs (PostgreSQL): the sweep fails a running job whose process went quiet
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
