"""The ledger (`deliveries`): plan a campaign's rows, cut them into batches, claim, record, release.

A row moves pending -> sending (claimed, in one set-based UPDATE) -> sent | failed | pending (retry later) |
unknown (a crash left its fate unknown) | skipped (unsubscribed meanwhile, or campaign cancelled). Every
write here is set-based: one statement per group of rows, never one per recipient (each row's own values,
as a deferred row's next attempt, picked by id), except permanent failures, which are rare and each bring
a bounce event and perhaps a suppression.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import Session

from newsletter import outbox
from newsletter.config import Settings
from newsletter.db import is_postgres, utcnow
from newsletter.delivery.deferrals import (
    PG_RECORD_DEFERRED,
    PG_RECORD_DEFERRED_SQL,
    Deferral,
    deferred_params,
    record_deferred,
)
from newsletter.mailer import SendResult, classify
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    campaign_lists,
)
from newsletter.segments.filters import compile_filter, parse
from newsletter.smtpreplies import provider_message_id
from newsletter.suppressions import SOFT_SUPPRESSED, not_in_blocked_domain, suppress, suppress_if_soft_bouncing

# Kept on a row resent under UNKNOWN_POLICY=resend even once it is sent: it marks the recipients who may
# have two copies, so the campaign's stats can say how many.
RESENT_AFTER_UNKNOWN = "resent: a worker died while an earlier attempt was in flight, so it may have arrived too"
NO_LONGER_WANTED = "unsubscribed, blocked or suppressed before sending"
NOTHING_WANTED = "none of this digest's sections is among those the subscriber chose"

_PENDING, _SENDING, _SENT, _SKIPPED = (
    DeliveryStatus.pending.value,
    DeliveryStatus.sending.value,
    DeliveryStatus.sent.value,
    DeliveryStatus.skipped.value,
)


@dataclass(frozen=True)
class BatchRange:
    """A keyset range of ledger ids for one batch task; `countdown` delays it (retries)."""

    campaign_id: int
    first_id: int
    last_id: int
    countdown: float = 0.0


@dataclass(frozen=True)
class MessageIds:
    """A campaign's Message-IDs, `<campaign.row.mac@domain>`. The mac is keyed per delivery (see
    composing.MessageMacs): a reader who sees their own Message-ID cannot write another reader's, so a
    forged bounce or complaint names no real delivery."""

    campaign_id: int
    domain: str
    mac: Callable[[int, int], str]

    def of(self, delivery_id: int) -> str:
        return f"<{self.campaign_id}.{delivery_id}.{self.mac(self.campaign_id, delivery_id)}@{self.domain}>"


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    list_id: int
    email: str
    name: str
    attempts: int
    # The subscriber's created_at: the links in their copy are bound to it (tokens.binding), so a link
    # never acts on another row that got the same id.
    created_at: dt.datetime
    sections: list[str] | None = None  # digest sections the subscriber chose on the preferences page


@dataclass
class Outcomes:
    """Outcomes not yet written, written with a few set-based statements."""

    sent: list[int] = field(default_factory=list)
    retry: list[tuple[Claimed, SendResult]] = field(default_factory=list)
    failed: list[tuple[Claimed, SendResult]] = field(default_factory=list)
    invalid: list[tuple[Claimed, str]] = field(default_factory=list)  # could not be composed: never sent
    unwanted: list[Claimed] = field(default_factory=list)  # chose none of this digest's sections
    provider_ids: dict[int, str] = field(default_factory=dict)  # of sent rows: the relay's id of the message

    def __len__(self) -> int:
        return len(self.sent) + len(self.retry) + len(self.failed) + len(self.invalid) + len(self.unwanted)

    def add(self, claimed: Claimed, result: SendResult) -> None:
        verdict = classify(result)
        if verdict == "sent":
            self.sent.append(claimed.delivery_id)
            if provider_id := provider_message_id(result.text):
                self.provider_ids[claimed.delivery_id] = provider_id
        elif verdict == "retry":
            self.retry.append((claimed, result))
        else:
            self.failed.append((claimed, result))


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE touched (the generic Result type does not declare it)."""
    return int(getattr(result, "rowcount", 0) or 0)


# --- planning ---------------------------------------------------------------------------------------------


def _eligible_subscriptions(list_ids: Sequence[int], audience: ColumnElement[bool] | None = None) -> Any:
    """Confirmed subscriptions of active, unsuppressed subscribers on the given lists, one per subscriber,
    whose address is not at a blocked domain, and who match the `audience` (a segment's condition) if any."""
    conditions = (
        Subscription.list_id.in_(list_ids),
        Subscription.status == SubscriptionStatus.confirmed,
        Subscriber.status == SubscriberStatus.active,
        ~exists().where(Suppression.email_hash == Subscriber.email_hash),
        not_in_blocked_domain(),
        *([] if audience is None else [audience]),
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


# Also the audience a sequence step is planned from (newsletter/sequences.py), narrowed further there.
eligible_subscriptions = _eligible_subscriptions


def audience_of(session: Session, segment_filter: Any) -> ColumnElement[bool] | None:
    """The condition a campaign's stored segment filter puts on its recipients (None: its lists alone)."""
    if segment_filter is None:
        return None
    return compile_filter(session, parse(segment_filter))


def reach(session: Session, list_ids: Sequence[int], segment_filter: Any = None) -> int:
    """How many recipients `plan` would give a campaign to these lists (and segment filter) now: the same
    selection, counted."""
    if not list_ids:
        return 0
    audience = audience_of(session, segment_filter)
    eligible = _eligible_subscriptions(list(dict.fromkeys(list_ids)), audience).subquery()
    return session.scalar(select(func.count()).select_from(eligible)) or 0


def plan(session: Session, campaign: Campaign) -> int:
    """One INSERT ... SELECT: a row per recipient, one even for someone on several of the lists."""
    audience = audience_of(session, campaign.segment_filter)
    eligible = _eligible_subscriptions([m.id for m in campaign.lists], audience).subquery()
    source = select(
        text(str(campaign.id)),
        eligible.c.subscriber_id,
        eligible.c.list_id,
        text(f"'{_PENDING}'"),
        text("0"),
        func.now() if is_postgres(session) else text("CURRENT_TIMESTAMP"),
    ).order_by(eligible.c.subscriber_id)
    columns = ["campaign_id", "subscriber_id", "list_id", "status", "attempts", "created_at"]
    planned = session.scalar(select(Delivery.id).where(Delivery.campaign_id == campaign.id).limit(1)) is not None
    statement = insert(Delivery).from_select(columns, source)
    if planned:
        # a second run adds nothing (idempotent); the first needs no conflict check, which costs a tenth
        if is_postgres(session):
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


def _still_wanted(campaign_id: int) -> Any:
    return exists().where(
        Subscription.subscriber_id == Delivery.subscriber_id,
        Subscription.list_id.in_(select(campaign_lists.c.list_id).where(campaign_lists.c.campaign_id == campaign_id)),
        Subscription.status == SubscriptionStatus.confirmed,
        exists()
        .where(
            Subscriber.id == Delivery.subscriber_id,
            Subscriber.status == SubscriberStatus.active,
            ~exists().where(Suppression.email_hash == Subscriber.email_hash),
            not_in_blocked_domain(),
        )
        # explicit: two levels down in an UPDATE, `deliveries` was otherwise added to this FROM clause,
        # and the check asked whether any row's subscriber was still wanted, not this row's
        .correlate(Delivery),
    )


# PostgreSQL: pick, re-check and claim a group in one round trip. SKIP LOCKED lets any number of workers
# share a range without waiting; rows whose recipient left since planning become `skipped` on the way.
# The status values are the enums', written into the text so that it stays one fixed statement.
#
# Each re-check is a LATERAL subquery with LIMIT 1, so it runs once per picked row (at most `limit`), as an
# index probe, whatever the planner's statistics say. As EXISTS sublinks, the planner could choose to hash
# every confirmed subscription of the campaign's lists instead (it did after an import, campaign_lists never
# analysed), once per reference of `wanted` (the inlined CTE copied it into each CASE below): five scans of
# the whole list per group of 50, 150 ms a statement on a list of 20,000, growing with the list.
# MATERIALIZED computes `wanted` once per row.
_PG_CLAIM_CTES = f"""
picked AS (
    SELECT d.id FROM deliveries d
    WHERE d.campaign_id = :campaign_id AND d.id BETWEEN :first_id AND :last_id AND d.status = '{_PENDING}'
      AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= :now)
      AND EXISTS (
          SELECT 1 FROM campaigns c WHERE c.id = :campaign_id AND c.status = '{CampaignStatus.sending.value}'
      )
    ORDER BY d.id
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
), checked AS MATERIALIZED (
    SELECT p.id, s.email, s.name, s.created_at,
        s.status = '{SubscriberStatus.active.value}' AND x.hit IS NULL AND b.hit IS NULL AND w.hit IS NOT NULL
            AS wanted,
        (SELECT own.sections FROM subscriptions own WHERE own.subscriber_id = s.id AND own.list_id = d.list_id)
            AS sections
    FROM picked p JOIN deliveries d ON d.id = p.id JOIN subscribers s ON s.id = d.subscriber_id
    LEFT JOIN LATERAL (SELECT 1 AS hit FROM suppressions x WHERE x.email_hash = s.email_hash LIMIT 1) x ON true
    LEFT JOIN LATERAL (SELECT 1 AS hit FROM blocked_domains b WHERE b.domain = s.email_domain LIMIT 1) b ON true
    LEFT JOIN LATERAL (
        SELECT 1 AS hit FROM subscriptions sub
        WHERE sub.subscriber_id = s.id AND sub.status = '{SubscriptionStatus.confirmed.value}'
          AND sub.list_id IN (SELECT cl.list_id FROM campaign_lists cl WHERE cl.campaign_id = :campaign_id)
        LIMIT 1
    ) w ON true
)
UPDATE deliveries d SET
    status = CASE WHEN c.wanted THEN '{_SENDING}' ELSE '{_SKIPPED}' END,
    claimed_at = :now,
    claimed_by = CASE WHEN c.wanted THEN :worker END,
    attempts = d.attempts + CASE WHEN c.wanted THEN 1 ELSE 0 END,
    smtp_text = CASE WHEN c.wanted THEN d.smtp_text ELSE :skipped_text END
FROM checked c
WHERE d.id = c.id
RETURNING d.id, d.subscriber_id, d.list_id, c.email, c.name, d.attempts, c.created_at, c.wanted, c.sections
"""
_PG_CLAIM = text("WITH" + _PG_CLAIM_CTES)

# Rows are found by id, and only those still claimed by this worker change: `claimed_by`, a token of one
# batch run, is set only by the claim and cleared by every write that moves a row out of `sending` (an
# outcome, a release, the sweep, a resend), so it alone says "still mine". A `status = 'sending'` test here
# let the planner read the partial index on sending rows instead, which without VACUUM keeps an entry for
# every row ever claimed: a scan of the whole campaign so far per group (6 ms at 20,000 sent, growing).
#
# A group's messages all accepted (the common case): its outcomes and the next claim in one statement,
# run in autocommit, so a group costs one round trip instead of a ping, BEGIN, two statements and COMMIT.
# The two touch disjoint rows (`sending` ones and `pending` ones); PostgreSQL runs a data-modifying
# WITH query to completion whether or not the main query reads it.
_PG_RECORD_SENT_SQL = f"""
UPDATE deliveries SET
    status = '{_SENT}', sent_at = :now, smtp_code = 250, claimed_by = NULL,
    smtp_text = CASE WHEN smtp_text = :resent THEN smtp_text END,
    message_id = m.message_id, provider_message_id = m.provider_id
FROM unnest(CAST(:sent AS bigint[]), CAST(:message_ids AS text[]), CAST(:provider_ids AS text[]))
    AS m(id, message_id, provider_id)
WHERE deliveries.id = m.id AND claimed_by = :worker
"""
_PG_RECORD_SENT = text(_PG_RECORD_SENT_SQL)
_PG_RECORD_AND_CLAIM = text(f"WITH recorded AS ({_PG_RECORD_SENT_SQL} RETURNING 1)," + _PG_CLAIM_CTES)

# With the deferred rows' statement (deferrals.py), a group with deferrals costs a clean group's round trip.
_PG_DEFERRED_AND_CLAIM = text(f"WITH deferred AS ({PG_RECORD_DEFERRED_SQL} RETURNING 1)," + _PG_CLAIM_CTES)
_PG_RECORD_BOTH_AND_CLAIM = text(
    f"WITH recorded AS ({_PG_RECORD_SENT_SQL} RETURNING 1), deferred AS ({PG_RECORD_DEFERRED_SQL} RETURNING 1),"
    + _PG_CLAIM_CTES
)


def _claim_params(campaign_id: int, first_id: int, last_id: int, limit: int, worker: str) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "first_id": first_id,
        "last_id": last_id,
        "now": utcnow(),
        "limit": limit,
        "worker": worker,
        "skipped_text": NO_LONGER_WANTED,
    }


def _record_sent_params(ids: MessageIds, outcomes: Outcomes, worker: str) -> dict[str, Any]:
    sent = outcomes.sent
    return {
        "sent": sent,
        "provider_ids": [outcomes.provider_ids.get(delivery_id) for delivery_id in sent],
        "worker": worker,
        "now": utcnow(),
        "resent": RESENT_AFTER_UNKNOWN,
        "message_ids": [ids.of(delivery_id) for delivery_id in sent],
    }


def _deferrals(outcomes: Outcomes) -> list[Deferral]:
    return [Deferral(claimed.delivery_id, claimed.attempts, result) for claimed, result in outcomes.retry]


def _claimed(rows: Sequence[Any]) -> list[Claimed]:
    """The claim's RETURNING rows that are to be sent (the others were skipped), in id order."""
    picked = [
        Claimed(row.id, row.subscriber_id, row.list_id, row.email, row.name, row.attempts, row.created_at, row.sections)
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
        .values(status=DeliveryStatus.skipped, smtp_text=NO_LONGER_WANTED)
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
            Subscriber.created_at,
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


# --- recording --------------------------------------------------------------------------------------------


def record_sent_and_claim(
    conn: Connection,
    settings: Settings,
    ids: MessageIds,
    outcomes: Outcomes,
    worker: str,
    *,
    claim_next: bool,
    first_id: int,
    last_id: int,
    limit: int,
) -> list[Claimed]:
    """Record a group whose messages were all accepted or deferred and claim the next, as one autocommit
    statement (PostgreSQL only)."""
    if not claim_next:
        if outcomes.sent:
            conn.execute(_PG_RECORD_SENT, _record_sent_params(ids, outcomes, worker))
        if outcomes.retry:
            conn.execute(PG_RECORD_DEFERRED, deferred_params(settings, _deferrals(outcomes), worker))
        return []
    params = _claim_params(ids.campaign_id, first_id, last_id, limit, worker)
    if outcomes.sent:
        params |= _record_sent_params(ids, outcomes, worker)
    if outcomes.retry:
        params |= deferred_params(settings, _deferrals(outcomes), worker)
    statement = {
        (False, False): _PG_CLAIM,
        (True, False): _PG_RECORD_AND_CLAIM,
        (False, True): _PG_DEFERRED_AND_CLAIM,
        (True, True): _PG_RECORD_BOTH_AND_CLAIM,
    }[bool(outcomes.sent), bool(outcomes.retry)]
    return _claimed(conn.execute(statement, params).all())


def record(session: Session, settings: Settings, ids: MessageIds, outcomes: Outcomes, worker: str) -> None:
    """Write a group's outcomes. Only rows still claimed by this worker change: after a lease expired,
    the sweep's verdict (and whoever claimed the row since) wins over a late write."""
    now = utcnow()
    mine = (Delivery.status == DeliveryStatus.sending, Delivery.claimed_by == worker)
    if outcomes.sent and is_postgres(session):
        # One fixed text with an array, prepared once per connection, skips the ORM's bulk-update work.
        session.connection().execute(_PG_RECORD_SENT, _record_sent_params(ids, outcomes, worker))
    elif outcomes.sent:
        # One statement per group, each row's Message-ID picked by its id.
        message_ids = {delivery_id: ids.of(delivery_id) for delivery_id in outcomes.sent}
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(outcomes.sent), *mine)
            .values(
                status=DeliveryStatus.sent,
                sent_at=now,
                smtp_code=250,
                smtp_text=case((Delivery.smtp_text == RESENT_AFTER_UNKNOWN, Delivery.smtp_text), else_=None),
                message_id=case(message_ids, value=Delivery.id),
                provider_message_id=case(outcomes.provider_ids, value=Delivery.id, else_=None)
                if outcomes.provider_ids
                else None,
                claimed_by=None,
            )
            .execution_options(synchronize_session=False)
        )
    if outcomes.retry and is_postgres(session):
        session.connection().execute(PG_RECORD_DEFERRED, deferred_params(settings, _deferrals(outcomes), worker))
    elif outcomes.retry:
        record_deferred(session, settings, _deferrals(outcomes), now, mine)
    for claimed, result in outcomes.failed:
        _record_failure(session, settings, ids.campaign_id, claimed, result, mine)
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


def is_hard_status(status: str) -> bool:
    """An RFC 3463 status that is for good: 5.1.x (no such address) or 5.2.1 (mailbox disabled); 5.2.2
    (mailbox full), policy and system refusals may clear up."""
    return status.startswith(("5.1.", "5.2.1"))


def is_hard_bounce(result: SendResult) -> bool:
    """A 5xx that says the mailbox does not exist or refuses us for good (RFC 3463 5.1.x / 5.2.1)."""
    status = result.text.split(" ", 1)[0]
    return result.permanent and (is_hard_status(status) or status[:1] != "5")


def _record_failure(
    session: Session, settings: Settings, campaign_id: int, claimed: Claimed, result: SendResult, mine: Any
) -> None:
    changed = session.execute(
        update(Delivery)
        .where(Delivery.id == claimed.delivery_id, *mine)
        .values(status=DeliveryStatus.failed, smtp_code=result.code, smtp_text=result.text[:2000], claimed_by=None)
    )
    if not rowcount(changed):
        return
    hard = is_hard_bounce(result)
    bounce = Event(
        type=EventType.bounce,
        campaign_id=campaign_id,
        delivery_id=claimed.delivery_id,
        subscriber_id=claimed.subscriber_id,
        list_id=claimed.list_id,
        detail=f"{result.code} {result.text}"[:2000],
        bounce_class="hard" if hard else "soft",
    )
    session.add(bounce)
    suppressed = hard
    if hard:
        suppress(session, claimed.email, SuppressionReason.hard_bounce, detail=f"{result.code} {result.text}")
    elif suppress_if_soft_bouncing(session, settings, claimed.subscriber_id, claimed.email):
        bounce.bounce_class = SOFT_SUPPRESSED
        suppressed = True
    # added to the session: flushed with the bounce event, no statement of its own
    ids = (claimed.subscriber_id, claimed.list_id, campaign_id, claimed.delivery_id)
    detail = f"{result.code} {result.text}"
    outbox.emit_bounce(session, claimed.email, ids, hard=hard, suppressed=suppressed, detail=detail)
