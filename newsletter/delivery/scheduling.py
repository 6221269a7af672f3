"""Who starts scheduled campaigns: Celery beat's sweep with a broker, one `newsletter serve` process without.

Both leave a heartbeat row: the sweep task writes `beat` each time it runs (so `campaigns send --at` can say
when no beat has been seen lately), and the embedded scheduler holds `embedded` like a lease, renewed every
second, so that of several `serve --workers` processes exactly one sweeps and starts due campaigns.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery.ledger import rowcount
from newsletter.models import Campaign, CampaignStatus, Heartbeat

BEAT = "beat"
EMBEDDED = "embedded"

# The embedded scheduler renews its hold every TICK_SECONDS; another process takes over after HOLD_SECONDS
# without renewal (its holder died).
TICK_SECONDS = 1.0
HOLD_SECONDS = 10.0


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_beat(session: Session, holder: str | None = None) -> None:
    """The sweep ran now (a beat enqueued it)."""
    _write(session, BEAT, holder or process_name(), force=True)


def hold(session: Session, holder: str, *, now: dt.datetime | None = None) -> bool:
    """Take or renew the embedded scheduler's hold; False while another live process has it."""
    return _write(session, EMBEDDED, holder, force=False, now=now)


def _write(session: Session, name: str, holder: str, *, force: bool, now: dt.datetime | None = None) -> bool:
    now = now or utcnow()
    conditions = [Heartbeat.name == name]
    if not force:
        stale = now - dt.timedelta(seconds=HOLD_SECONDS)
        conditions.append(or_(Heartbeat.holder == holder, Heartbeat.seen_at < stale))
    changed = session.execute(
        update(Heartbeat)
        .where(*conditions)
        .values(holder=holder, seen_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(changed):
        return True
    try:
        with session.begin_nested():  # the first writer ever: a concurrent one wins the insert race
            session.add(Heartbeat(name=name, holder=holder, seen_at=now))
    except IntegrityError:
        return False
    return True


def last_seen(session: Session, name: str) -> dt.datetime | None:
    return session.scalar(select(Heartbeat.seen_at).where(Heartbeat.name == name))


def due_campaigns(session: Session, now: dt.datetime | None = None) -> list[int]:
    """Scheduled campaigns whose time has come (an index lookup: cheap to ask every second)."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(Campaign.id)
            .where(Campaign.status == CampaignStatus.scheduled, Campaign.scheduled_at <= now)
            .order_by(Campaign.scheduled_at)
        )
    )


def who_starts(session: Session, settings: Settings, now: dt.datetime | None = None) -> tuple[str, bool]:
    """What will start a scheduled campaign, for the person who scheduled it, and whether it looks alive."""
    now = now or utcnow()
    if settings.broker_url is None:
        seen = last_seen(session, EMBEDDED)
        if seen is not None and now - seen <= dt.timedelta(seconds=HOLD_SECONDS):
            return "the running `newsletter serve` starts it on time (no broker: it schedules in-process)", True
        return (
            "nothing is running that would start it: with no broker, `newsletter serve` starts due campaigns "
            "in-process, so keep it running (or set NEWSLETTER_BROKER_URL and run a Celery beat)",
            False,
        )
    seen = last_seen(session, BEAT)
    recent = dt.timedelta(seconds=3 * settings.sweep_interval_seconds + HOLD_SECONDS)
    if seen is not None and now - seen <= recent:
        return "Celery beat starts it on time (its sweep ran at " + seen.isoformat(timespec="seconds") + ")", True
    when = f"since {seen.isoformat(timespec='seconds')}" if seen else "ever"
    return (
        f"no Celery beat has been seen {when}: nothing will start it until one runs "
        "(`celery -A worker beat`, beside the workers)",
        False,
    )


def release(session: Session, holder: str) -> None:
    """Give up the embedded scheduler's hold (a clean shutdown), so another process takes it at once."""
    session.execute(
        update(Heartbeat)
        .where(Heartbeat.name == EMBEDDED, Heartbeat.holder == holder)
        .values(seen_at=utcnow() - dt.timedelta(seconds=2 * HOLD_SECONDS))
        .execution_options(synchronize_session=False)
    )
