"""Bounces and complaints that come back by mail, long after the relay said 250.

Most refusals never reach the send loop: a relay (a smarthost, a provider) accepts the message and the
recipient's server refuses it later, so what comes back is an RFC 3464 delivery status notification to
the bounce address; a mailbox provider's feedback loop sends an RFC 5965 abuse report (ARF) instead.
Each report is tied to the ledger row of the message it quotes, through the Message-ID the pipeline
wrote (it carries the campaign, the row and a MAC keyed per delivery, so a report cannot be forged for a
message its author never received), acts only on that delivery's own recipient, and is recorded as a
refusal at send time would be: a hard bounce or a complaint suppresses the address, a soft bounce is
recorded only, a delay changes nothing.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter import metrics, outbox, reputation, tracking, verp
from newsletter.config import Settings
from newsletter.delivery.composing import MESSAGE_MAC_LENGTH, MessageMacs
from newsletter.delivery.ledger import is_hard_status
from newsletter.errors import Invalid
from newsletter.models import (
    Campaign,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from newsletter.suppressions import SOFT_SUPPRESSED, suppress_if_soft_bouncing, suppress_quickly
from newsletter.text import single_line
from newsletter.tokens import Tokens


class NotAReport(Invalid):
    """The message is neither a delivery status notification nor a feedback report."""


@dataclass(frozen=True)
class Report:
    """One recipient's part of a report."""

    kind: Literal["bounce", "delay", "complaint", "delivered"]
    recipient: str | None  # the address that failed (Final-Recipient) or was reported (Original-Rcpt-To)
    original_recipient: str | None  # the address as first given, before any forwarding
    status: str | None  # RFC 3463 enhanced status, e.g. 5.1.1
    diagnostic: str | None  # the remote server's words, e.g. "smtp; 550 5.1.1 User unknown"
    message_id: str | None  # of the message the report is about
    hard: bool | None = None  # what a provider says the bounce is; None: judged by `status` (RFC 3463)

    @property
    def detail(self) -> str:
        words = " ".join(p for p in (self.status, self.diagnostic) if p)
        return words or self.kind


@dataclass(frozen=True)
class Outcome:
    report: Report
    delivery_id: int | None
    campaign_id: int | None
    result: Literal["suppressed", "recorded", "already recorded", "ignored"]
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.report.kind,
            "recipient": self.report.recipient,
            "status": self.report.status,
            "diagnostic": self.report.diagnostic,
            "message_id": self.report.message_id,
            "campaign_id": self.campaign_id,
            "delivery_id": self.delivery_id,
            "result": self.result,
            "reason": self.reason,
        }


# --- reading reports --------------------------------------------------------------------------------------


def parse(data: bytes) -> list[Report]:
    """The per-recipient reports of a DSN or an ARF report; raises NotAReport for anything else."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    if message.get_content_type() != "multipart/report":
        raise NotAReport("not a delivery status notification or feedback report (no multipart/report)")
    kind = str(message.get_param("report-type", "")).lower()
    parts = list(message.iter_parts()) if isinstance(message, EmailMessage) else []
    message_id = _original_message_id(parts)
    if kind == "delivery-status":
        return _delivery_status(parts, message_id)
    if kind == "feedback-report":
        return _feedback(parts, message_id)
    raise NotAReport(f"a multipart/report of type {kind or '(none)'}, not delivery-status or feedback-report")


def _fields(parts: list[MIMEPart], content_type: str) -> list[Message]:
    """The header blocks of the report part (the stdlib parses message/* bodies into messages)."""
    for part in parts:
        if part.get_content_type() == content_type:
            payload = part.get_payload()
            if isinstance(payload, list):
                return [block for block in payload if isinstance(block, Message)]
            # some generators label it text: parse the blocks ourselves
            text = part.get_payload(decode=True) or b""
            blocks = re.split(rb"\r?\n\r?\n", bytes(text).strip())
            return [BytesHeaderParser().parsebytes(block + b"\n") for block in blocks if block.strip()]
    raise NotAReport(f"the report has no {content_type} part")


def _original_message_id(parts: list[MIMEPart]) -> str | None:
    for part in parts[2:] or parts[1:]:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return _clean(payload[0].get("Message-ID"))
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            headers = BytesHeaderParser().parsebytes(bytes(part.get_payload(decode=True) or b""))
            return _clean(headers.get("Message-ID"))
    return None


def _clean(value: object) -> str | None:
    """A header value on one line, whitespace runs collapsed; None when empty."""
    # (a report is mail, not a person's input: a NUL in it is dropped, not refused)
    text = " ".join(single_line(str(value).replace("\x00", "")).split()) if value is not None else ""
    return text or None


def _address(value: object) -> str | None:
    """`rfc822; Reader@Example.com` or `<reader@example.com>` -> the bare address."""
    text = _clean(value)
    if text is None:
        return None
    address = text.split(";", 1)[1] if ";" in text else text
    return address.strip().strip("<>").strip() or None


def _delivery_status(parts: list[MIMEPart], message_id: str | None) -> list[Report]:
    blocks = _fields(parts, "message/delivery-status")
    reports = []
    for block in blocks[1:]:  # the first block is about the message, the others one recipient each
        action = (_clean(block.get("Action")) or "").lower()
        if action not in ("failed", "delayed"):
            continue  # delivered, relayed, expanded: nothing went wrong
        reports.append(
            Report(
                kind="bounce" if action == "failed" else "delay",
                recipient=_address(block.get("Final-Recipient")),
                original_recipient=_address(block.get("Original-Recipient")),
                status=_clean(block.get("Status")),
                diagnostic=_clean(block.get("Diagnostic-Code")),
                message_id=message_id,
            )
        )
    if not blocks[1:]:
        raise NotAReport("the delivery status part names no recipient")
    return reports


def _feedback(parts: list[MIMEPart], message_id: str | None) -> list[Report]:
    [fields, *_] = _fields(parts, "message/feedback-report") or [Message()]
    feedback_type = (_clean(fields.get("Feedback-Type")) or "abuse").lower()
    if feedback_type not in ("abuse", "fraud", "virus", "other"):
        return []  # not-spam, auth-failure reports: not a reader's complaint
    recipient = _address(fields.get("Original-Rcpt-To"))
    return [
        Report(
            kind="complaint",
            recipient=recipient,
            original_recipient=recipient,
            status=None,
            diagnostic=f"feedback report: {feedback_type}",
            message_id=message_id,
        )
    ]


# --- recording them ---------------------------------------------------------------------------------------

# What the pipeline writes: <campaign.row.mac@domain> (see delivery.ledger.MessageIds).
_OUR_MESSAGE_ID = re.compile(rf"<(\d{{1,18}})\.(\d{{1,18}})\.([0-9a-f]{{{MESSAGE_MAC_LENGTH}}})@[^<>\s]+>")


def ingest(session: Session, settings: Settings, data: bytes, *, recipient: str | None = None) -> list[Outcome]:
    """Parse one report and record what it says on the ledger; raises NotAReport for anything else.

    `recipient` is the envelope recipient the report was delivered to (postfix's pipe passes it); with
    VERP (VERP_ADDRESS, or a list's own address), that return path (or else the report's Delivered-To or
    To header) names the delivery when the report quotes no Message-ID of ours.
    """
    reports = parse(data)
    verp_id = None
    ours = verp.known_addresses(session, settings.verp_address)
    if ours:
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
        written = [*headers.get_all("Delivered-To", []), *headers.get_all("To", [])]
        named = [_address(recipient), *(address for _, address in getaddresses([str(v) for v in written]))]
        verp_id = verp.delivery_of(Tokens.from_settings(settings), ours, named)
    return [_record(session, settings, report, verp_id) for report in reports]


def _record(session: Session, settings: Settings, report: Report, verp_id: int | None = None) -> Outcome:
    if report.kind == "delay":
        return Outcome(report, None, None, "ignored", "delayed: the reporting server is still trying")
    row, reason = delivery_of(session, settings, report.message_id)
    if verp_id is not None and not _OUR_MESSAGE_ID.fullmatch(report.message_id or ""):
        # No Message-ID of ours quoted (none at all, or one a relay put in its place): the return path
        # names the delivery. One of ours that does not verify stays a forgery, whatever the address.
        row, reason = session.get(Delivery, verp_id), "no such delivery (the campaign may have been deleted)"
    if row is None:
        return Outcome(report, None, None, "ignored", reason)
    return apply(session, settings, row, report, source="mail")


def named_delivery(macs: MessageMacs, message_id: str | None) -> tuple[int, int] | str:
    """(campaign id, delivery id) of a Message-ID this installation wrote, or why it is not one."""
    found = _OUR_MESSAGE_ID.fullmatch(message_id or "")
    if found is None:
        return "the report quotes no Message-ID of a campaign message"
    campaign_id, delivery_id, mac = int(found[1]), int(found[2]), found[3]
    if not macs.verify(campaign_id, delivery_id, mac):
        return "the quoted Message-ID was not written by this installation"
    return campaign_id, delivery_id


def delivery_of(session: Session, settings: Settings, message_id: str | None) -> tuple[Delivery | None, str]:
    """The ledger row a Message-ID of ours names, or None and why not (not ours, forged, deleted)."""
    named = named_delivery(MessageMacs.from_settings(settings), message_id)
    if isinstance(named, str):
        return None, named
    campaign_id, delivery_id = named
    row = session.get(Delivery, delivery_id)
    if row is None or row.campaign_id != campaign_id:
        return None, "no such delivery (the campaign may have been deleted)"
    return row, ""


def apply(
    session: Session, settings: Settings, row: Delivery, report: Report, *, source: str = "mail", judge: bool = True
) -> Outcome:
    """`_apply`, counted in newsletter_bounces_total{kind,source} when it acted on a bounce or complaint.
    `judge=False`: the caller runs the circuit breaker (`breaker_verdict`) itself, once for a batch."""
    outcome = _apply(session, settings, row, report, source=source, judge=judge)
    if outcome.result in ("suppressed", "recorded") and report.kind in ("bounce", "complaint"):
        hard = report.hard if report.hard is not None else is_hard_status(report.status or "")
        kind = "complaint" if report.kind == "complaint" else ("hard" if hard else "soft")
        metrics.BOUNCES.labels(kind, metrics.word(source)).inc()
    return outcome


def _apply(session: Session, settings: Settings, row: Delivery, report: Report, *, source: str, judge: bool) -> Outcome:
    """What a report about one delivery does, whichever way it came (mail here, a provider's webhook in
    newsletter/providers/): a hard bounce or a complaint suppresses the recipient, a soft bounce is
    recorded and suppresses only the SOFT_BOUNCE_LIMIT-th within SOFT_BOUNCE_DAYS, a delivery confirms a
    row whose fate a crash left unknown. `source` ("mail", or the provider's name) is kept on the event."""

    def outcome(result: Literal["suppressed", "recorded", "already recorded", "ignored"], reason: str) -> Outcome:
        return Outcome(report, row.id, row.campaign_id, result, reason)

    if report.kind == "delay":
        return outcome("ignored", "delayed: the reporting server is still trying")
    if report.kind == "delivered":
        if confirm_delivered(session, [row.id]):
            return outcome("recorded", CONFIRMED)
        return outcome("ignored", "delivered: nothing to change")
    kind = EventType.complaint if report.kind == "complaint" else EventType.bounce
    # the recipient's address and whether this report was read before, in one round trip
    seen_before = select(Event.id).where(Event.delivery_id == row.id, Event.type == kind).exists()
    found = session.execute(select(Subscriber.email, seen_before).where(Subscriber.id == row.subscriber_id)).first()
    address, seen = (found[0], found[1]) if found is not None else ("", False)
    # A report acts on its delivery's recipient only. A bounce that names other addresses (a forwarded
    # copy, or a forger's own address) changes nothing; feedback loops redact the recipient, so a
    # complaint's Message-ID alone says whose copy it was, and it never acts on the address it names.
    named = {a.lower() for a in (report.recipient, report.original_recipient) if a}
    if report.kind == "bounce" and address.lower() not in named:
        return outcome("ignored", "the bounce names another address than this delivery's recipient")
    if seen:
        return outcome("already recorded", "this report was read before")

    if report.kind == "complaint":
        tracking.record_complaint(session, row.id, detail=report.detail[:2000], source=source)
        verdict = breaker_verdict(session, settings, row.campaign_id) if judge else ""
        return outcome("suppressed", "complaint: never mailed again" + verdict)

    hard = report.hard if report.hard is not None else is_hard_status(report.status or "")
    bounce = _bounced(session, row, report, source, hard=hard)
    suppressed = hard
    if hard:
        suppress_quickly(session, address, SuppressionReason.hard_bounce, detail=report.detail[:2000])
    elif suppress_if_soft_bouncing(session, settings, row.subscriber_id, address):
        bounce.bounce_class = SOFT_SUPPRESSED
        suppressed = True
    ids = (row.subscriber_id, row.list_id, row.campaign_id, row.id)
    outbox.emit_bounce(session, address, ids, hard=hard, suppressed=suppressed, detail=report.detail)
    if hard:
        why = "hard bounce: the address does not exist or refuses mail for good"
        return outcome("suppressed", why + (breaker_verdict(session, settings, row.campaign_id) if judge else ""))
    if suppressed:
        return outcome(
            "suppressed",
            f"soft bounce: {settings.soft_bounce_limit} of the address's deliveries bounced within "
            f"{settings.soft_bounce_days:g} days, so it is suppressed",
        )
    return outcome("recorded", "soft bounce: recorded, the address stays")


def breaker_verdict(session: Session, settings: Settings, campaign_id: int) -> str:
    """The circuit breaker's verdict after a complaint or hard bounce about one of a campaign's messages,
    for the outcome's reason: the campaigns it paused, or ""."""
    paused = reputation.check(session, settings, campaign_id)
    return (
        f"; paused campaigns {', '.join(map(str, paused))} ({reputation.REASON_PREFIX} see their status)"
        if paused
        else ""
    )


CONFIRMED = "delivered: the row a crash left unknown is sent"


def confirm_delivered(session: Session, delivery_ids: list[int]) -> set[int]:
    """Rows a crash left `unknown` that a provider says were delivered become `sent`, in one statement
    (deliveries are most of what providers report); the ids that changed."""
    if not delivery_ids:
        return set()
    changed = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(delivery_ids), Delivery.status == DeliveryStatus.unknown)
        .values(status=DeliveryStatus.sent, smtp_text="delivered, as the provider reported after a crash")
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    ids = set(changed.scalars())
    for delivery_id in ids:
        row = session.identity_map.get(session.identity_key(Delivery, delivery_id))
        if row is not None:
            session.expire(row)
    return ids


def _bounced(session: Session, row: Delivery, report: Report, source: str, *, hard: bool) -> Event:
    """The bounce event, and the ledger row turned `failed`: the message did not arrive after all."""
    bounce = Event(
        type=EventType.bounce,
        campaign_id=row.campaign_id,
        delivery_id=row.id,
        subscriber_id=row.subscriber_id,
        list_id=row.list_id,
        detail=report.detail[:2000],
        source=source,
        bounce_class="hard" if hard else "soft",
    )
    session.add(bounce)
    code = re.match(r"\s*smtp\s*;\s*([2-5]\d\d)\b", report.diagnostic or "", re.IGNORECASE)
    session.execute(
        update(Delivery)
        .where(Delivery.id == row.id, Delivery.status.in_([DeliveryStatus.sent, DeliveryStatus.unknown]))
        .values(
            status=DeliveryStatus.failed,
            smtp_code=int(code[1]) if code else None,
            smtp_text=f"bounced after the relay accepted it: {report.detail}"[:2000],
        )
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    return bounce


# --- the bounces page: what reports came in and what they did (issue 14) ---


@dataclass(frozen=True)
class Received:
    """A bounce or complaint that matched a delivery, as the admin's bounces page lists it."""

    event_id: int
    at: dt.datetime
    kind: str  # bounce or complaint
    source: str | None  # "mail" or the provider's name; None for reports read before 0008
    detail: str | None
    campaign_id: int | None
    campaign_subject: str | None
    delivery_status: str | None
    subscriber_id: int | None
    email: str | None
    suppressed: Suppression | None  # what was done: the suppression in force, else only recorded


def recent(
    session: Session, *, kind: EventType | None = None, before_id: int | None = None, limit: int = 50
) -> list[Received]:
    """Bounce and complaint reports newest first, older than event `before_id` (the next page's keyset)."""
    kinds = [kind] if kind is not None else [EventType.bounce, EventType.complaint]
    query = (
        select(Event, Campaign.subject, Delivery.status, Subscriber.email, Subscriber.email_hash)
        .outerjoin(Campaign, Campaign.id == Event.campaign_id)
        .outerjoin(Delivery, Delivery.id == Event.delivery_id)
        .outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.type.in_(kinds))
        .order_by(Event.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(Event.id < before_id)
    rows = session.execute(query).all()
    hashes = {row.email_hash for row in rows if row.email_hash}
    suppressions = {
        s.email_hash: s for s in session.scalars(select(Suppression).where(Suppression.email_hash.in_(hashes)))
    } if hashes else {}  # fmt: skip
    return [
        Received(
            event.id,
            event.created_at,
            event.type.value,
            event.source,
            event.detail,
            event.campaign_id,
            subject,
            status.value if status else None,
            event.subscriber_id,
            address,
            suppressions.get(email_hash or ""),
        )
        for event, subject, status, address, email_hash in rows
    ]
