"""Welcome and follow-up emails: a list's sequence of steps, each sent through its own campaign's ledger.

A step owns a long-lived campaign (no digest): its pre-rendered HTML/text is the step's content, and its
ledger gets one row per subscriber when the step falls due for them, planned by `plan_due` (the sweep and
the confirmation of a subscription call it). From there on a step's message is claimed, sent, retried,
recovered after a crash and counted exactly like a campaign's: the ledger's UNIQUE (campaign, subscriber)
means a step is never planned twice for anyone, so editing a step resends nothing. The claim re-checks the
subscription, so someone who left (or was suppressed or blocked) gets no further step.

When a step is due: the first `delay_hours` after the subscription was confirmed, each later one
`delay_hours` after the previous step was sent to that subscriber. Only subscriptions confirmed while the
sequence is on (since `enabled_at`) get it, and imported ones never do: turning a sequence on does not mail
the existing list, and neither does an import. A step added later goes only to those whose turn for it
comes after it was added.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, aliased

from newsletter import rendering, templates
from newsletter.config import Settings
from newsletter.db import is_postgres, utcnow
from newsletter.delivery.ledger import BatchRange, batch_ranges, eligible_subscriptions, rowcount
from newsletter.delivery.progress import tally
from newsletter.errors import Conflict, Invalid, NotFound
from newsletter.lists import get_list
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    EmailSequence,
    Link,
    SequenceStep,
    Subscription,
    SubscriptionSource,
    column_length,
)

MAX_BODY_CHARS = 50_000  # Markdown; the rendered email must stay far below Gmail's ~102 KB clipping
MAX_DELAY_HOURS = 366 * 24
SUBJECT_CHARS = column_length(SequenceStep.subject)
CREATED_BY = "sequence"
TURNED_OFF = "sequence turned off before this step was sent"
STEP_REMOVED = "sequence step removed before it was sent"
# A subscriber's previous step counts as sent once it was accepted, or when a crash left its fate unknown
# (it most likely arrived): the sequence goes on rather than stall for them.
_CHAINED = (DeliveryStatus.sent, DeliveryStatus.unknown)


class SequenceNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        super().__init__(f"list {slug!r} has no sequence (create it with `newsletter sequences create {slug}`)")


class StepNotFound(NotFound):
    def __init__(self, slug: str, position: int) -> None:
        super().__init__(f"the sequence of list {slug!r} has no step {position}")


class InvalidStep(Invalid):
    """A step's subject, body, delay or template that cannot be used; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.detail = [{"loc": ["body", field], "msg": reason, "type": "invalid"}]  # the API's error shape


class SequenceExists(Conflict):
    def __init__(self, slug: str) -> None:
        super().__init__(f"list {slug!r} already has a sequence")


# --- reading ------------------------------------------------------------------------------------------------


def get_sequence(session: Session, slug: str) -> EmailSequence:
    mailing_list = get_list(session, slug)
    sequence = session.scalar(select(EmailSequence).where(EmailSequence.list_id == mailing_list.id))
    if sequence is None:
        raise SequenceNotFound(slug)
    return sequence


def all_sequences(session: Session) -> list[EmailSequence]:
    return list(session.scalars(select(EmailSequence).order_by(EmailSequence.id)))


def get_step(session: Session, slug: str, position: int) -> SequenceStep:
    sequence = get_sequence(session, slug)
    step = session.scalar(
        select(SequenceStep).where(SequenceStep.sequence_id == sequence.id, SequenceStep.position == position)
    )
    if step is None:
        raise StepNotFound(slug, position)
    return step


@dataclass(frozen=True)
class StepStatus:
    position: int
    subject: str
    delay_hours: int
    campaign_id: int
    campaign_status: str
    counts: dict[str, int]  # the step's ledger rows per status


def status(session: Session, slug: str) -> list[StepStatus]:
    """Each step with its ledger counts (how many got it, are waiting, failed...)."""
    return [
        StepStatus(
            step.position,
            step.subject,
            step.delay_hours,
            step.campaign_id,
            step.campaign.status.value,
            tally(session, step.campaign_id).counts,
        )
        for step in get_sequence(session, slug).steps
    ]


# --- creating and editing -----------------------------------------------------------------------------------


def create_sequence(session: Session, slug: str) -> EmailSequence:
    """A list's (empty, off) sequence."""
    mailing_list = get_list(session, slug)
    if session.scalar(select(EmailSequence.id).where(EmailSequence.list_id == mailing_list.id)) is not None:
        raise SequenceExists(slug)
    sequence = EmailSequence(list_id=mailing_list.id, enabled=False)
    session.add(sequence)
    session.flush()
    return sequence


def clean_subject(subject: str) -> str:
    cleaned = " ".join(subject.split())  # no CR/LF can reach a header
    if not cleaned:
        raise InvalidStep("subject", "is empty")
    if len(cleaned) > SUBJECT_CHARS:
        raise InvalidStep("subject", f"is {len(cleaned)} characters long, at most {SUBJECT_CHARS} fit")
    return cleaned


def clean_body(body: str) -> str:
    if not body.strip():
        raise InvalidStep("body", "is empty: write the message in Markdown")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidStep("body", f"is {len(body)} characters long, at most {MAX_BODY_CHARS} are allowed")
    if "\x00" in body:
        raise InvalidStep("body", "contains a NUL character")
    return body


def clean_delay(hours: int) -> int:
    if not 0 <= hours <= MAX_DELAY_HOURS:
        raise InvalidStep("delay", f"must be between 0 and {MAX_DELAY_HOURS} hours (366 days), got {hours}")
    return hours


def parse_delay(text: str) -> int:
    """`3d`, `12h`, `2d12h` or a plain number of days, as hours."""
    value = text.strip().lower()
    try:
        if value.isdigit():
            return clean_delay(int(value) * 24)
        days, _, rest = value.partition("d") if "d" in value else ("0", "", value)
        hours = rest.removesuffix("h") or "0"
        if not value or (rest and not rest.endswith("h")) or not (days.isdigit() and hours.isdigit()):
            raise ValueError
        return clean_delay(int(days) * 24 + int(hours))
    except ValueError:
        raise InvalidStep("delay", f"{text!r} is not a delay: write e.g. 0, 3d, 12h or 2d12h") from None


def add_step(
    session: Session,
    settings: Settings,
    slug: str,
    *,
    subject: str,
    body: str,
    delay_hours: int = 0,
    template: str | None = None,
) -> SequenceStep:
    """Append a step; it goes to each subscriber whose turn for it comes from now on."""
    sequence = get_sequence(session, slug)
    step = SequenceStep(
        sequence_id=sequence.id,
        position=len(sequence.steps) + 1,
        delay_hours=clean_delay(delay_hours),
        subject=clean_subject(subject),
        body=clean_body(body),
        template_id=templates.get_template(session, template).id if template else None,
    )
    campaign = Campaign(
        digest_id=None,
        subject=step.subject,
        status=CampaignStatus.sending if sequence.enabled else CampaignStatus.paused,
        pause_reason=None if sequence.enabled else TURNED_OFF,
        created_by=CREATED_BY,
        lists=[sequence.mailing_list],
        started_at=utcnow(),
    )
    step.campaign = campaign
    session.add_all([campaign, step])
    session.flush()
    session.expire(sequence, ["steps"])
    render_step(session, settings, step)
    return step


def edit_step(
    session: Session,
    settings: Settings,
    slug: str,
    position: int,
    *,
    subject: str | None = None,
    body: str | None = None,
    delay_hours: int | None = None,
    template: str | None = None,
    default_template: bool = False,
) -> SequenceStep:
    """Change a step; those who got it already are not sent it again (their ledger row stays)."""
    step = get_step(session, slug, position)
    if subject is not None:
        step.subject = step.campaign.subject = clean_subject(subject)
    if body is not None:
        step.body = clean_body(body)
    if delay_hours is not None:
        step.delay_hours = clean_delay(delay_hours)
    if template is not None:
        step.template_id = templates.get_template(session, template).id
    elif default_template:
        step.template_id = None
    session.flush()
    render_step(session, settings, step)
    return step


def render_step(session: Session, settings: Settings, step: SequenceStep) -> None:
    """Render the step into its campaign, registering links it did not have (those of earlier versions stay,
    so clicks in messages already sent still redirect)."""
    campaign = step.campaign
    mailing_list = campaign.lists[0]
    positions = {link.url: link.position for link in campaign.links}
    try:
        rendered = rendering.render_step(
            step.subject,
            step.body,
            mailing_list,
            base_url=settings.base_url,
            positions=positions,
            template_source=templates.template_source(session, step.template_id),
        )
    except rendering.TemplateRejected as error:
        raise InvalidStep("template", str(error)) from None
    campaign.html, campaign.text = rendered.html, rendered.text
    campaign.planned_at = utcnow()  # workers re-prepare the message (sending.prepare keys on it)
    if mailing_list.tracking:
        new = [url for url in rendered.links if url not in positions]
        if new:
            first = max(positions.values(), default=0) + 1
            session.execute(
                insert(Link), [{"campaign_id": campaign.id, "position": p, "url": u} for p, u in enumerate(new, first)]
            )
            session.expire(campaign, ["links"])
    session.flush()


def preview(session: Session, slug: str, *, subject: str, body: str) -> rendering.RenderedEmail:
    """What a step with this subject and body looks like to the list's subscribers (untracked)."""
    sequence = get_sequence(session, slug)
    return rendering.render_step(clean_subject(subject), clean_body(body), sequence.mailing_list)


def remove_step(session: Session, slug: str, position: int) -> None:
    """Remove a step: messages of it not yet sent are skipped; its campaign keeps who got it."""
    step = get_step(session, slug, position)
    sequence = step.sequence
    _stop(session, step.campaign_id, CampaignStatus.cancelled, STEP_REMOVED)
    step.campaign.finished_at = utcnow()
    sequence.steps.remove(step)
    session.flush()
    _renumber(session, sequence, list(sequence.steps))


def move_step(session: Session, slug: str, position: int, to: int) -> None:
    """Move a step to another place in the order (the others shift)."""
    step = get_step(session, slug, position)
    sequence = step.sequence
    if not 1 <= to <= len(sequence.steps):
        raise InvalidStep("position", f"must be between 1 and {len(sequence.steps)}, got {to}")
    order = [s for s in sequence.steps if s is not step]
    order.insert(to - 1, step)
    _renumber(session, sequence, order)


def _renumber(session: Session, sequence: EmailSequence, order: list[SequenceStep]) -> None:
    # Two passes: (sequence, position) is unique at every statement, so first move them out of the way.
    for index, step in enumerate(order, start=1):
        step.position = -index
    session.flush()
    for step in order:
        step.position = -step.position
        step.campaign.planned_at = utcnow()  # workers re-read the position their events name
    session.flush()
    session.expire(sequence, ["steps"])


# --- on and off ---------------------------------------------------------------------------------------------


def enable(session: Session, slug: str, *, now: dt.datetime | None = None) -> EmailSequence:
    """Turn on: subscribers confirmed from now on get the steps (not those confirmed before)."""
    sequence = get_sequence(session, slug)
    if not sequence.steps:
        raise Conflict(f"the sequence of list {slug!r} has no step yet: add one first")
    if not sequence.enabled:
        sequence.enabled = True
        sequence.enabled_at = now or utcnow()
        session.execute(
            update(Campaign)
            .where(Campaign.id.in_([s.campaign_id for s in sequence.steps]), Campaign.status == CampaignStatus.paused)
            .values(status=CampaignStatus.sending, pause_reason=None)
            .execution_options(synchronize_session="fetch")
        )
        session.flush()
    return sequence


def disable(session: Session, slug: str) -> EmailSequence:
    """Turn off: nothing more is sent; messages planned but not sent yet are skipped."""
    sequence = get_sequence(session, slug)
    sequence.enabled = False
    for step in sequence.steps:
        _stop(session, step.campaign_id, CampaignStatus.paused, TURNED_OFF)
    session.flush()
    return sequence


def _stop(session: Session, campaign_id: int, status: CampaignStatus, reason: str) -> None:
    session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(status=status, pause_reason=reason if status == CampaignStatus.paused else None)
        .execution_options(synchronize_session="fetch")
    )
    # rows a worker holds in `sending` are its claim in flight: it sends or gives them back (see delivery.cancel)
    pending = (
        select(Delivery.id)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.pending)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(pending))
        .values(status=DeliveryStatus.skipped, smtp_text=reason)
        .execution_options(synchronize_session=False)
    )


# --- planning -----------------------------------------------------------------------------------------------


def plan_due(
    session: Session, settings: Settings, *, now: dt.datetime | None = None, subscriber_id: int | None = None
) -> list[BatchRange]:
    """Plan every step that fell due (for one subscriber, or everyone) into its ledger; the batches to send.

    One INSERT ... SELECT per step; a row already planned is left alone (ON CONFLICT DO NOTHING), so the
    sweep and a confirmation planning at the same time give one row."""
    now = now or utcnow()
    ranges: list[BatchRange] = []
    sequences = session.scalars(select(EmailSequence).where(EmailSequence.enabled.is_(True))).all()
    for sequence in sequences:
        previous: SequenceStep | None = None
        for step in sequence.steps:
            if _plan_step(session, sequence, step, previous, now, subscriber_id) and step.campaign.status == (
                CampaignStatus.sending
            ):
                ranges.extend(batch_ranges(session, step.campaign_id, settings.batch_size, due_only=True))
            previous = step
    return ranges


def _plan_step(
    session: Session,
    sequence: EmailSequence,
    step: SequenceStep,
    previous: SequenceStep | None,
    now: dt.datetime,
    subscriber_id: int | None,
) -> int:
    delay = dt.timedelta(hours=step.delay_hours)
    due_before = now - delay
    # A turn that came before the step existed is not made up for: adding a step mails nobody retroactively.
    not_before = step.created_at - delay
    query = eligible_subscriptions([sequence.list_id]).where(
        Subscription.source != SubscriptionSource.import_,
        Subscription.confirmed_at >= sequence.enabled_at,
        ~exists().where(Delivery.campaign_id == step.campaign_id, Delivery.subscriber_id == Subscription.subscriber_id),
    )
    if subscriber_id is not None:
        query = query.where(Subscription.subscriber_id == subscriber_id)
    if previous is None:
        query = query.where(Subscription.confirmed_at <= due_before, Subscription.confirmed_at >= not_before)
    else:
        before = aliased(Delivery)
        sent_at = func.coalesce(before.sent_at, before.claimed_at)
        query = query.join(
            before,
            and_(
                before.campaign_id == previous.campaign_id,
                before.subscriber_id == Subscription.subscriber_id,
                before.status.in_(_CHAINED),
                sent_at <= due_before,
                sent_at >= not_before,
            ),
        )
    eligible = query.subquery()
    source = select(eligible.c.subscriber_id, eligible.c.list_id, literal_column(str(int(step.campaign_id))))
    return _insert_ledger_rows(session, source)


def _insert_ledger_rows(session: Session, source: Any) -> int:
    columns = ["subscriber_id", "list_id", "campaign_id"]
    if is_postgres(session):
        statement: Any = pg_insert(Delivery).from_select(columns, source).on_conflict_do_nothing()
    else:
        statement = insert(Delivery).from_select(columns, source).prefix_with("OR IGNORE")
    return rowcount(session.execute(statement.execution_options(preserve_rowcount=True)))
