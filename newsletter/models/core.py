"""The tables: lists, subscribers and their consent, digests, campaigns and the send-tracking ledger."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, BigID, JSONType, UTCDateTime, created_at, intpk, updated_at


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored by value as VARCHAR + CHECK: portable, readable in psql, and new values need no type migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


# Tables whose ids links and tokens carry (unsubscribe, preferences, confirm, tracking, Message-IDs, queued
# tasks): on SQLite their ids must never be reused, or a deleted subscriber's old link would act on the
# next row to get the id. SQLite reuses the highest rowid after a delete unless the table is AUTOINCREMENT;
# PostgreSQL's identity columns never go back. Migration 0002 rebuilds the tables of older databases.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def column_length(column: Any) -> int:
    """The length of a String column, so that validation refuses what the database would (one source)."""
    length = column.type.length
    assert isinstance(length, int), f"{column} has no length"
    return length


def email_domain(email: str) -> str:
    """The domain part of a normalised address (what the domain blocklist matches)."""
    return email.rpartition("@")[2]


def _email_domain_default(context: Any) -> str:
    return email_domain(context.get_current_parameters()["email"])


def email_hash(email: str) -> str:
    """The key suppressions are matched by, so an erased address stays suppressed without being stored."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class OptIn(enum.StrEnum):
    single = "single"
    double = "double"


class Visibility(enum.StrEnum):
    public = "public"
    private = "private"


class SubscriberStatus(enum.StrEnum):
    active = "active"
    blocklisted = "blocklisted"


class SubscriptionStatus(enum.StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    unsubscribed = "unsubscribed"


class SubscriptionSource(enum.StrEnum):
    form = "form"
    import_ = "import"
    api = "api"
    admin = "admin"


class CampaignStatus(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    sending = "sending"
    paused = "paused"
    finished = "finished"
    cancelled = "cancelled"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    unknown = "unknown"
    skipped = "skipped"


TERMINAL_DELIVERY_STATUSES = (
    DeliveryStatus.sent,
    DeliveryStatus.failed,
    DeliveryStatus.unknown,
    DeliveryStatus.skipped,
)


class EventType(enum.StrEnum):
    open = "open"
    click = "click"
    unsubscribe = "unsubscribe"
    bounce = "bounce"
    complaint = "complaint"
    confirm = "confirm"


class SuppressionReason(enum.StrEnum):
    hard_bounce = "hard_bounce"
    soft_bounce = "soft_bounce"  # SOFT_BOUNCE_LIMIT soft bounces within SOFT_BOUNCE_DAYS
    complaint = "complaint"
    manual = "manual"
    erased = "erased"


class Role(enum.StrEnum):
    admin = "admin"
    editor = "editor"


class MailingList(Base):
    __tablename__ = "mailing_lists"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    from_name: Mapped[str] = mapped_column(String(255), default="")
    from_email: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    opt_in: Mapped[OptIn] = mapped_column(_enum(OptIn, "opt_in"), default=OptIn.double)
    visibility: Mapped[Visibility] = mapped_column(_enum(Visibility, "visibility"), default=Visibility.public)
    postal_address: Mapped[str] = mapped_column(Text, default="")
    # Publication name, logo URL, accent colour: see rendering.Theme.
    theme: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tracking: Mapped[bool] = mapped_column(Boolean, default=True)
    # Extra attributes the subscribe form asks for, e.g. [{"name": "city", "label": "City"}].
    form_fields: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    cors_origins: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # The language of the list's pages and of emails whose digest declares none (None: the reader's browser)
    language: Mapped[str | None] = mapped_column(String(35))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
    # The uploaded digest template its campaigns use unless one is named (migration 0008); None: bundled.
    # Not a foreign key (SQLite could add one only by copying the table); templates are never deleted.
    default_template_id: Mapped[int | None] = mapped_column(BigID)
    # VERP (newsletter/verp.py, migration 0016): each message's return path names its delivery, made from
    # `verp_address` (bounces@domain), else from the installation's VERP_ADDRESS; `verp` False sends this
    # list's mail with the plain return path (its From) whatever VERP_ADDRESS says.
    verp: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    verp_address: Mapped[str | None] = mapped_column(String(320))

    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="mailing_list")


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        # addresses starting with what was typed (a campaign's recipients searched); text_pattern_ops lets
        # PostgreSQL use it for LIKE 'prefix%' whatever the database's collation
        Index("ix_subscribers_email_prefix", "email", postgresql_ops={"email": "text_pattern_ops"}),
        # the admin's search: names starting with what was typed, whatever the case; attribute = value
        # (`attributes @> '{"city": "Almaty"}'`) through a GIN index, on PostgreSQL where a million rows live
        Index(
            "ix_subscribers_name_prefix",
            func.lower(literal_column("name")).label("lower_name"),
            postgresql_ops={"lower_name": "text_pattern_ops"},
        ).ddl_if(dialect="postgresql"),
        # segments: attribute equals / exists are `attributes @> ...` / `?` on PostgreSQL, which a GIN index
        # serves; on SQLite (json_extract, no such index) it is an empty partial index, so both have one schema
        Index("ix_subscribers_attributes", "attributes", postgresql_using="gin", sqlite_where=text("0")),
        NEVER_REUSE_IDS,
    )

    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Stored (and indexed) so that "not in a blocked domain" is an index lookup, not a string function per row.
    email_domain: Mapped[str] = mapped_column(String(255), default=_email_domain_default, index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.active
    )
    # The reader's own language for pages and confirmation emails (None: the list's, else the browser's)
    language: Mapped[str | None] = mapped_column(String(35))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="subscriber", cascade="all, delete-orphan")


class Subscription(Base):
    """The consent record: who joined which list, how, when, from where, and how they left."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "list_id"),
        Index("ix_subscriptions_list_id_status", "list_id", "status"),
        # subscriber growth per day: a day's joins and unsubscribes from an index, not a pass over everyone
        Index("ix_subscriptions_confirmed_at", "confirmed_at"),
        Index(
            "ix_subscriptions_unsubscribed_at",
            "unsubscribed_at",
            postgresql_where=text("unsubscribed_at IS NOT NULL"),
            sqlite_where=text("unsubscribed_at IS NOT NULL"),
        ),
        NEVER_REUSE_IDS,
    )

    id: Mapped[intpk]
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum(SubscriptionStatus, "subscription_status"), default=SubscriptionStatus.pending
    )
    source: Mapped[SubscriptionSource] = mapped_column(
        _enum(SubscriptionSource, "subscription_source"), default=SubscriptionSource.form
    )
    consent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    consent_ip: Mapped[str | None] = mapped_column(String(45))
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    confirmation_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # one-click | page | admin | bounce | complaint | preferences | import
    unsubscribe_source: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    # Digest sections this subscriber wants; None means all.
    sections: Mapped[list[str] | None] = mapped_column(JSONType)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    mailing_list: Mapped[MailingList] = relationship(back_populates="subscriptions")


class CountedDay(Base):
    """One UTC day of subscriber growth as counted once (newsletter/growth.py): the people who joined and who
    left that day, and the PostgreSQL snapshot (`pg_current_snapshot()` as text) the count saw."""

    __tablename__ = "growth_days"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    joined: Mapped[int] = mapped_column(Integer)
    unsubscribed: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[str] = mapped_column(Text)
    counted_by: Mapped[int] = mapped_column(BigID)  # the transaction that counted it


class GrowthChange(Base):
    """A transaction (`xid`, its PostgreSQL transaction id) changed the joins or unsubscribes of `day`:
    written by triggers on `subscriptions` (migration 0015); a counted day is stale once a change its
    snapshot did not see is visible."""

    __tablename__ = "growth_changes"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    xid: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=False)


class Digest(Base):
    """An issue: a draft, editable until a campaign uses it, then frozen so what was sent can be shown again.

    Frozen is not a column: it is "some campaign refers to this row" (see `digests.campaigns_using`).
    """

    __tablename__ = "digests"

    id: Mapped[intpk]
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    date: Mapped[dt.date] = mapped_column(Date, index=True)
    language: Mapped[str | None] = mapped_column(String(35))
    intro: Mapped[str | None] = mapped_column(Text)
    preheader: Mapped[str | None] = mapped_column(String(255))  # the inbox snippet; None: from the intro
    content_hash: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    items: Mapped[list[DigestItem]] = relationship(
        back_populates="digest", order_by="DigestItem.position", cascade="all, delete-orphan"
    )


class DigestItem(Base):
    __tablename__ = "digest_items"
    __table_args__ = (UniqueConstraint("digest_id", "position"),)

    id: Mapped[intpk]
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    headline: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    date: Mapped[dt.date | None] = mapped_column(Date)
    section: Mapped[str | None] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str | None] = mapped_column(Text)
    image_alt: Mapped[str | None] = mapped_column(String(500))

    digest: Mapped[Digest] = relationship(back_populates="items")


class Template(Base):
    """An editor-supplied digest template, rendered in Jinja2's sandbox."""

    __tablename__ = "templates"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(100), unique=True)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


campaign_lists = Table(
    "campaign_lists",
    Base.metadata,
    Column("campaign_id", ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("list_id", ForeignKey("mailing_lists.id", ondelete="RESTRICT"), primary_key=True),
)


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status_scheduled_at", "status", "scheduled_at"), NEVER_REUSE_IDS)

    id: Mapped[intpk]
    # None for a sequence step's long-lived campaign (see SequenceStep), which sends no digest.
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("digests.id", ondelete="RESTRICT"), index=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    subject: Mapped[str] = mapped_column(String(500))
    status: Mapped[CampaignStatus] = mapped_column(
        _enum(CampaignStatus, "campaign_status"), default=CampaignStatus.draft
    )
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    planned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Rendered once when the campaign is planned; per recipient only placeholders are substituted.
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    recipient_count: Mapped[int] = mapped_column(Integer, default=0)
    pause_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
    # The audience is the lists' eligible subscribers that match this filter (a copy of the segment's filter
    # as it was when the campaign was created, or a resend's "received campaign N, did not open it").
    # No foreign key: SQLite adds one only by rebuilding `campaigns` (migration 0002's way); deleting a
    # segment sets this to NULL (segments.delete), the filter stays.
    segment_id: Mapped[int | None] = mapped_column(BigID)
    segment_filter: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    digest: Mapped[Digest] = relationship()  # absent (None) only on a sequence step's campaign
    lists: Mapped[list[MailingList]] = relationship(secondary=campaign_lists, order_by=MailingList.id)
    links: Mapped[list[Link]] = relationship(order_by="Link.position", cascade="all, delete-orphan")


class Delivery(Base):
    """The send-tracking ledger: one row per (campaign, subscriber), the single source of truth."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        # The recipient's list is one of the campaign's lists. One foreign key check per planned row instead
        # of one to campaigns and one to mailing_lists; deleting the campaign still deletes its ledger.
        ForeignKeyConstraint(
            ["campaign_id", "list_id"],
            ["campaign_lists.campaign_id", "campaign_lists.list_id"],
            ondelete="CASCADE",
        ),
        # claim: due pending rows of one campaign by id range; stats: counts per status.
        Index("ix_deliveries_campaign_id_status_id", "campaign_id", "status", "id"),
        # progress: the latest reason a row waits for a retry, without reading every pending row.
        Index(
            "ix_deliveries_retry_at",
            "campaign_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
        ),
        # sweep: rows stuck in sending past their lease.
        Index(
            "ix_deliveries_sending_claimed_at",
            "claimed_at",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        NEVER_REUSE_IDS,
    )

    id: Mapped[intpk]
    campaign_id: Mapped[int] = mapped_column(BigID)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    # The list whose subscription put this recipient in the campaign (footer, unsubscribe scope).
    list_id: Mapped[int] = mapped_column(BigID)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.pending
    )
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    message_id: Mapped[str | None] = mapped_column(String(255))
    # The id the relay gave the message ("250 Ok: queued as <id>"): what providers' webhooks name it by.
    provider_message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    smtp_code: Mapped[int | None] = mapped_column(SmallInteger)
    smtp_text: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[created_at]


class CampaignCount(Base):
    """A campaign's ledger rows per status, kept by triggers on `deliveries` (migration 0006) in the same
    transaction as every change, so reading where a campaign stands costs a few rows, not a scan.

    A row holds a delta: the true count of a status is the sum over `tick` and `shard`. `shard` is the
    PostgreSQL backend (connection) that wrote it, so workers never wait on each other's counter rows
    (0 on SQLite, which has one writer, and for rows the sweep compacted). `tick` is 0 except for `sent`,
    counted per TICK_SECONDS of `sent_at`, which gives the recent send rate. The pseudo-status `resent`
    counts sent rows that may have arrived twice (sent again after a worker died, UNKNOWN_POLICY=resend).
    """

    __tablename__ = "campaign_counts"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    tick: Mapped[int] = mapped_column(BigID, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigID)
    last_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Link(Base):
    """A URL a campaign links to; click tracking redirects only to these."""

    __tablename__ = "links"
    __table_args__ = (UniqueConstraint("campaign_id", "position"), NEVER_REUSE_IDS)

    id: Mapped[intpk]
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_campaign_id_type_id", "campaign_id", "type", "id"),
        Index("ix_events_delivery_id_type", "delivery_id", "type"),
        Index("ix_events_type_id", "type", "id"),  # the bounces page: the newest reports of a kind (0008)
    )

    id: Mapped[intpk]
    type: Mapped[EventType] = mapped_column(_enum(EventType, "event_type"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    list_id: Mapped[int | None] = mapped_column(ForeignKey("mailing_lists.id", ondelete="SET NULL"))
    link_id: Mapped[int | None] = mapped_column(ForeignKey("links.id", ondelete="SET NULL"))
    url: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    # Where a bounce or complaint came from: "mail" (a report sent to the bounce address) or the provider
    # whose webhook told us ("ses", "sendgrid", ...); None before migration 0008 and for other events.
    source: Mapped[str | None] = mapped_column(String(16))
    # bounces: hard, soft, or soft_suppressed (the soft bounce that reached the threshold); else None
    bounce_class: Mapped[str | None] = mapped_column(String(16))


class Suppression(Base):
    """Addresses that are never mailed. Matched by hash so erased addresses need not be kept."""

    __tablename__ = "suppressions"

    id: Mapped[intpk]
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[SuppressionReason] = mapped_column(_enum(SuppressionReason, "suppression_reason"))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]


class BlockedDomain(Base):
    """A whole mail domain that is never subscribed nor mailed (throwaway-address services, say)."""

    __tablename__ = "blocked_domains"

    id: Mapped[intpk]
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]


# --- engagement counters (migration 0014) -----------------------------------------------------------------


class EventCount(Base):
    """A campaign's events per kind, hour and link, kept by triggers on `events` (migration 0014) in the
    transaction of every change, so a report reads a few hundred rows, not every event.

    A row holds deltas, summed over `shard` (the PostgreSQL connection that wrote it; 0 on SQLite and once
    the sweep folded it). `n` counts events in the hour `hour` (Unix time // 3600) for link `link_id` (0:
    none); `people` (rows with hour 0) counts the deliveries that had the kind at least once, overall
    (link 0) and, for clicks, per link. Kinds: the event types, and `soft_bounce` / `soft_suppressed`.
    """

    __tablename__ = "event_counts"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    hour: Mapped[int] = mapped_column(BigID, primary_key=True)
    link_id: Mapped[int] = mapped_column(BigID, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigID)
    people: Mapped[int] = mapped_column(BigID)


class EventFirst(Base):
    """One row per delivery that had a kind of event (open, click) at all, and per link clicked: what makes
    the unique counts of `EventCount.people` exact (written by the events trigger, ON CONFLICT DO NOTHING)."""

    __tablename__ = "event_firsts"

    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    link_id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
