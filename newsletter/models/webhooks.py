"""Outgoing webhooks: the outbox of events, the endpoints admins register, and each delivery attempt."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, BigID, JSONType, UTCDateTime, created_at, intpk, updated_at
from newsletter.import_tables import ImportJob as ImportJob  # the import wizard's table, in its own module
from newsletter.import_tables import ImportStatus as ImportStatus
from newsletter.models.core import (
    NEVER_REUSE_IDS,
    _enum,
)

# --- Outgoing webhooks (issue 16): the outbox, endpoints and their delivery log ---------------------------


def _partial_index(name: str, column: str, where: str) -> Index:
    return Index(name, column, postgresql_where=text(where), sqlite_where=text(where))


class OutboxEvent(Base):
    """Something that happened, written in the same transaction as the change (newsletter/outbox.py) and
    fanned out to webhook endpoints after commit: a rolled-back change leaves no event, a crash loses none."""

    __tablename__ = "outbox_events"
    __table_args__ = (_partial_index("ix_outbox_events_undispatched", "id", "dispatched_at IS NULL"), NEVER_REUSE_IDS)

    id: Mapped[intpk]
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[created_at]
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class WebhookDeliveryStatus(enum.StrEnum):
    pending = "pending"  # due at next_attempt_at
    sending = "sending"  # claimed by a dispatcher at claimed_at; the sweep gives it back if that one died
    succeeded = "succeeded"  # the endpoint answered 2xx
    failed = "failed"  # this attempt failed; the next attempt is its own row
    exhausted = "exhausted"  # failed, and retrying stopped (a day of failures, or the endpoint was disabled)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[intpk]
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(255), default="")
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)  # outbox.EVENT_TYPES it receives
    secret: Mapped[str] = mapped_column(String(128))  # `whsec_` + base64 of the key (Standard Webhooks)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class WebhookDelivery(Base):
    """One attempt to deliver one event to one endpoint: the endpoint's delivery log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", "attempt"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        _partial_index("ix_webhook_deliveries_due", "next_attempt_at", "status = 'pending'"),
        _partial_index("ix_webhook_deliveries_sending", "claimed_at", "status = 'sending'"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[intpk]
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[WebhookDeliveryStatus] = mapped_column(
        _enum(WebhookDeliveryStatus, "webhook_delivery_status"), default=WebhookDeliveryStatus.pending
    )
    response_code: Mapped[int | None] = mapped_column(SmallInteger)
    response_excerpt: Mapped[str | None] = mapped_column(Text)  # the start of the answer, for the log
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())  # when it was (last) sent
    manual: Mapped[bool] = mapped_column(Boolean, default=False)  # a redelivery: one attempt, no retries
    created_at: Mapped[created_at]

    endpoint: Mapped[WebhookEndpoint] = relationship(lazy="joined")
    event: Mapped[OutboxEvent] = relationship()


# --- Provider webhooks (issue 15): the inbox of verified events -------------------------------------------


class ProviderInboxEvent(Base):
    """A bounce, complaint or delivery a provider reported by webhook, verified and accepted by the web app
    in one INSERT before its 200 (newsletter/providers/inbox.py); its effects on the ledger are applied in
    batches after that (`processed_at` set in the same transaction as the effects). One row per provider
    event: a provider's retry of the same event is a duplicate, not a second bounce."""

    __tablename__ = "provider_inbox"
    __table_args__ = (
        UniqueConstraint("provider", "event_key"),
        _partial_index("ix_provider_inbox_unprocessed", "id", "processed_at IS NULL"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[intpk]
    provider: Mapped[str] = mapped_column(String(16))  # ses, sendgrid, postmark, mailgun
    # sha256 of the provider's own id of the event (SNS MessageId + recipient, sg_event_id, Mailgun's id,
    # Postmark's record id), or of the event itself when it has none
    event_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # hard_bounce, soft_bounce, complaint, delivered
    recipient: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[created_at]
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    # what it did, once processed (bounces.Outcome): suppressed, recorded, already recorded, ignored
    result: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    delivery_id: Mapped[int | None] = mapped_column(BigID)  # not a foreign key: a campaign may be deleted
