"""GDPR: export everything stored about one subscriber, and erase their personal data for good.

Erasing keeps the rows that statistics count (ledger rows, events) but strips everything personal from
them, and keeps only the address's hash on the suppression list, so the address is never mailed again
(also if it is imported or subscribes later) while the address itself is gone.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter import outbox
from newsletter.models import (
    Campaign,
    Delivery,
    Event,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)

audit = logging.getLogger("newsletter.audit")
ERASED_DOMAIN = "erased.invalid"  # RFC 2606: .invalid can never be a real mailbox


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


# long: one literal is the whole shape of the export document, read top to bottom like the JSON it becomes
def export_subscriber(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything about one subscriber as JSON-ready data: profile, consent records, deliveries, events."""
    subscriptions = session.execute(
        select(MailingList.slug, MailingList.name, Subscription)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id == subscriber.id)
        .order_by(Subscription.id)
    )
    deliveries = session.execute(
        select(Delivery, Campaign.subject)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id)
    )
    events = session.scalars(select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id))
    suppression = session.scalar(select(Suppression).where(Suppression.email_hash == subscriber.email_hash))
    return {
        "subscriber": {
            "id": subscriber.id,
            "email": subscriber.email,
            "name": subscriber.name,
            "attributes": subscriber.attributes,
            "status": subscriber.status.value,
            "created_at": _iso(subscriber.created_at),
            "updated_at": _iso(subscriber.updated_at),
        },
        "subscriptions": [
            {
                "list": slug,
                "list_name": list_name,
                "status": s.status.value,
                "source": s.source.value,
                "consent_at": _iso(s.consent_at),
                "consent_ip": s.consent_ip,
                "confirmed_at": _iso(s.confirmed_at),
                "confirmation_sent_at": _iso(s.confirmation_sent_at),
                "unsubscribed_at": _iso(s.unsubscribed_at),
                "unsubscribe_source": s.unsubscribe_source,
                "reason": s.reason,
                "sections": s.sections,
                "created_at": _iso(s.created_at),
            }
            for slug, list_name, s in subscriptions
        ],
        "deliveries": [
            {
                "campaign_id": d.campaign_id,
                "subject": subject,
                "status": d.status.value,
                "attempts": d.attempts,
                "message_id": d.message_id,
                "smtp_code": d.smtp_code,
                "smtp_text": d.smtp_text,
                "sent_at": _iso(d.sent_at),
            }
            for d, subject in deliveries
        ],
        "events": [
            {
                "type": e.type.value,
                "campaign_id": e.campaign_id,
                "url": e.url,
                "detail": e.detail,
                "created_at": _iso(e.created_at),
            }
            for e in events
        ],
        "suppression": None
        if suppression is None
        else {
            "reason": suppression.reason.value,
            "detail": suppression.detail,
            "created_at": _iso(suppression.created_at),
        },
    }


def erase_subscriber(session: Session, subscriber: Subscriber) -> None:
    """Replace every personal datum of a subscriber; keep counts, keep the address's hash suppressed."""
    key = subscriber.email_hash
    suppression = session.scalar(select(Suppression).where(Suppression.email_hash == key))
    if suppression is None:
        session.add(Suppression(email_hash=key, email=None, reason=SuppressionReason.erased))
    else:
        # Keep why it was suppressed first, but not the address or the bounce text that may quote it.
        suppression.email = None
        suppression.detail = None
    subscriber.email = f"erased-{subscriber.id}@{ERASED_DOMAIN}"
    subscriber.email_domain = ERASED_DOMAIN
    subscriber.name = ""
    subscriber.attributes = {}
    subscriber.status = SubscriberStatus.blocklisted
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id == subscriber.id)
        .values(consent_ip=None, reason=None, sections=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id == subscriber.id, Subscription.status != SubscriptionStatus.unsubscribed)
        .values(status=SubscriptionStatus.unsubscribed, unsubscribe_source="erased")
        .execution_options(synchronize_session=False)
    )
    # SMTP replies often quote the address ("550 <ana@example.com>: unknown user"); the code stays for stats.
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id)
        .values(smtp_text=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Event)
        .where(Event.subscriber_id == subscriber.id)
        .values(detail=None)
        .execution_options(synchronize_session=False)
    )
    outbox.forget_subscriber(session, subscriber.id)  # webhook payloads name them too
    session.flush()
    session.expire_all()
    audit.warning("subscriber %s erased (hash %s kept on the suppression list)", subscriber.id, key[:12])
