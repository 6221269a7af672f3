"""The double opt-in email: claiming the right to send a subscription's confirmation, and sending it.

Claims are conditional UPDATEs, so two requests or two workers never email the same person twice; a failed
send clears the claim so the person can ask again at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import is_postgres, utcnow
from newsletter.mailer import Mailer, SendResult
from newsletter.messages import compose_confirmation
from newsletter.models import SubscriberStatus, Subscription, SubscriptionSource, SubscriptionStatus
from newsletter.suppressions import is_suppressed
from newsletter.tokens import Tokens


def claim_confirmation(
    session: Session, subscription: Subscription, *, resend_hours: float = 24, now: dt.datetime | None = None
) -> bool:
    """Claim the right to send a pending subscription's confirmation email now; False within the resend window.

    A conditional UPDATE: of two concurrent requests only one matches, as PostgreSQL re-checks the WHERE
    clause after the first commits (and SQLite has a single writer). The caller sends after committing.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(hours=resend_hours)
    claimed = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription.id,
            Subscription.status == SubscriptionStatus.pending,
            or_(Subscription.confirmation_sent_at.is_(None), Subscription.confirmation_sent_at <= cutoff),
        )
        .values(confirmation_sent_at=now)
        .returning(Subscription.id)
        .execution_options(synchronize_session=False)
    ).first()
    session.expire(subscription, ["confirmation_sent_at"])
    return claimed is not None


def send_confirmation(session: Session, settings: Settings, mailer: Mailer, subscription_id: int) -> SendResult | None:
    """Send the confirmation email of a pending subscription; None when there is nothing to send any more.

    A failed send clears `confirmation_sent_at`, so the person can ask again at once instead of waiting
    out the resend window for an email that never left.
    """
    return send_confirmations(session, settings, mailer, [subscription_id]).get(subscription_id)


def send_confirmations(
    session: Session,
    settings: Settings,
    mailer: Mailer,
    subscription_ids: Sequence[int],
    throttle: Callable[[int], None] | None = None,
) -> dict[int, SendResult]:
    """Confirmation emails for several pending subscriptions over one connection (imports send thousands)."""
    tokens = Tokens(settings.secret_key)
    results: dict[int, SendResult] = {}
    with mailer.session() as smtp:
        for subscription_id in subscription_ids:
            subscription = session.get(Subscription, subscription_id)
            if subscription is None or subscription.status != SubscriptionStatus.pending:
                continue
            subscriber = subscription.subscriber
            if subscriber.status != SubscriberStatus.active or is_suppressed(session, subscriber.email):
                continue
            if throttle is not None:
                throttle(1)
            data = compose_confirmation(settings, tokens, subscription)
            result = smtp.send(subscription.mailing_list.from_email, subscriber.email, data)
            if not result.ok:
                subscription.confirmation_sent_at = None
            results[subscription_id] = result
    session.flush()
    return results


def claim_unsent_confirmations(session: Session, list_id: int, *, limit: int) -> list[int]:
    """Pending subscriptions of a list never sent a confirmation (e.g. imported): mark `limit` of them sent.

    Marking before sending means two workers never email the same person; a failed send clears the mark.
    """
    candidates = (
        select(Subscription.id)
        .where(
            Subscription.list_id == list_id,
            Subscription.status == SubscriptionStatus.pending,
            Subscription.confirmation_sent_at.is_(None),
        )
        .order_by(Subscription.id)
        .limit(limit)
    )
    if is_postgres(session):
        candidates = candidates.with_for_update(skip_locked=True)
    return list(
        session.scalars(
            update(Subscription)
            .where(Subscription.id.in_(candidates.scalar_subquery()))
            .values(confirmation_sent_at=utcnow())
            .returning(Subscription.id)
            .execution_options(synchronize_session=False)
        )
    )


def pending_imported(session: Session, list_id: int) -> int:
    """Imported subscriptions still waiting for their first confirmation email."""
    return (
        session.scalar(
            select(func.count()).where(
                Subscription.list_id == list_id,
                Subscription.status == SubscriptionStatus.pending,
                Subscription.source == SubscriptionSource.import_,
                Subscription.confirmation_sent_at.is_(None),
            )
        )
        or 0
    )
