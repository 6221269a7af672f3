"""Request and response bodies of the admin API (the database models stay in newsletter/models.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from newsletter.addresses import NAME_LENGTH
from newsletter.models import (
    BlockedDomain,
    CampaignStatus,
    DeliveryStatus,
    EventType,
    MailingList,
    OptIn,
    Role,
    Subscriber,
    SubscriberStatus,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Visibility,
    column_length,
)

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"
# PostgreSQL cannot store a NUL character: a body holding one is refused with a 422 that names the field.
NO_NUL = r"^[^\x00]*$"
EMAIL_LENGTH = column_length(Subscriber.email)
Scalar = str | int | float | bool | None
NulFree = Annotated[str, StringConstraints(pattern=NO_NUL)]  # a list item: refused with a 422 like a field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def row_fields(row: object, model: type[BaseModel], *, exclude: set[str] | None = None) -> dict[str, Any]:
    """The attributes of a database row that `model` has fields of the same name for, but those excluded."""
    return {name: getattr(row, name) for name in model.model_fields if not exclude or name not in exclude}


# --- users ------------------------------------------------------------------------------------------------


class UserIn(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
    role: Role


class TokenOut(BaseModel):
    prefix: str
    purpose: str | None = Field(None, description="What the token is for, as given when it was made.")
    created_at: dt.datetime
    last_used_at: dt.datetime | None


class UserOut(BaseModel):
    name: str
    role: Role
    created_at: dt.datetime
    tokens: list[TokenOut]
    deactivated_at: dt.datetime | None = Field(None, description="Set: no sign-in, every token refused.")
    two_factor: bool = Field(False, description="Signs in to the admin with a TOTP code after the password.")


class IssuedTokenOut(BaseModel):
    name: str
    role: Role
    token: str = Field(description="Shown once: only its hash is stored.")
    prefix: str


class Revoked(BaseModel):
    revoked: int


class RoleIn(Strict):
    role: Role


class TokenIn(Strict):
    purpose: str = Field(
        min_length=1, max_length=100, pattern=NO_NUL, description="What the token is for: 'newsroom CMS'."
    )


class Deactivated(BaseModel):
    name: str
    deactivated: bool
    sessions_ended: int = 0


class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    actor_kind: str = Field(description="user (an admin page), token (the API), cli or system.")
    action: str
    target: str | None
    details: dict[str, Any]
    ip: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; null at the end.")


# --- lists ------------------------------------------------------------------------------------------------


class ThemeIn(Strict):
    publication_name: str | None = Field(None, max_length=255, pattern=NO_NUL)
    logo_url: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    accent_color: str | None = Field(None, max_length=7, pattern=NO_NUL)
    postal_address: str | None = Field(None, max_length=1000, pattern=NO_NUL)


DEFAULT_TEMPLATE_HELP = (
    "The name of an uploaded template (`newsletter templates list`, /admin/templates) that the list's campaigns "
    "use unless a send names another; null or an empty string: the bundled template. An unknown name is a 404."
)
LANGUAGE_HELP = "The language of the list's pages and of emails whose digest has none (en, ru, kk, …)."


class ListIn(Strict):
    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=column_length(MailingList.name), pattern=NO_NUL)
    from_email: str = Field(max_length=column_length(MailingList.from_email), pattern=NO_NUL)
    from_name: str = Field("", max_length=column_length(MailingList.from_name), pattern=NO_NUL)
    reply_to: str | None = Field(None, max_length=column_length(MailingList.reply_to), pattern=NO_NUL)
    description: str = Field("", max_length=10_000, pattern=NO_NUL)
    opt_in: OptIn = OptIn.double
    visibility: Visibility = Visibility.public
    postal_address: str = Field("", max_length=1000, pattern=NO_NUL)
    tracking: bool | None = Field(None, description="Open/click tracking; default: NEWSLETTER_TRACK_DEFAULT.")
    theme: ThemeIn | None = None
    language: str | None = Field(None, max_length=35, pattern=NO_NUL, description=LANGUAGE_HELP)


class FormFieldIn(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    label: str = Field("", max_length=100, pattern=NO_NUL)
    required: bool = False


class ListPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=255, pattern=NO_NUL)
    from_email: str | None = Field(None, max_length=320, pattern=NO_NUL)
    from_name: str | None = Field(None, max_length=255, pattern=NO_NUL)
    reply_to: str | None = Field(None, max_length=320, pattern=NO_NUL, description="An empty string clears it.")
    description: str | None = Field(None, max_length=10_000, pattern=NO_NUL)
    opt_in: OptIn | None = None
    visibility: Visibility | None = None
    postal_address: str | None = Field(None, max_length=1000, pattern=NO_NUL)
    tracking: bool | None = None
    theme: ThemeIn | None = Field(None, description="Replaces the whole theme.")
    cors_origins: list[NulFree] | None = Field(
        None, max_length=50, description="Sites that may post the subscribe form (`https://example.org`, or `*`)."
    )
    form_fields: list[FormFieldIn] | None = Field(
        None, max_length=20, description="The subscribe form's extra fields, stored as attributes."
    )
    language: str | None = Field(
        None, max_length=35, pattern=NO_NUL, description=LANGUAGE_HELP + " An empty string clears it."
    )
    verp: bool | None = Field(
        None, description="Send each message with its own return path (VERP), so a bounce quoting nothing is matched."
    )
    verp_address: str | None = Field(
        None,
        max_length=320,
        pattern=NO_NUL,
        description="The address those return paths are made from (bounces@news.example.org: bounces+TOKEN@...); "
        "an empty string clears it, and the installation's NEWSLETTER_VERP_ADDRESS applies.",
    )
    default_template: str | None = Field(None, max_length=100, pattern=NO_NUL, description=DEFAULT_TEMPLATE_HELP)


class Counts(BaseModel):
    confirmed: int
    pending: int
    unsubscribed: int


class ListOut(BaseModel):
    id: int
    slug: str
    name: str
    description: str
    from_email: str
    from_name: str
    reply_to: str | None
    opt_in: OptIn
    visibility: Visibility
    postal_address: str
    tracking: bool
    theme: dict[str, Any]
    cors_origins: list[str]
    form_fields: list[dict[str, Any]]
    language: str | None
    verp: bool = Field(description="Whether the list's messages carry a per-delivery return path (VERP).")
    verp_address: str | None = Field(description="Its own VERP address; None: NEWSLETTER_VERP_ADDRESS's.")
    default_template: str | None = Field(description="The template its campaigns use; null: the bundled one.")
    counts: Counts
    created_at: dt.datetime


# --- subscribers ------------------------------------------------------------------------------------------


class SubscriptionOut(BaseModel):
    list: str
    status: SubscriptionStatus
    source: str
    consent_at: dt.datetime | None
    confirmed_at: dt.datetime | None
    unsubscribed_at: dt.datetime | None


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    attributes: dict[str, Any]
    language: str | None
    status: SubscriberStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    subscriptions: list[SubscriptionOut]


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    next_cursor: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class SubscriberIn(Strict):
    email: str = Field(max_length=EMAIL_LENGTH, pattern=NO_NUL)
    name: str = Field("", max_length=NAME_LENGTH, pattern=NO_NUL)
    attributes: dict[str, Scalar] = Field(default_factory=dict)  # NUL: refused by subscribers.py, named
    lists: list[NulFree] = Field(default_factory=list, max_length=100)
    language: str | None = Field(
        None, max_length=35, pattern=NO_NUL, description="The reader's language (en, ru, kk, …)."
    )
    confirmed: bool = Field(
        False,
        description="Consent was obtained elsewhere: no confirmation email. Otherwise a subscription to a "
        "double opt-in list stays pending and the confirmation email is sent.",
    )


class SubscriberPatch(Strict):
    name: str | None = Field(None, max_length=NAME_LENGTH, pattern=NO_NUL)
    attributes: dict[str, Scalar] | None = Field(None, description="Merged in; a null value deletes a key.")
    replace_attributes: bool = False
    blocked: bool | None = None
    language: str | None = Field(
        None, max_length=35, pattern=NO_NUL, description="The reader's language; an empty string clears it."
    )


class UnsubscribeIn(Strict):
    lists: list[NulFree] = Field(default_factory=list, max_length=100, description="Empty: every list.")


class Unsubscribed(BaseModel):
    unsubscribed: int


class ImportErrorOut(BaseModel):
    line: int
    reason: str


class ImportReportOut(BaseModel):
    imported: int
    updated: int
    skipped: int
    errors: list[ImportErrorOut]
    error_count: int
    skipped_reasons: dict[str, int]
    rows: int
    pending_confirmation: int
    confirmation_emails_queued: bool


# --- digests ----------------------------------------------------------------------------------------------


class DigestItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    headline: str
    source: str
    url: str
    date: dt.date | None
    section: str | None
    summary: str
    image: str | None
    image_alt: str | None


class DigestSummary(BaseModel):
    slug: str
    title: str
    date: dt.date
    published_at: dt.datetime
    updated_at: dt.datetime
    status: Literal["draft", "ready", "scheduled", "sending", "sent", "cancelled"] = Field(
        description="draft: no campaign yet (editable); otherwise the furthest any of its campaigns got."
    )
    items: int


class DigestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    title: str
    date: dt.date
    language: str | None
    intro: str | None
    preheader: str | None = Field(description="The inbox snippet; null: made from the intro when rendered.")
    published_at: dt.datetime = Field(description="When the digest was first stored.")
    updated_at: dt.datetime = Field(description="When the draft last changed.")
    frozen: bool = Field(description="A campaign uses it: it can no longer change (duplicate it to edit).")
    campaigns: list[int] = Field(description="Ids of the campaigns that use it, oldest first.")
    items: list[DigestItemOut]


class DuplicateIn(Strict):
    slug: str | None = Field(None, pattern=SLUG_PATTERN, description="The copy's slug; default SLUG-copy.")


class Published(BaseModel):
    slug: str
    created: bool


# --- campaigns --------------------------------------------------------------------------------------------


class CampaignIn(Strict):
    digest: str = Field(pattern=SLUG_PATTERN)
    lists: list[NulFree] = Field(min_length=1, max_length=100)
    at: dt.datetime | None = Field(None, description="ISO 8601 with timezone; omitted: send now.")
    subject: str | None = Field(None, max_length=500, pattern=NO_NUL)
    again: bool = Field(False, description="Send even if a list already got this digest.")
    template: str | None = Field(
        None, max_length=100, pattern=NO_NUL, description="An uploaded template's name; omitted: the bundled template."
    )
    segment: str | None = Field(
        None,
        max_length=100,
        pattern=NO_NUL,
        description="A segment's name: only the lists' subscribers in it (see /segments).",
    )


class NonOpenersIn(Strict):
    subject: str | None = Field(
        None, max_length=500, pattern=NO_NUL, description="A new subject; omitted: the first one's."
    )
    at: dt.datetime | None = Field(None, description="ISO 8601 with timezone; omitted: send now.")


class TestSendIn(Strict):
    digest: str = Field(pattern=SLUG_PATTERN)
    to: str = Field(min_length=3, max_length=320, pattern=NO_NUL, description="Where the test message goes.")
    list: str | None = Field(None, pattern=SLUG_PATTERN, description="Render for this list (default: the first).")


class TestSent(BaseModel):
    to: str
    subject: str
    smtp_code: int
    smtp_text: str


class CampaignState(BaseModel):
    id: int
    status: CampaignStatus


class DeliveryCounts(BaseModel):
    pending: int
    sending: int
    sent: int
    failed: int
    unknown: int
    skipped: int


class LinkStats(BaseModel):
    url: str
    clicks: int
    unique_clicks: int


class CampaignReport(BaseModel):
    id: int
    status: CampaignStatus
    subject: str
    digest: str | None = Field(description="null for a sequence step's campaign (see /sequences)")
    lists: list[str]
    scheduled_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    pause_reason: str | None
    recipients: int
    counts: DeliveryCounts
    opens: int
    unique_opens: int
    clicks: int
    links: list[LinkStats]
    unsubscribes: int
    bounces: int
    complaints: int
    duration_seconds: float | None
    send_rate_per_second: float | None
    soft_bounces: int = Field(0, description="Bounces the reporting server called temporary (soft).")
    soft_bounce_suppressed: int = Field(
        0, description="Addresses suppressed because this campaign's soft bounce reached SOFT_BOUNCE_LIMIT."
    )


class CampaignSummary(BaseModel):
    id: int
    status: CampaignStatus
    subject: str
    digest: str
    scheduled_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    recipients: int


class DeliveryOut(BaseModel):
    id: int
    subscriber_id: int
    email: str
    list: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime | None
    message_id: str | None
    smtp_code: int | None
    smtp_text: str | None
    sent_at: dt.datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None


class Reach(BaseModel):
    lists: list[str]
    segment: str | None = None
    recipients: int = Field(description="One per person across the lists, as planning would count them now.")


class ProgressOut(BaseModel):
    id: int
    status: CampaignStatus
    counts: DeliveryCounts
    rate: float = Field(description="Messages sent per second over the last minute.")
    eta_seconds: int | None
    pause_reason: str | None
    resent_after_unknown: int
    last_error: str | None


class HourOut(BaseModel):
    start: dt.datetime
    opens: int = Field(description="An estimate: mail clients fetch the pixel without a reader, many block it.")
    clicks: int


class EventOut(BaseModel):
    id: int
    type: EventType
    at: dt.datetime
    email: str | None = Field(description="null once the subscriber was erased.")
    detail: str | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int | None


class ResendIn(Strict):
    statuses: list[DeliveryStatus] = Field(
        default_factory=lambda: [DeliveryStatus.failed, DeliveryStatus.unknown],
        min_length=1,
        description="failed and/or unknown; sent rows are never resent.",
    )


class Resent(BaseModel):
    id: int
    status: CampaignStatus
    requeued: int


# --- suppressions -----------------------------------------------------------------------------------------


class SuppressionIn(Strict):
    email: str = Field(max_length=column_length(Suppression.email), pattern=NO_NUL)
    detail: str | None = Field(None, max_length=1000, pattern=NO_NUL)


class SuppressionOut(BaseModel):
    id: int
    email: str | None = Field(description="null for erased subscribers: only the address's hash is kept.")
    email_hash: str
    reason: SuppressionReason
    detail: str | None
    created_at: dt.datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: int | None


class SuppressionAdded(BaseModel):
    suppression: SuppressionOut
    created: bool


class SuppressionImportOut(BaseModel):
    added: int
    already: int = Field(description="Addresses that were suppressed already (their first reason is kept).")
    errors: list[ImportErrorOut] = Field(description="Rows that are not usable addresses; the others were added.")


class BlockedDomainIn(Strict):
    domain: str = Field(
        max_length=column_length(BlockedDomain.domain),
        pattern=NO_NUL,
        description="mailinator.com, @mailinator.com or *@mailinator.com",
    )
    detail: str | None = Field(None, max_length=1000, pattern=NO_NUL)


class BlockedDomainOut(BaseModel):
    domain: str
    detail: str | None
    created_at: dt.datetime


class DomainBlocked(BaseModel):
    domain: BlockedDomainOut
    created: bool


class BounceOutcome(BaseModel):
    """What one recipient's part of a delivery status notification or feedback report changed."""

    kind: Literal["bounce", "delay", "complaint", "delivered"]
    recipient: str | None
    status: str | None = Field(description="RFC 3463 enhanced status, e.g. 5.1.1.")
    diagnostic: str | None
    message_id: str | None = Field(description="Of the message the report quotes.")
    campaign_id: int | None
    delivery_id: int | None
    result: Literal["suppressed", "recorded", "already recorded", "ignored"]
    reason: str


class BounceReport(BaseModel):
    reports: list[BounceOutcome]
