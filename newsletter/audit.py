"""The audit log: record who did what to which thing, in the caller's transaction, and search it.

`record()` only adds a row to the session it is given: an audited change and its record commit or roll back
together, so the log never claims a change that did not happen nor misses one that did. Actions are short
dotted words (`campaign.send`, `user.role`, `sign_in.fail`); targets say what was acted on in the form
`kind:key` (`campaign:12`, `list:weekly`, `user:ada`). The actor is kept as a name, not a key, so the log
outlives the users it names.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.errors import Invalid
from newsletter.models import ActorKind, AuditEntry, Campaign, User, column_length

__all__ = ["Actor", "AuditEntry", "InvalidAuditQuery", "record", "search"]

ACTION = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
MAX_PAGE = 500


class InvalidAuditQuery(Invalid):
    """A search of the audit log that cannot be run as asked; the message says why."""


@dataclass(frozen=True)
class Actor:
    """Who acts: a name, how they came in (`ActorKind`), and from which address when known."""

    name: str
    kind: ActorKind
    ip: str | None = None

    @classmethod
    def cli(cls) -> Actor:
        """The person at the command line, by their operating-system user name."""
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for the uid (some containers)
            name = "unknown"
        return cls(name, ActorKind.cli)

    @classmethod
    def token(cls, user: User, ip: str | None = None) -> Actor:
        """A request authenticated by an API token of `user`."""
        return cls(user.name, ActorKind.token, ip)

    @classmethod
    def web(cls, name: str, ip: str | None) -> Actor:
        """An admin page request of the signed-in user `name` (also a sign-in attempt naming them)."""
        return cls(name, ActorKind.user, ip)

    @classmethod
    def system(cls, name: str = "scheduler") -> Actor:
        return cls(name, ActorKind.system)


def _clip(value: str | None, column: Any) -> str | None:
    return value[: column_length(column)] if value is not None else None


def record(session: Session, actor: Actor, action: str, target: str | None = None, **details: Any) -> AuditEntry:
    """Add one entry to the audit log in `session`'s transaction (the caller commits); `details` must be
    JSON-serialisable (ids, names, counts — never a password or a token)."""
    if not ACTION.match(action):
        raise ValueError(f"audit action {action!r}: use dotted lower-case words such as 'campaign.send'")
    entry = AuditEntry(
        at=utcnow(),
        actor=_clip(actor.name, AuditEntry.actor) or "",
        actor_kind=actor.kind,
        action=action,
        target=_clip(target, AuditEntry.target),
        details=details,
        ip=_clip(actor.ip, AuditEntry.ip),
    )
    session.add(entry)
    session.flush()
    return entry


def search(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Entries newest first, `limit` at most, older than the entry `before_id` (the keyset of the next
    page). `action` matches exactly, or a whole family when it ends with a dot or names one without the
    dot (`campaign` finds `campaign.send` and `campaign.pause`); `target` matches exactly, or by prefix when
    it ends with ':' (`campaign:` finds every campaign)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidAuditQuery(f"limit {limit}: choose between 1 and {MAX_PAGE}")
    if since is not None and until is not None and since > until:
        raise InvalidAuditQuery("since is after until: nothing can match")
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        if "." in action.rstrip("."):
            query = query.where(AuditEntry.action == action)
        else:
            family = action.rstrip(".") + "."
            query = query.where(AuditEntry.action.startswith(family, autoescape=True))
    if target:
        if target.endswith(":"):
            query = query.where(AuditEntry.target.startswith(target, autoescape=True))
        else:
            query = query.where(AuditEntry.target == target)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))


def campaign_target(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


def campaign_created(session: Session, actor: Actor, campaign: Campaign) -> AuditEntry:
    """`campaign.send` (it starts now) or `campaign.schedule` (it waits for its time), with what and to whom."""
    scheduled = campaign.scheduled_at
    return record(
        session,
        actor,
        "campaign.schedule" if scheduled is not None else "campaign.send",
        campaign_target(campaign.id),
        digest=campaign.digest.slug,
        lists=[mailing_list.slug for mailing_list in campaign.lists],
        subject=campaign.subject,
        **({"scheduled_at": scheduled.isoformat()} if scheduled is not None else {}),
    )
