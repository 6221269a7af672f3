"""Bounces, complaints and deliveries reported by the providers mail is sent through (Amazon SES, SendGrid,
Postmark, Mailgun), by webhook: one module per provider verifies its request (signature, timestamp,
allowlist) before it reads anything else in it, and maps its events to one model; `record` matches each
event to its ledger row and gives it exactly the effects of a report that came back by mail
(`bounces.apply`).

An event is matched by the Message-ID the pipeline wrote (verified by its MAC, as for mail) when the
provider passes it on, else by the id the provider gave the message when it accepted it
(`deliveries.provider_message_id`, kept from its "250 Ok: queued as ..." reply).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import bounces
from newsletter.config import Settings
from newsletter.delivery.composing import MessageMacs
from newsletter.errors import Invalid, NotFound, Unauthenticated
from newsletter.models import Delivery
from newsletter.providers import batch

Kind = Literal["hard_bounce", "soft_bounce", "complaint", "delivered"]


class WebhookOff(NotFound):
    def __init__(self, provider: str, setting: str) -> None:
        super().__init__(f"the {provider} webhook is not enabled here (set NEWSLETTER_{setting})")


class NotVerified(Unauthenticated):
    """The request is not provably the provider's: bad or missing signature or credentials, a stale or
    replayed request, a topic or certificate we do not trust. Nothing of it was acted on.

    Its 401 challenges for credentials only where the provider sends some (HTTP basic auth: Postmark, SNS
    when configured); a signature is not something to be asked for again."""

    challenge = None

    def __init__(self, message: str, *, challenge: str | None = None) -> None:
        super().__init__(message)
        self.challenge = challenge


BASIC_CHALLENGE = 'Basic realm="newsletter provider webhooks", charset="UTF-8"'


class BadPayload(Invalid):
    """A verified request whose body is not the provider's event format."""


@dataclass(frozen=True)
class ProviderEvent:
    kind: Kind
    recipient: str | None
    message_id: str | None = None  # our Message-ID, <...>, when the provider passes the header on
    provider_message_id: str | None = None  # the provider's own id of the message
    status: str | None = None  # RFC 3463, e.g. 5.1.1
    diagnostic: str | None = None  # the provider's or remote server's words
    event_id: str | None = None  # the provider's id of this event (the same on its retries), when it has one

    def report(self) -> bounces.Report:
        kind = {"hard_bounce": "bounce", "soft_bounce": "bounce"}.get(self.kind, self.kind)
        words = " ".join(p for p in (self.status, self.diagnostic) if p) or None
        return bounces.Report(
            kind=kind,  # type: ignore[arg-type]  # one of the four by the mapping above
            recipient=self.recipient,
            original_recipient=self.recipient,
            status=self.status,
            diagnostic=words[:1000] if words else None,
            message_id=self.message_id,
            hard=self.kind == "hard_bounce" if self.kind in ("hard_bounce", "soft_bounce") else None,
        )


@dataclass(frozen=True)
class Notice:
    """What a verified request said: events, or (SES) the confirmation of a subscription to a topic."""

    events: list[ProviderEvent]
    confirmed_topic: str | None = None


def record(
    session: Session, settings: Settings, events: list[ProviderEvent], *, source: str = "provider"
) -> list[bounces.Outcome]:
    """Each event's effect on its ledger row; an event matching no row of ours changes nothing. The rows
    of a batch are found with two queries, and its deliveries confirmed with one: a provider reports
    every delivered message, bounces and complaints are few. The circuit breaker judges each campaign
    that had a complaint or hard bounce once, after the batch's effects (the batch is one recording group)."""
    rows = _rows_of(session, settings, events)
    delivered = [row.id for event, row in zip(events, rows, strict=True) if row and event.kind == "delivered"]
    confirmed = bounces.confirm_delivered(session, delivered)
    reports = [event.report() for event in events]
    found = [(row, report) for row, report in zip(rows, reports, strict=True) if row is not None]
    batched = iter(batch.apply_many(session, found, source=source))
    outcomes = []
    for event, row, report in zip(events, rows, reports, strict=True):
        done = next(batched) if row is not None else None
        if done is not None:
            outcome = done
        elif row is None:
            outcome = bounces.Outcome(report, None, None, "ignored", "no delivery of ours has this message id")
        elif event.kind == "delivered":
            result: Literal["recorded", "ignored"] = "recorded" if row.id in confirmed else "ignored"
            reason = bounces.CONFIRMED if row.id in confirmed else "delivered: nothing to change"
            outcome = bounces.Outcome(report, row.id, row.campaign_id, result, reason)
        else:
            outcome = bounces.apply(session, settings, row, report, source=source, judge=False)
        outcomes.append(outcome)
    return _judged(session, settings, events, outcomes)


def _judged(
    session: Session, settings: Settings, events: list[ProviderEvent], outcomes: list[bounces.Outcome]
) -> list[bounces.Outcome]:
    """The breaker's verdict on each campaign a complaint or hard bounce of the batch suppressed for, added
    to those events' reasons."""
    judged = [
        n
        for n, (event, outcome) in enumerate(zip(events, outcomes, strict=True))
        if outcome.result == "suppressed" and event.kind in ("complaint", "hard_bounce")
    ]
    verdicts = {
        campaign_id: bounces.breaker_verdict(session, settings, campaign_id)
        for campaign_id in dict.fromkeys(outcomes[n].campaign_id for n in judged)
        if campaign_id is not None
    }
    for n in judged:
        verdict = verdicts.get(outcomes[n].campaign_id or 0, "")
        if verdict:
            outcomes[n] = replace(outcomes[n], reason=outcomes[n].reason + verdict)
    return outcomes


def _rows_of(session: Session, settings: Settings, events: list[ProviderEvent]) -> list[Delivery | None]:
    """Each event's ledger row: the one our Message-ID names (its MAC verified), else the one with the
    provider's id of the message."""
    macs = MessageMacs.from_settings(settings)
    ours = [bounces.named_delivery(macs, normalise_message_id(e.message_id)) if e.message_id else "" for e in events]
    wanted = {named[1] for named in ours if not isinstance(named, str)}
    by_id = {row.id: row for row in session.scalars(select(Delivery).where(Delivery.id.in_(wanted)))} if wanted else {}
    provider_ids = {e.provider_message_id[:255] for e in events if e.provider_message_id}
    by_provider_id = (
        {
            row.provider_message_id: row
            for row in session.scalars(select(Delivery).where(Delivery.provider_message_id.in_(provider_ids)))
        }
        if provider_ids
        else {}
    )
    rows: list[Delivery | None] = []
    for event, named in zip(events, ours, strict=True):
        row = by_id.get(named[1]) if not isinstance(named, str) else None
        if row is not None and not isinstance(named, str) and row.campaign_id != named[0]:
            row = None
        if row is None and event.provider_message_id:
            row = by_provider_id.get(event.provider_message_id[:255])
        rows.append(row)
    return rows


def normalise_message_id(value: str) -> str:
    """`<id@host>` whether or not the provider kept the angle brackets."""
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def check_basic_auth(headers: Mapping[str, str], expected: str) -> None:
    """HTTP basic auth against USER:PASSWORD, compared in constant time; raises NotVerified."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
    except ValueError:
        given = b""
    if not hmac.compare_digest(given, expected.encode()):
        raise NotVerified("wrong or missing HTTP basic auth credentials", challenge=BASIC_CHALLENGE)


def check_fresh(moment: dt.datetime, max_age: dt.timedelta, now: dt.datetime | None = None) -> None:
    """Refuse a request signed longer ago than `max_age` (or more than 5 minutes ahead of our clock)."""
    now = now or dt.datetime.now(dt.UTC)
    if moment < now - max_age:
        raise NotVerified(f"the request is too old: signed at {moment:%Y-%m-%d %H:%M:%S} UTC")
    if moment > now + dt.timedelta(minutes=5):
        raise NotVerified(f"the request is signed in the future: {moment:%Y-%m-%d %H:%M:%S} UTC")


def unix_time(value: object) -> dt.datetime:
    """A Unix timestamp as the providers send it (a number or a string of digits); NotVerified if not one."""
    try:
        return dt.datetime.fromtimestamp(float(str(value)), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise NotVerified("the request's timestamp is missing or not a Unix time") from None


def text_of(value: object) -> str | None:
    """A payload field as one trimmed line of text, at most 1,000 characters; None when absent or empty."""
    if value is None:
        return None
    return " ".join(str(value).split())[:1000] or None


def object_of(value: object) -> dict[str, Any]:
    """A payload field that should be a JSON object, or {} when it is anything else."""
    return value if isinstance(value, dict) else {}
