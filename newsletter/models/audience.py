"""Who a message goes to beyond a list: saved segments, and the welcome and follow-up sequences."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, JSONType, UTCDateTime, created_at, intpk, updated_at
from newsletter.import_tables import ImportJob as ImportJob  # the import wizard's table, in its own module
from newsletter.import_tables import ImportStatus as ImportStatus
from newsletter.models.core import (
    NEVER_REUSE_IDS,
    Campaign,
    MailingList,
)


class Segment(Base):
    """A saved, named filter over subscribers (newsletter/segments/): validated JSON, never SQL."""

    __tablename__ = "segments"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    filter: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_by: Mapped[str | None] = mapped_column(String(255))
    updated_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


# --- sequences (welcome and follow-up emails) ---------------------------------------------------------------


def digest_campaigns() -> Any:
    """The campaigns that send a digest: every campaign but the long-lived ones of sequence steps."""
    return Campaign.digest_id.is_not(None)


class EmailSequence(Base):
    """A list's welcome and follow-up emails. Sent to subscribers confirmed while it is on (since `enabled_at`,
    the latest time it was turned on), never retroactively to the whole list."""

    __tablename__ = "sequences"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[intpk]
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    mailing_list: Mapped[MailingList] = relationship()
    steps: Mapped[list[SequenceStep]] = relationship(
        back_populates="sequence", order_by="SequenceStep.position", cascade="all, delete-orphan"
    )


class SequenceStep(Base):
    """One email of a sequence, sent `delay_hours` after the previous step (the first: after confirmation).

    It owns a campaign row for its whole life: the step's ledger rows (one per subscriber, unique) go through
    the campaign pipeline, and the campaign's pre-rendered HTML/text is the step's current content."""

    __tablename__ = "sequence_steps"
    __table_args__ = (UniqueConstraint("sequence_id", "position"), NEVER_REUSE_IDS)

    id: Mapped[intpk]
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    delay_hours: Mapped[int] = mapped_column(Integer, default=0)
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)  # Markdown
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="RESTRICT"), unique=True)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    sequence: Mapped[EmailSequence] = relationship(back_populates="steps")
    campaign: Mapped[Campaign] = relationship()
