"""Campaigns: plan recipients into the ledger, claim them in small groups, send, record, retry, recover.

The ledger (`deliveries`) is the single source of truth. A row moves pending -> sending (claimed, in one
set-based UPDATE) -> sent | failed | pending (retry later) | unknown (a crash left its fate unknown) |
skipped (unsubscribed meanwhile, or campaign cancelled). Rows are claimed `outcome_flush_count` at a time
and their outcomes written before the next claim, so a worker killed at any instant leaves at most one
group in `sending`: that bounds the `unknown` set, and nothing claimed-but-never-tried is lost silently.

Functions here never import Celery: they return what must happen next (batch ranges), the task enqueues.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, case, cast, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, object_session, sessionmaker

from newsletter import digests, rendering, templates
from newsletter.config import Settings
from newsletter.db import is_postgres, utcnow
from newsletter.errors import Conflict, NotFound
from newsletter.lists import get_list
from newsletter.mailer import Mailer, SendResult, WireBytes, classify
from newsletter.messages import CampaignMessage, DkimSigner, InvalidHeader, Recipient
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    Event,
    EventType,
    Link,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    campaign_lists,
)
from newsletter.suppressions import suppress
from newsletter.tokens import TokenPurpose, Tokens

log = logging.getLogger(__name__)


class CampaignError(Conflict):
    """A campaign request that cannot be carried out; the message says why."""


class DigestNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        super().__init__(f"no published digest with slug {slug!r}")


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: int) -> None:
        super().__init__(f"no campaign with id {campaign_id}")


@dataclass(frozen=True)
class BatchRange:
    """A keyset range of ledger ids for one batch task; `countdown` delays it (retries)."""

    campaign_id: int
    first_id: int
    last_id: int
    countdown: float = 0.0


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE touched (the generic Result type does not declare it)."""
    return int(getattr(result, "rowcount", 0) or 0)


# Kept on a row resent under UNKNOWN_POLICY=resend even once it is sent: it marks the recipients who may
# have two copies, so the campaign's stats can say how many.
RESENT_AFTER_UNKNOWN = "resent: a worker died while an earlier attempt was in flight, so it may have arrived too"


def worker_name() -> str:
    """Who holds a claim: host and process, plus a token of this one batch run, so that a run gives back
    only its own claims (never those a crashed earlier task of the same process left to the sweep)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# --- creating and scheduling ------------------------------------------------------------------------------


def create_campaign(
    session: Session,
    *,
    digest_slug: str,
    list_slugs: Sequence[str],
    subject: str | None = None,
    scheduled_at: dt.datetime | None = None,
    allow_repeat: bool = False,
    created_by: str | None = None,
    template: str | None = None,
    now: dt.datetime | None = None,
) -> Campaign:
    """Create a campaign (scheduled when `scheduled_at` is given, else a draft that `start` sends), rendered
    with the uploaded `template` if named, else the bundled one."""
    digest = session.scalar(select(Digest).where(Digest.slug == digest_slug))
    if digest is None:
        raise DigestNotFound(digest_slug)
    chosen = templates.get_template(session, template) if template is not None else None
    if not list_slugs:
        raise CampaignError("name at least one list to send to")
    lists = [get_list(session, slug) for slug in dict.fromkeys(list_slugs)]
    if scheduled_at is not None:
        if scheduled_at.tzinfo is None:
            raise CampaignError("the send time needs a timezone, e.g. 2026-12-01T09:00:00+00:00")
        if scheduled_at <= (now or utcnow()):
            raise CampaignError(f"the send time {scheduled_at.isoformat()} is in the past")
    if not allow_repeat:
        repeated = session.execute(
            select(MailingList.slug, Campaign.id)
            .join(campaign_lists, campaign_lists.c.list_id == MailingList.id)
            .join(Campaign, Campaign.id == campaign_lists.c.campaign_id)
            .where(
                Campaign.digest_id == digest.id,
                MailingList.id.in_([m.id for m in lists]),
                Campaign.status != CampaignStatus.cancelled,
            )
        ).first()
        if repeated is not None:
            raise CampaignError(
                f"digest {digest_slug!r} was already sent to list {repeated[0]!r} by campaign {repeated[1]}; "
                "pass --again to send it once more"
            )
    clean_subject = " ".join((subject or digest.title).split())
    if not clean_subject:
        raise CampaignError("the subject is empty")
    from newsletter.deliverability import ensure_sendable  # imported here: it renders through this module

    ensure_sendable(session, digest, lists, clean_subject, template_source=chosen.source if chosen else None)
    campaign = Campaign(
        digest_id=digest.id,
        template_id=chosen.id if chosen else None,
        subject=clean_subject[:500],
        status=CampaignStatus.scheduled if scheduled_at else CampaignStatus.draft,
        scheduled_at=scheduled_at.astimezone(dt.UTC) if scheduled_at else None,
        created_by=created_by,
        lists=lists,
    )
    session.add(campaign)
    session.flush()
    return campaign


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    query = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        query = query.with_for_update()
    campaign = session.scalar(query)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    return campaign


# --- planning ---------------------------------------------------------------------------------------------


def start(session: Session, settings: Settings, campaign_id: int) -> list[BatchRange]:
    """Render once, materialise the ledger and return the batches to enqueue. Safe to run twice."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status in (CampaignStatus.draft, CampaignStatus.scheduled):
        render_campaign(session, settings, campaign)
        campaign.recipient_count = plan_ledger(session, campaign)
        campaign.planned_at = campaign.started_at = utcnow()
        campaign.status = CampaignStatus.sending
        session.flush()
        ranges = planned_ranges(session, campaign.id, campaign.recipient_count, settings.batch_size)
    elif campaign.status == CampaignStatus.sending:
        ranges = batch_ranges(session, campaign.id, settings.batch_size)
    else:
        return []
    if not ranges:
        finish_if_done(session, campaign.id)
    return ranges


def render_campaign(session: Session, settings: Settings, campaign: Campaign) -> None:
    """Render the digest once for the whole campaign, registering its links for click tracking."""
    primary = campaign.lists[0]
    positions: dict[str, int] = {}

    def track(url: str) -> str:
        position = positions.setdefault(url, len(positions) + 1)
        return f"{settings.base_url}/c/{rendering.TRACK}.{position}"

    tracking = primary.tracking
    rendered = rendering.render_digest(
        digest_model(campaign.digest),
        theme=theme_for(primary),
        list_name=primary.name,
        list_description=primary.description,
        link_href=track if tracking else None,
        open_pixel_url=f"{settings.base_url}/o/{rendering.TRACK}" if tracking else None,
        template_source=templates.template_source(session, campaign.template_id),
    )
    campaign.html = rendered.html
    campaign.text = rendered.text
    if positions:
        session.execute(
            insert(Link), [{"campaign_id": campaign.id, "position": p, "url": u} for u, p in positions.items()]
        )


def theme_for(mailing_list: MailingList) -> rendering.Theme:
    values = {"publication_name": mailing_list.name, "postal_address": mailing_list.postal_address}
    values.update(mailing_list.theme or {})
    return rendering.Theme.from_dict(values)


def digest_model(digest: Digest) -> digests.Digest:
    """The stored digest back as the validated model rendering takes."""
    return digests.Digest.model_validate(
        {
            "title": digest.title,
            "date": digest.date,
            "slug": digest.slug,
            "intro": digest.intro,
            "items": [
                {
                    "headline": item.headline,
                    "source": item.source,
                    "url": item.url,
                    "date": item.date,
                    "section": item.section,
                    "summary": item.summary,
                    "image": item.image,
                    "image_alt": item.image_alt,
                }
                for item in digest.items
            ],
        }
    )


def _eligible_subscriptions(list_ids: Sequence[int]) -> Any:
    """Confirmed subscriptions of active, unsuppressed subscribers on the given lists, one per subscriber."""
    conditions = (
        Subscription.list_id.in_(list_ids),
        Subscription.status == SubscriptionStatus.confirmed,
        Subscriber.status == SubscriberStatus.active,
        ~exists().where(Suppression.email_hash == Subscriber.email_hash),
    )
    if len(list_ids) == 1:
        # (subscriber, list) is unique: no grouping needed, which spares a sort of the whole list
        return (
            select(Subscription.subscriber_id, Subscription.list_id)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(*conditions)
        )
    return (
        select(Subscription.subscriber_id, func.min(Subscription.list_id).label("list_id"))
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(*conditions)
        .group_by(Subscription.subscriber_id)
    )


def plan_ledger(session: Session, campaign: Campaign) -> int:
    """One INSERT ... SELECT: a row per recipient, one even for someone on several of the lists."""
    eligible = _eligible_subscriptions([m.id for m in campaign.lists]).subquery()
    source = select(
        text(str(campaign.id)),
        eligible.c.subscriber_id,
        eligible.c.list_id,
        text(f"'{DeliveryStatus.pending.value}'"),
        text("0"),
        func.now() if is_postgres(session) else text("CURRENT_TIMESTAMP"),
    ).order_by(eligible.c.subscriber_id)
    columns = ["campaign_id", "subscriber_id", "list_id", "status", "attempts", "created_at"]
    planned = session.scalar(select(Delivery.id).where(Delivery.campaign_id == campaign.id).limit(1)) is not None
    statement = insert(Delivery).from_select(columns, source)
    if planned:
        # a second run adds nothing (idempotent); the first needs no conflict check, which costs a tenth
        if is_postgres(session):
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement = pg_insert(Delivery).from_select(columns, source).on_conflict_do_nothing()
        else:
            statement = statement.prefix_with("OR IGNORE")
    # SQLAlchemy keeps an INSERT ... SELECT's row count only when asked to (else -1 on PostgreSQL)
    inserted = rowcount(session.execute(statement.execution_options(preserve_rowcount=True)))
    if not planned:
        return inserted
    return session.scalar(select(func.count()).where(Delivery.campaign_id == campaign.id)) or 0


def planned_ranges(session: Session, campaign_id: int, planned: int, batch_size: int) -> list[BatchRange]:
    """`batch_ranges` of a ledger just planned with `planned` rows, without numbering them all.

    One INSERT ... SELECT takes consecutive ids unless another insert into the ledger ran at the same time.
    When the pending rows span exactly `planned` ids, slicing that span gives the ranges numbering would
    (and any slicing of it covers every row: ranges are filtered by campaign and status); else number them.
    """
    first, last = session.execute(
        select(func.min(Delivery.id), func.max(Delivery.id)).where(
            Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.pending
        )
    ).one()
    if first is None:
        return []
    if last - first + 1 != planned:
        return batch_ranges(session, campaign_id, batch_size)
    return [BatchRange(campaign_id, low, min(low + batch_size - 1, last)) for low in range(first, last + 1, batch_size)]


def batch_ranges(session: Session, campaign_id: int, batch_size: int, *, due_only: bool = False) -> list[BatchRange]:
    """Keyset ranges of `batch_size` pending ledger rows, computed in the database."""
    now = utcnow()
    conditions = [Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.pending]
    if due_only:
        conditions.append(or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now))
    numbered = (
        select(Delivery.id, ((func.row_number().over(order_by=Delivery.id) - 1) // batch_size).label("grp"))
        .where(*conditions)
        .subquery()
    )
    rows = session.execute(
        select(func.min(numbered.c.id), func.max(numbered.c.id)).group_by(numbered.c.grp).order_by(numbered.c.grp)
    )
    return [BatchRange(campaign_id, first, last) for first, last in rows]


# --- claiming ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    list_id: int
    email: str
    name: str
    attempts: int
    sections: list[str] | None = None  # digest sections the subscriber chose on the preferences page


_NO_LONGER_WANTED = "unsubscribed, blocked or suppressed before sending"


def skip_ineligible(session: Session, campaign_id: int, first_id: int, last_id: int) -> int:
    """Mark pending rows whose recipient left, was blocked or suppressed since planning as skipped."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.id.between(first_id, last_id),
            Delivery.status == DeliveryStatus.pending,
            ~_still_wanted(campaign_id),
        )
        .values(status=DeliveryStatus.skipped, smtp_text=_NO_LONGER_WANTED)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def _still_wanted(campaign_id: int) -> Any:
    return exists().where(
        Subscription.subscriber_id == Delivery.subscriber_id,
        Subscription.list_id.in_(select(campaign_lists.c.list_id).where(campaign_lists.c.campaign_id == campaign_id)),
        Subscription.status == SubscriptionStatus.confirmed,
        exists().where(
            Subscriber.id == Delivery.subscriber_id,
            Subscriber.status == SubscriberStatus.active,
            ~exists().where(Suppression.email_hash == Subscriber.email_hash),
        ),
    )


# PostgreSQL: pick, re-check and claim a group in one round trip. SKIP LOCKED lets any number of workers
# share a range without waiting; rows whose recipient left since planning become `skipped` on the way.
_PG_CLAIM_CTES = """
picked AS (
    SELECT d.id FROM deliveries d
    WHERE d.campaign_id = :campaign_id AND d.id BETWEEN :first_id AND :last_id AND d.status = 'pending'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= :now)
      AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = :campaign_id AND c.status = 'sending')
    ORDER BY d.id
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
), checked AS (
    SELECT p.id, s.email, s.name,
        s.status = 'active'
        AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email_hash = s.email_hash)
        AND EXISTS (
            SELECT 1 FROM subscriptions sub JOIN campaign_lists cl ON cl.list_id = sub.list_id
            WHERE sub.subscriber_id = s.id AND cl.campaign_id = :campaign_id AND sub.status = 'confirmed'
        ) AS wanted,
        (SELECT sub.sections FROM subscriptions sub WHERE sub.subscriber_id = s.id AND sub.list_id = d.list_id)
            AS sections
    FROM picked p JOIN deliveries d ON d.id = p.id JOIN subscribers s ON s.id = d.subscriber_id
)
UPDATE deliveries d SET
    status = CASE WHEN c.wanted THEN 'sending' ELSE 'skipped' END,
    claimed_at = :now,
    claimed_by = CASE WHEN c.wanted THEN :worker END,
    attempts = d.attempts + CASE WHEN c.wanted THEN 1 ELSE 0 END,
    smtp_text = CASE WHEN c.wanted THEN d.smtp_text ELSE :skipped_text END
FROM checked c
WHERE d.id = c.id
RETURNING d.id, d.subscriber_id, d.list_id, c.email, c.name, d.attempts, c.wanted, c.sections
"""
_PG_CLAIM = text("WITH" + _PG_CLAIM_CTES)

# A group's messages all accepted (the common case): its outcomes and the next claim in one statement,
# run in autocommit, so a group costs one round trip instead of a ping, BEGIN, two statements and COMMIT.
# The two touch disjoint rows (`sending` ones and `pending` ones); PostgreSQL runs a data-modifying
# WITH query to completion whether or not the main query reads it.
_PG_RECORD_SENT_SQL = """
UPDATE deliveries SET
    status = 'sent', sent_at = :now, smtp_code = 250, claimed_by = NULL,
    smtp_text = CASE WHEN smtp_text = :resent THEN smtp_text END,
    message_id = :id_prefix || id || :id_suffix
WHERE id = ANY(:sent) AND status = 'sending' AND claimed_by = :worker
"""
_PG_RECORD_SENT = text(_PG_RECORD_SENT_SQL)
_PG_RECORD_AND_CLAIM = text(f"WITH recorded AS ({_PG_RECORD_SENT_SQL} RETURNING 1)," + _PG_CLAIM_CTES)


def _claim_params(campaign_id: int, first_id: int, last_id: int, limit: int, worker: str) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "first_id": first_id,
        "last_id": last_id,
        "now": utcnow(),
        "limit": limit,
        "worker": worker,
        "skipped_text": _NO_LONGER_WANTED,
    }


def _record_sent_params(prepared: PreparedCampaign, sent: list[int], worker: str) -> dict[str, Any]:
    return {
        "sent": sent,
        "worker": worker,
        "now": utcnow(),
        "resent": RESENT_AFTER_UNKNOWN,
        "id_prefix": f"<{prepared.campaign_id}.",
        "id_suffix": f".{prepared.nonce}@{prepared.domain}>",
    }


def _claimed(rows: Sequence[Any]) -> list[Claimed]:
    """The claim's RETURNING rows that are to be sent (the others were skipped), in id order."""
    picked = [
        Claimed(row.id, row.subscriber_id, row.list_id, row.email, row.name, row.attempts, row.sections)
        for row in rows
        if row.wanted
    ]
    return sorted(picked, key=lambda c: c.delivery_id)


def claim(session: Session, campaign_id: int, first_id: int, last_id: int, *, limit: int, worker: str) -> list[Claimed]:
    """Atomically move up to `limit` due pending rows of the range to `sending` and return their recipients.

    Rows are re-checked against the subscriptions first, so an unsubscribe takes effect mid-campaign.
    """
    if is_postgres(session):
        params = _claim_params(campaign_id, first_id, last_id, limit, worker)
        return _claimed(session.connection().execute(_PG_CLAIM, params).all())

    now = utcnow()
    # SQLite has a single writer, so a plain select-then-update is atomic inside the transaction.
    candidates = session.scalars(
        select(Delivery.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.id.between(first_id, last_id),
            Delivery.status == DeliveryStatus.pending,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
            exists().where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.sending),
        )
        .order_by(Delivery.id)
        .limit(limit)
    ).all()
    if not candidates:
        return []
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(candidates), ~_still_wanted(campaign_id))
        .values(status=DeliveryStatus.skipped, smtp_text=_NO_LONGER_WANTED)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(candidates), Delivery.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.sending, claimed_at=now, claimed_by=worker, attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    claimed = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.list_id,
            Subscriber.email,
            Subscriber.name,
            Delivery.attempts,
            Subscription.sections,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .outerjoin(
            Subscription,
            and_(Subscription.subscriber_id == Delivery.subscriber_id, Subscription.list_id == Delivery.list_id),
        )
        .where(Delivery.id.in_(candidates), Delivery.status == DeliveryStatus.sending, Delivery.claimed_by == worker)
        .order_by(Delivery.id)
    )
    return [Claimed(*row) for row in claimed]


# --- sending ----------------------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Outcomes not yet written, written with a few set-based statements."""

    sent: list[int] = field(default_factory=list)
    retry: list[tuple[Claimed, SendResult]] = field(default_factory=list)
    failed: list[tuple[Claimed, SendResult]] = field(default_factory=list)
    invalid: list[tuple[Claimed, str]] = field(default_factory=list)  # could not be composed: never sent
    unwanted: list[Claimed] = field(default_factory=list)  # chose none of this digest's sections

    def __len__(self) -> int:
        return len(self.sent) + len(self.retry) + len(self.failed) + len(self.invalid) + len(self.unwanted)

    def add(self, claimed: Claimed, result: SendResult) -> None:
        verdict = classify(result)
        if verdict == "sent":
            self.sent.append(claimed.delivery_id)
        elif verdict == "retry":
            self.retry.append((claimed, result))
        else:
            self.failed.append((claimed, result))


@dataclass
class BatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    retry_after: float | None = None  # seconds until the earliest retry of this range is due

    def count(self, outcomes: Outcomes) -> None:
        self.sent += len(outcomes.sent)
        self.retried += len(outcomes.retry)
        self.failed += len(outcomes.failed) + len(outcomes.invalid)


NOTHING_WANTED = "none of this digest's sections is among those the subscriber chose"


class NothingWanted(Exception):
    """The subscriber chose sections and this digest has none of them: nothing to send."""


class PreparedCampaign:
    """Everything per-campaign the send loop needs, built once per campaign per process."""

    def __init__(self, settings: Settings, campaign: Campaign, tokens: Tokens, dkim: DkimSigner | None) -> None:
        if campaign.html is None or campaign.text is None:
            raise CampaignError(f"campaign {campaign.id} has not been rendered")
        primary = campaign.lists[0]
        self.settings = settings
        self.campaign_id = campaign.id
        self.tokens = tokens
        self.tracking = primary.tracking
        self.domain = primary.from_email.rpartition("@")[2]
        self.nonce = message_nonce(settings.secret_key, campaign.id)
        self.envelope_from = envelope_address(primary.from_email)
        self._unsubscribe = f"{settings.base_url}/unsubscribe/"
        self._preferences = f"{settings.base_url}/preferences/"
        self._message_options: dict[str, Any] = {
            "subject": campaign.subject,
            "from_name": primary.from_name or primary.name,
            "from_email": primary.from_email,
            "reply_to": primary.reply_to,
            "list_id": f"{primary.name} <{primary.slug}.{self.domain}>",
            "unsubscribe_mailto": settings.list_unsubscribe_mailto,
            "headers": {"X-Campaign-ID": str(campaign.id)},
            "dkim": dkim,
        }
        self.message = CampaignMessage(html=campaign.html, text=campaign.text, **self._message_options)
        # Subscribers who chose sections get a copy with only those; each distinct choice is rendered once
        # per process, on first use, with the campaign's registered links. What that needs is copied out
        # of the ORM objects now: this object outlives the session that loaded them.
        # (A preview's unsaved campaign has no digest row: it never has variants.)
        self._digest = digest_model(campaign.digest) if campaign.digest is not None else None
        self._offered = (
            frozenset(item.section for item in self._digest.items if item.section) if self._digest else frozenset()
        )
        self._positions = {link.url: link.position for link in campaign.links}
        self._theme = theme_for(primary)
        self._list_name, self._list_description = primary.name, primary.description
        session = object_session(campaign)
        self._template = templates.template_source(session, campaign.template_id) if session else None
        self._variants: dict[frozenset[str], CampaignMessage | None] = {}

    def message_for(self, sections: list[str] | None) -> CampaignMessage | None:
        """The message for a subscriber's chosen sections; None when this digest has none of them."""
        if sections is None:
            return self.message
        wanted = self._offered & frozenset(sections)
        if wanted == self._offered:
            return self.message
        if wanted not in self._variants:
            self._variants[wanted] = self._render_variant(wanted)
        return self._variants[wanted]

    def _render_variant(self, wanted: frozenset[str]) -> CampaignMessage | None:
        if not wanted:
            return None  # an issue of only unsectioned items still goes to everyone: see `offered` above
        # Items without a section are general news: everyone who gets the issue gets them.
        assert self._digest is not None  # `_offered` is empty without one
        items = tuple(item for item in self._digest.items if item.section is None or item.section in wanted)
        base, positions = self.settings.base_url, self._positions

        def track(url: str) -> str:
            return f"{base}/c/{rendering.TRACK}.{positions[url]}" if url in positions else url

        rendered = rendering.render_digest(
            self._digest.model_copy(update={"items": items}),
            theme=self._theme,
            list_name=self._list_name,
            list_description=self._list_description,
            link_href=track if self.tracking else None,
            open_pixel_url=f"{base}/o/{rendering.TRACK}" if self.tracking else None,
            template_source=self._template,
        )
        return CampaignMessage(html=rendered.html, text=rendered.text, **self._message_options)

    def message_id(self, delivery_id: int) -> str:
        return f"<{self.campaign_id}.{delivery_id}.{self.nonce}@{self.domain}>"

    def render(self, claimed: Claimed) -> bytes:
        """The recipient's message; raises messages.InvalidHeader when it cannot be written safely."""
        make = self.tokens.make
        unsubscribe = self._unsubscribe + make(TokenPurpose.unsubscribe, claimed.subscriber_id, claimed.list_id)
        values = {
            rendering.NAME: claimed.name,
            rendering.UNSUBSCRIBE_URL: unsubscribe,
            rendering.PREFERENCES_URL: self._preferences + make(TokenPurpose.preferences, claimed.subscriber_id),
        }
        if self.tracking:
            values[rendering.TRACK] = make(TokenPurpose.track, claimed.delivery_id)
        message = self.message_for(claimed.sections)
        if message is None:
            raise NothingWanted
        return message.render(
            Recipient(
                email=claimed.email,
                name=claimed.name or None,
                message_id=self.message_id(claimed.delivery_id),
                values=values,
                unsubscribe_url=unsubscribe,
            )
        )


def message_nonce(secret_key: str, campaign_id: int) -> str:
    """Makes Message-IDs unique across installations and databases, yet derivable in SQL from the row id,
    and unforgeable: a bounce or complaint must quote one this installation wrote (see bounces.py)."""
    return hashlib.blake2s(f"{secret_key}:{campaign_id}".encode(), digest_size=6).hexdigest()


def envelope_address(email: str) -> str:
    """The SMTP envelope form: an internationalised domain in IDNA (the local part needs SMTPUTF8 anyway)."""
    local, _, domain = email.rpartition("@")
    if domain.isascii():
        return email
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return email  # the mailer refuses it, and the row is failed with the server's or its own reason


_prepared: dict[tuple[Settings, int, dt.datetime | None], PreparedCampaign] = {}


def prepare(session: Session, settings: Settings, campaign_id: int) -> PreparedCampaign:
    """The campaign's pre-encoded message, built once per process and reused by every batch of it."""
    # planned_at tells a re-planned campaign, or another database's campaign with the same id, apart
    planned_at = session.scalar(select(Campaign.planned_at).where(Campaign.id == campaign_id))
    key = (settings, campaign_id, planned_at)
    if key not in _prepared:
        campaign = get_campaign(session, campaign_id)
        dkim = (
            DkimSigner.from_file(settings.dkim_domain, settings.dkim_selector, settings.dkim_key_file)
            if settings.dkim_domain and settings.dkim_selector and settings.dkim_key_file
            else None
        )
        _prepared.clear()  # one campaign at a time per process is the common case; keep memory flat
        _prepared[key] = PreparedCampaign(settings, campaign, Tokens(settings.secret_key), dkim)
    return _prepared[key]


class FailureWindow:
    """The outcomes of this process's last N messages of one campaign, for auto-pause."""

    def __init__(self, campaign_id: int, size: int) -> None:
        self.campaign_id = campaign_id
        self.outcomes: deque[bool] = deque(maxlen=size)  # True: failed or deferred
        self.last_failure = ""

    def add(self, outcomes: Outcomes) -> None:
        self.outcomes.extend([False] * len(outcomes.sent))
        for _, result in (*outcomes.retry, *outcomes.failed):
            self.outcomes.append(True)
            self.last_failure = f"{result.code} {result.text}" if result.code else result.text

    def verdict(self, threshold: float) -> str | None:
        """The reason to pause, when the window is full and its failure share is past the threshold."""
        size, failed = len(self.outcomes), sum(self.outcomes)
        if not threshold or size < (self.outcomes.maxlen or 0) or failed / size <= threshold:
            return None
        self.outcomes.clear()  # after a resume, judge afresh
        return (
            f"auto-paused: {failed} of the last {size} messages failed or were deferred "
            f"(over {threshold:.0%}); last answer: {self.last_failure[:300]}"
        )


_windows: dict[int, FailureWindow] = {}


def failure_window(settings: Settings, campaign_id: int) -> FailureWindow:
    window = _windows.get(campaign_id)
    if window is None:
        _windows.clear()
        window = _windows[campaign_id] = FailureWindow(campaign_id, settings.auto_pause_window)
    return window


def auto_pause(session: Session, campaign_id: int, reason: str) -> bool:
    """Pause a sending campaign from inside the send loop (no lock wait: a plain conditional UPDATE)."""
    result = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.sending)
        .values(status=CampaignStatus.paused, pause_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result):
        log.warning("campaign %s %s", campaign_id, reason)
    return bool(rowcount(result))


# How long a worker keeps retrying to write outcomes it holds while the database is unreachable: the
# messages went out, so a short outage must not turn them into `unknown`. Capped by the claim lease.
_RECORD_PATIENCE_SECONDS = 60.0


def _database_down(error: BaseException) -> bool:
    return isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def send_batch(
    sessions: sessionmaker[Session],
    settings: Settings,
    mailer: Mailer,
    campaign_id: int,
    first_id: int,
    last_id: int,
    *,
    throttle: Callable[[int], None] | None = None,
) -> BatchReport:
    """Send one keyset range: claim a group, send it on one connection, record it, repeat.

    Takes a session factory rather than a session because the claim must be committed before a message
    leaves (so a crash shows the row as `sending`) and outcomes are committed as they come: every
    `outcome_flush_count` messages or `outcome_flush_ms`, the last ones of a group together with the
    next claim, in one transaction. A worker killed at any instant thus leaves at most one group in
    `sending`, and that is the bound on the `unknown` set.
    """
    worker = worker_name()
    report = BatchReport()
    group_size = settings.outcome_flush_count
    flush_after = settings.outcome_flush_ms / 1000
    patience = min(_RECORD_PATIENCE_SECONDS, settings.claim_lease_seconds / 3)
    with sessions() as session:
        prepared = prepare(session, settings, campaign_id)

    window = failure_window(settings, campaign_id)
    # One session for the whole batch; on PostgreSQL, groups that went out cleanly use `fast` instead.
    session = sessions()
    fast = _autocommit_connection(sessions)
    reconnect = False

    def record_and_claim(outcomes: Outcomes, *, claim_next: bool) -> list[Claimed]:
        nonlocal session, fast, reconnect
        window.add(outcomes)
        reason = window.verdict(settings.auto_pause_failure_rate)
        clean = reason is None and len(outcomes.sent) == len(outcomes)
        deadline = time.monotonic() + patience
        while True:
            try:
                if reconnect:
                    fast, reconnect = _autocommit_connection(sessions), False
                if fast is not None and clean:
                    return _record_and_claim_fast(fast, prepared, outcomes, worker, claim_next, first_id, last_id)
                record(session, settings, prepared, outcomes, worker)
                if reason is not None:
                    auto_pause(session, campaign_id, reason)  # the claim below then finds nothing
                group = (
                    claim(session, campaign_id, first_id, last_id, limit=group_size, worker=worker)
                    if claim_next
                    else []
                )
                session.commit()
                return group
            except DBAPIError as error:
                session.close()
                session = sessions()
                if fast is not None:
                    fast.close()
                    fast = None  # connecting may fail while the server is down: reconnect in the loop
                    reconnect = True
                if not (outcomes and _database_down(error)) or time.monotonic() > deadline:
                    raise
                log.warning("database unreachable, keeping %d outcomes and retrying: %s", len(outcomes), error)
                time.sleep(1.0)

    try:
        with mailer.session() as smtp:
            outcomes = Outcomes()
            while True:
                group = record_and_claim(outcomes, claim_next=True)
                report.count(outcomes)
                outcomes = Outcomes()
                if not group:
                    break
                if throttle is not None:
                    throttle(len(group))
                ready: list[Claimed] = []
                items: list[tuple[str, str, bytes]] = []
                for claimed in group:
                    try:
                        data = WireBytes(prepared.render(claimed))  # the composer writes wire form
                        items.append((prepared.envelope_from, envelope_address(claimed.email), data))
                        ready.append(claimed)
                    except InvalidHeader as error:
                        outcomes.invalid.append((claimed, f"not sent: {error}"))
                    except NothingWanted:
                        outcomes.unwanted.append(claimed)
                flushed_at = time.monotonic()
                for claimed, result in zip(ready, smtp.send_many(items), strict=True):
                    outcomes.add(claimed, result)
                    if time.monotonic() - flushed_at > flush_after and claimed is not ready[-1]:
                        # a slow server: write what is known, so a crash now leaves fewer rows unknown
                        record_and_claim(outcomes, claim_next=False)
                        report.count(outcomes)
                        outcomes = Outcomes()
                        flushed_at = time.monotonic()
    finally:
        session.close()
        if fast is not None:
            fast.close()
    with sessions.begin() as session:
        report.released = release_claims(session, campaign_id, first_id, last_id, worker)
        report.retry_after = next_retry_delay(session, campaign_id, first_id, last_id)
        finish_if_done(session, campaign_id)
    return report


def _autocommit_connection(sessions: sessionmaker[Session]) -> Connection | None:
    """A connection of the batch's own in autocommit mode, for the one-statement record-and-claim; None
    on SQLite, or when the factory is bound to a connection (a caller's transaction, as in tests)."""
    bind = sessions.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        return bind.connect().execution_options(isolation_level="AUTOCOMMIT")
    return None


def _record_and_claim_fast(
    conn: Connection,
    prepared: PreparedCampaign,
    outcomes: Outcomes,
    worker: str,
    claim_next: bool,
    first_id: int,
    last_id: int,
) -> list[Claimed]:
    """Record a group whose messages were all accepted and claim the next, as one autocommit statement."""
    campaign_id, group_size = prepared.campaign_id, prepared.settings.outcome_flush_count
    if not claim_next:
        if outcomes.sent:
            conn.execute(_PG_RECORD_SENT, _record_sent_params(prepared, outcomes.sent, worker))
        return []
    params = _claim_params(campaign_id, first_id, last_id, group_size, worker)
    if not outcomes.sent:
        return _claimed(conn.execute(_PG_CLAIM, params).all())
    params |= _record_sent_params(prepared, outcomes.sent, worker)
    return _claimed(conn.execute(_PG_RECORD_AND_CLAIM, params).all())


def record(session: Session, settings: Settings, prepared: PreparedCampaign, outcomes: Outcomes, worker: str) -> None:
    """Write a group's outcomes. Only rows still claimed by this worker change: after a lease expired,
    the sweep's verdict (and whoever claimed the row since) wins over a late write."""
    now = utcnow()
    mine = (Delivery.status == DeliveryStatus.sending, Delivery.claimed_by == worker)
    if outcomes.sent and is_postgres(session):
        # One fixed text with an array, prepared once per connection, skips the ORM's bulk-update work.
        session.connection().execute(_PG_RECORD_SENT, _record_sent_params(prepared, outcomes.sent, worker))
    elif outcomes.sent:
        # One statement per group; the message id is derived from the row id, so needs no per-row value.
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(outcomes.sent), *mine)
            .values(
                status=DeliveryStatus.sent,
                sent_at=now,
                smtp_code=250,
                smtp_text=case((Delivery.smtp_text == RESENT_AFTER_UNKNOWN, Delivery.smtp_text), else_=None),
                message_id=literal(f"<{prepared.campaign_id}.", String)
                + cast(Delivery.id, String)
                + literal(f".{prepared.nonce}@{prepared.domain}>", String),
                claimed_by=None,
            )
            .execution_options(synchronize_session=False)
        )
    for claimed, result in outcomes.retry:
        _record_retry(session, settings, claimed, result, now, mine)
    for claimed, result in outcomes.failed:
        _record_failure(session, prepared, claimed, result, mine)
    if outcomes.unwanted:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([c.delivery_id for c in outcomes.unwanted]), *mine)
            .values(status=DeliveryStatus.skipped, smtp_text=NOTHING_WANTED, claimed_by=None)
            .execution_options(synchronize_session=False)
        )
    for claimed, reason in outcomes.invalid:
        session.execute(
            update(Delivery)
            .where(Delivery.id == claimed.delivery_id, *mine)
            .values(status=DeliveryStatus.failed, smtp_code=None, smtp_text=reason[:2000], claimed_by=None)
        )


def _record_retry(
    session: Session, settings: Settings, claimed: Claimed, result: SendResult, now: dt.datetime, mine: Any
) -> None:
    created = session.scalar(select(Delivery.created_at).where(Delivery.id == claimed.delivery_id))
    too_old = created is not None and now - created > dt.timedelta(hours=settings.retry_max_age_hours)
    if claimed.attempts >= settings.retry_max_attempts or too_old:
        session.execute(
            update(Delivery)
            .where(Delivery.id == claimed.delivery_id, *mine)
            .values(
                status=DeliveryStatus.failed,
                smtp_code=result.code or None,
                smtp_text=f"gave up after {claimed.attempts} attempts: {result.text}"[:2000],
                claimed_by=None,
            )
        )
        return
    delay = settings.retry_base_seconds * 2 ** (claimed.attempts - 1)
    delay *= random.uniform(0.8, 1.2)  # jitter so retries of one outage do not arrive together
    session.execute(
        update(Delivery)
        .where(Delivery.id == claimed.delivery_id, *mine)
        .values(
            status=DeliveryStatus.pending,
            next_attempt_at=now + dt.timedelta(seconds=delay),
            smtp_code=result.code or None,
            smtp_text=result.text[:2000],
            claimed_by=None,
        )
    )


def is_hard_status(status: str) -> bool:
    """An RFC 3463 status that is for good: 5.1.x (no such address) or 5.2.1 (mailbox disabled); 5.2.2
    (mailbox full), policy and system refusals may clear up."""
    return status.startswith(("5.1.", "5.2.1"))


def is_hard_bounce(result: SendResult) -> bool:
    """A 5xx that says the mailbox does not exist or refuses us for good (RFC 3463 5.1.x / 5.2.1)."""
    status = result.text.split(" ", 1)[0]
    return result.permanent and (is_hard_status(status) or status[:1] != "5")


def _record_failure(
    session: Session, prepared: PreparedCampaign, claimed: Claimed, result: SendResult, mine: Any
) -> None:
    changed = session.execute(
        update(Delivery)
        .where(Delivery.id == claimed.delivery_id, *mine)
        .values(status=DeliveryStatus.failed, smtp_code=result.code, smtp_text=result.text[:2000], claimed_by=None)
    )
    if not rowcount(changed):
        return
    session.add(
        Event(
            type=EventType.bounce,
            campaign_id=prepared.campaign_id,
            delivery_id=claimed.delivery_id,
            subscriber_id=claimed.subscriber_id,
            list_id=claimed.list_id,
            detail=f"{result.code} {result.text}"[:2000],
        )
    )
    if is_hard_bounce(result):
        suppress(session, claimed.email, SuppressionReason.hard_bounce, detail=f"{result.code} {result.text}")


def release_claims(session: Session, campaign_id: int, first_id: int, last_id: int, worker: str) -> int:
    """Give back rows this worker claimed but did not try (pause/cancel arrived mid-batch)."""
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    target = DeliveryStatus.skipped if status == CampaignStatus.cancelled else DeliveryStatus.pending
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.id.between(first_id, last_id),
            Delivery.status == DeliveryStatus.sending,
            Delivery.claimed_by == worker,
        )
        .values(status=target, attempts=Delivery.attempts - 1, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def next_retry_delay(session: Session, campaign_id: int, first_id: int, last_id: int) -> float | None:
    earliest = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.campaign_id == campaign_id,
            Delivery.id.between(first_id, last_id),
            Delivery.status == DeliveryStatus.pending,
        )
    )
    if earliest is None:
        return None
    if earliest.tzinfo is None:  # SQLite aggregate results bypass the column type
        earliest = earliest.replace(tzinfo=dt.UTC)
    return max(0.0, (earliest - utcnow()).total_seconds())


def finish_if_done(session: Session, campaign_id: int) -> bool:
    """A sending campaign with no row pending or sending is finished."""
    busy = session.scalar(
        select(Delivery.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.sending]),
        )
        .limit(1)
    )
    if busy is not None:
        return False
    result = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.sending)
        .values(status=CampaignStatus.finished, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))


# --- pause, resume, cancel, recover -----------------------------------------------------------------------


def pause(session: Session, campaign_id: int, reason: str = "paused by an editor") -> Campaign:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.sending:
        raise CampaignError(f"campaign {campaign_id} is {campaign.status.value}, only a sending one can pause")
    campaign.status = CampaignStatus.paused
    campaign.pause_reason = reason
    session.flush()
    return campaign


def resume(session: Session, settings: Settings, campaign_id: int) -> list[BatchRange]:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.paused:
        raise CampaignError(f"campaign {campaign_id} is {campaign.status.value}, only a paused one can resume")
    campaign.status = CampaignStatus.sending
    campaign.pause_reason = None
    session.flush()
    ranges = batch_ranges(session, campaign_id, settings.batch_size)
    if not ranges:
        finish_if_done(session, campaign_id)
    return ranges


def cancel(session: Session, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status in (CampaignStatus.finished, CampaignStatus.cancelled):
        raise CampaignError(f"campaign {campaign_id} is already {campaign.status.value}")
    campaign.status = CampaignStatus.cancelled
    campaign.finished_at = utcnow()
    session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.pending)
        .values(status=DeliveryStatus.skipped, smtp_text="campaign cancelled")
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return campaign


@dataclass(frozen=True)
class SweepReport:
    unknown: int
    requeued: list[BatchRange]
    started: list[int]


def sweep(session: Session, settings: Settings, now: dt.datetime | None = None) -> SweepReport:
    """The periodic recovery pass: expire dead claims, re-enqueue lost work, start due scheduled campaigns."""
    now = now or utcnow()
    lease_expired = now - dt.timedelta(seconds=settings.claim_lease_seconds)
    stuck = and_(Delivery.status == DeliveryStatus.sending, Delivery.claimed_at < lease_expired)
    if settings.unknown_policy == "resend":
        values: dict[str, Any] = {"status": DeliveryStatus.pending, "smtp_text": RESENT_AFTER_UNKNOWN}
    else:
        values = {
            "status": DeliveryStatus.unknown,
            "smtp_text": "worker died while this message was in flight; it may or may not have been delivered",
        }
    unknown = rowcount(
        session.execute(
            update(Delivery).where(stuck).values(claimed_by=None, **values).execution_options(synchronize_session=False)
        )
    )

    requeued: list[BatchRange] = []
    sending = session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.sending)).all()
    for campaign_id in sending:
        ranges = batch_ranges(session, campaign_id, settings.batch_size, due_only=True)
        requeued.extend(ranges)
        if not ranges:
            finish_if_done(session, campaign_id)
    started = session.scalars(
        select(Campaign.id).where(Campaign.status == CampaignStatus.scheduled, Campaign.scheduled_at <= now)
    ).all()
    return SweepReport(unknown=unknown, requeued=requeued, started=list(started))


# --- reading ----------------------------------------------------------------------------------------------

RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Progress:
    """Where a campaign stands: counts per delivery status, the recent send rate and an ETA."""

    campaign_id: int
    status: CampaignStatus
    counts: dict[str, int]
    rate: float  # messages sent per second over the last minute (or since the start, if shorter)
    eta_seconds: float | None  # None when nothing is moving
    pause_reason: str | None
    resent_after_unknown: int
    last_error: str | None  # the latest reason a pending row is waiting for a retry, e.g. the server is down

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return self.total - self.counts["pending"] - self.counts["sending"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.campaign_id,
            "status": self.status.value,
            "counts": self.counts,
            "rate": round(self.rate, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "pause_reason": self.pause_reason,
            "resent_after_unknown": self.resent_after_unknown,
            "last_error": self.last_error,
        }


def progress(session: Session, campaign_id: int, now: dt.datetime | None = None) -> Progress:
    """Counts, rate and ETA in one scan of the campaign's ledger rows."""
    campaign = get_campaign(session, campaign_id)
    now = now or utcnow()
    since = now - dt.timedelta(seconds=RATE_WINDOW_SECONDS)
    counts = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    recent = resent = 0
    rows = session.execute(
        select(
            Delivery.status,
            func.count(),
            func.count().filter(Delivery.sent_at >= since),
            func.count().filter(Delivery.smtp_text == RESENT_AFTER_UNKNOWN),
        )
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.status)
    )
    for status, count, sent_recently, resent_rows in rows:
        counts[DeliveryStatus(status).value] = count
        if status == DeliveryStatus.sent:
            recent, resent = sent_recently, resent_rows
    window = float(RATE_WINDOW_SECONDS)
    if campaign.started_at is not None:
        window = min(window, max((now - campaign.started_at).total_seconds(), 1.0))
    rate = recent / window
    left = counts["pending"] + counts["sending"]
    moving = campaign.status == CampaignStatus.sending and rate > 0
    last_error = None
    if counts["pending"]:
        last_error = session.scalar(
            select(Delivery.smtp_text)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.status == DeliveryStatus.pending,
                Delivery.next_attempt_at.is_not(None),
            )
            .order_by(Delivery.next_attempt_at.desc())
            .limit(1)
        )
    return Progress(
        campaign_id=campaign_id,
        status=campaign.status,
        counts=counts,
        rate=rate,
        eta_seconds=left / rate if moving else (0.0 if not left else None),
        pause_reason=campaign.pause_reason,
        resent_after_unknown=resent,
        last_error=last_error,
    )


def counts(session: Session, campaign_id: int) -> dict[str, int]:
    result = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
    )
    for status, count in rows:
        result[DeliveryStatus(status).value] = count
    return result
