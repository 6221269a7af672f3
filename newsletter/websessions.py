"""Server-side sessions of the admin web UI: start one at sign-in, find the live one a cookie names, end it.

The cookie carries an opaque id (`secrets.token_urlsafe(32)`); the table holds only its SHA-256, so the
lookup is one indexed query and a copy of the table signs nobody in. A session ends when it is revoked
(sign-out, a password change), when it was idle longer than the idle timeout, or when it is older than the
absolute timeout, whichever comes first. `last_seen_at` is written at most once a minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.models import Role, User, WebSession

SEEN_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Timeouts:
    idle: dt.timedelta
    absolute: dt.timedelta


@dataclass(frozen=True)
class Started:
    """A new session: `session_id` goes into the cookie once and is never stored."""

    session_id: str
    row: WebSession


def hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start(
    session: Session, user: User, *, ip: str | None, user_agent: str | None, now: dt.datetime | None = None
) -> Started:
    now = now or utcnow()
    session_id = secrets.token_urlsafe(32)
    row = WebSession(
        user_id=user.id,
        id_hash=hash_id(session_id),
        created_at=now,
        last_seen_at=now,
        ip=ip[:64] if ip else None,
        user_agent=user_agent[:512] if user_agent else None,
    )
    session.add(row)
    session.flush()
    return Started(session_id, row)


@dataclass(frozen=True)
class Live:
    """A live session and its user, as plain values (every admin request reads them: one Core query, no
    ORM rows to build)."""

    id: int  # the WebSession row
    user_id: int
    name: str
    role: Role
    email: str | None
    two_factor: bool  # TOTP is on for this user


def find(session: Session, session_id: str, timeouts: Timeouts, now: dt.datetime | None = None) -> Live | None:
    """The live session `session_id` names, with its user, touched; None when unknown or ended."""
    now = now or utcnow()
    if not session_id or len(session_id) > 100:
        return None
    # the user with it, in the same query: every admin request asks for both
    found = session.execute(
        select(
            WebSession.id,
            WebSession.created_at,
            WebSession.last_seen_at,
            WebSession.revoked_at,
            User.id,
            User.name,
            User.role,
            User.email,
            User.totp_enabled_at,
            User.deactivated_at,
        )
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id_hash == hash_id(session_id))
    ).first()
    if found is None:
        return None
    row_id, created, last_seen, revoked, user_id, name, role, email, totp_on, deactivated = found
    if revoked is not None or deactivated is not None:
        return None
    if now - last_seen > timeouts.idle or now - created > timeouts.absolute:
        return None
    if now - last_seen >= SEEN_RESOLUTION:
        session.execute(
            update(WebSession)
            .where(WebSession.id == row_id)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
    return Live(row_id, user_id, name, role, email, totp_on is not None)


def revoke(session: Session, row_id: int, now: dt.datetime | None = None) -> None:
    """End the session with this row id (sign-out)."""
    session.execute(
        update(WebSession)
        .where(WebSession.id == row_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )


def revoke_all(session: Session, user: User, *, keep: int | None = None) -> int:
    """End every live session of `user` but the one with row id `keep` (the one asking); returns how many."""
    statement = update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
    if keep is not None:
        statement = statement.where(WebSession.id != keep)
    result = session.execute(statement.values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
