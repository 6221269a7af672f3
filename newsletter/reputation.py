"""The reputation circuit breaker: mailbox providers judge a sending domain by the share of its mail that
is reported as spam (Gmail's published ceiling is 0.3%) or bounces for good, and a domain past those
loses the inbox for every list that sends from it. So each recorded complaint or hard bounce looks at
the last REPUTATION_WINDOW messages accepted for that domain, across all its campaigns; past
COMPLAINT_RATE_LIMIT or HARD_BOUNCE_RATE_LIMIT, every sending campaign of the domain is paused with the
rates as its reason, and a warning is logged. Resuming such a campaign is an editor's decision that
overrides the rates (the resume says which).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import distinct, func, select, update
from sqlalchemy.orm import Session

from newsletter import logs, outbox
from newsletter.config import Settings
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    Event,
    EventCount,
    EventType,
    MailingList,
    Subscriber,
    Suppression,
    SuppressionReason,
    campaign_lists,
)

log = logging.getLogger(__name__)

REASON_PREFIX = "reputation breaker:"
_LATEST_CAMPAIGNS = 20


@dataclass(frozen=True)
class BreakerAlert:
    """Campaigns the breaker paused for one verdict (the same reason: one domain past its limits)."""

    reason: str  # the rates and the domain, without REASON_PREFIX
    campaigns: list[tuple[int, str]]  # (id, subject)


def alerts(session: Session) -> list[BreakerAlert]:
    """The campaigns paused by the breaker and not resumed yet, by verdict (the dashboard's alert): one query."""
    paused = session.execute(
        select(Campaign.id, Campaign.subject, Campaign.pause_reason)
        .where(Campaign.status == CampaignStatus.paused, Campaign.pause_reason.startswith(REASON_PREFIX))
        .order_by(Campaign.id)
    )
    by_reason: dict[str, list[tuple[int, str]]] = {}
    for campaign_id, subject, reason in paused:
        by_reason.setdefault((reason or "").removeprefix(REASON_PREFIX).strip(), []).append((campaign_id, subject))
    return [BreakerAlert(reason, campaigns) for reason, campaigns in by_reason.items()]


@dataclass(frozen=True)
class Rates:
    domain: str
    messages: int  # the last messages accepted for the domain (at most REPUTATION_WINDOW)
    complaints: int
    hard_bounces: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.messages if self.messages else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.messages if self.messages else 0.0

    def verdict(self, settings: Settings) -> str | None:
        """Why the domain's campaigns must pause, or None while its rates are within the limits."""
        if self.messages < settings.reputation_min_messages:
            return None
        of = f"of the last {self.messages} messages from {self.domain}"
        complaints = settings.complaint_rate_limit
        if complaints and self.complaint_rate > complaints:
            return (
                f"{REASON_PREFIX} complaint rate {self.complaint_rate:.2%} ({self.complaints} {of}) is above "
                f"{complaints:.2%}; hard-bounce rate {self.hard_bounce_rate:.2%}"
            )
        bounces = settings.hard_bounce_rate_limit
        if bounces and self.hard_bounce_rate > bounces:
            return (
                f"{REASON_PREFIX} hard-bounce rate {self.hard_bounce_rate:.2%} ({self.hard_bounces} {of}) is "
                f"above {bounces:.2%}; complaint rate {self.complaint_rate:.2%}"
            )
        return None


def sending_domain(session: Session, campaign_id: int) -> str | None:
    """The domain a campaign's mail comes from: its first list's From address (as composing uses)."""
    address = session.scalar(
        select(MailingList.from_email)
        .join(campaign_lists, campaign_lists.c.list_id == MailingList.id)
        .where(campaign_lists.c.campaign_id == campaign_id)
        .order_by(MailingList.id)
        .limit(1)
    )
    return address.rpartition("@")[2].lower() if address else None


def _of_domain(domain: str) -> object:
    return func.lower(MailingList.from_email).like(f"%@{domain}")


def _campaigns_of(domain: str) -> Any:
    return (
        select(campaign_lists.c.campaign_id)
        .join(MailingList, MailingList.id == campaign_lists.c.list_id)
        .where(_of_domain(domain))  # type: ignore[arg-type]
    )


def _latest_campaigns(session: Session, domain: str) -> list[int]:
    # The last messages are among those of the domain's latest campaigns: the ledger is searched (and
    # sorted) there only, not across every message the installation ever sent.
    return list(
        session.scalars(
            select(Campaign.id)
            .where(Campaign.id.in_(_campaigns_of(domain)), Campaign.started_at.is_not(None))
            .order_by(Campaign.started_at.desc())
            .limit(_LATEST_CAMPAIGNS)
        )
    )


def _could_trip(session: Session, settings: Settings, latest: list[int]) -> bool:
    """Whether the reports about the latest campaigns are enough to pass a limit in any window the
    breaker judges (at least REPUTATION_MIN_MESSAGES): one cheap count on the events' index, so that the
    window is only measured when it matters."""
    # from the event counters (migration 0014): a few rows per campaign, whatever their size
    reported = session.execute(
        select(EventCount.kind, func.sum(EventCount.n))
        .where(EventCount.campaign_id.in_(latest), EventCount.kind.in_([EventType.complaint, EventType.bounce]))
        .group_by(EventCount.kind)
    )
    counts = {EventType(kind): int(count) for kind, count in reported}
    floor = settings.reputation_min_messages
    complaints, bounces = settings.complaint_rate_limit, settings.hard_bounce_rate_limit
    return bool(
        (complaints and counts.get(EventType.complaint, 0) > complaints * floor)
        or (bounces and counts.get(EventType.bounce, 0) > bounces * floor)
    )


def rates(session: Session, settings: Settings, domain: str, latest: list[int] | None = None) -> Rates:
    """Complaints and hard bounces among the last REPUTATION_WINDOW messages accepted for the domain."""
    latest = _latest_campaigns(session, domain) if latest is None else latest
    recent = (
        select(Delivery.id.label("id"))
        .join(MailingList, MailingList.id == Delivery.list_id)
        .where(Delivery.campaign_id.in_(latest), Delivery.sent_at.is_not(None), _of_domain(domain))  # type: ignore[arg-type]
        .order_by(Delivery.sent_at.desc())
        .limit(settings.reputation_window)
        .subquery()
    )
    messages = session.scalar(select(func.count()).select_from(recent)) or 0
    complaints = session.scalar(
        select(func.count(distinct(Event.delivery_id))).where(
            Event.type == EventType.complaint, Event.delivery_id.in_(select(recent.c.id))
        )
    )
    hard_bounces = session.scalar(
        select(func.count(distinct(Event.delivery_id)))
        .join(Subscriber, Subscriber.id == Event.subscriber_id)
        .join(Suppression, Suppression.email_hash == Subscriber.email_hash)
        .where(
            Event.type == EventType.bounce,
            Event.delivery_id.in_(select(recent.c.id)),
            Suppression.reason == SuppressionReason.hard_bounce,
        )
    )
    return Rates(domain, messages, complaints or 0, hard_bounces or 0)


def check(session: Session, settings: Settings, campaign_id: int) -> list[int]:
    """After a complaint or hard bounce about one of a campaign's messages: pause every sending or
    scheduled campaign of its domain when the domain's rates are past the limits; the paused ids."""
    domain = sending_domain(session, campaign_id)
    if domain is None:
        return []
    latest = _latest_campaigns(session, domain)
    if not _could_trip(session, settings, latest):
        return []
    reason = rates(session, settings, domain, latest).verdict(settings)
    if reason is None:
        return []
    paused = list(
        session.scalars(
            update(Campaign)
            .where(
                Campaign.id.in_(_campaigns_of(domain)),
                Campaign.status.in_([CampaignStatus.sending, CampaignStatus.scheduled]),
            )
            .values(status=CampaignStatus.paused, pause_reason=reason)
            .returning(Campaign.id)
            .execution_options(synchronize_session=False)
        )
    )
    for campaign_id in sorted(paused):  # the same line as every other campaign state change
        logs.event(
            log, "campaign_state", f"campaign {campaign_id} is paused: {reason}",
            level=logging.WARNING, campaign=campaign_id, status=CampaignStatus.paused.value, reason=reason,
        )  # fmt: skip
        outbox.emit_campaign(session, "campaign.paused", campaign_id, reason=reason, by="reputation breaker")
    session.expire_all()
    return sorted(paused)
