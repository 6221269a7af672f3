"""The people who run the service: users and their API tokens, admin sessions, two-factor recovery codes,
the audit log, and the heartbeats and webhook nonces of the processes."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, BigID, JSONType, UTCDateTime, created_at, intpk, utcnow
from newsletter.import_tables import ImportJob as ImportJob  # the import wizard's table, in its own module
from newsletter.import_tables import ImportStatus as ImportStatus
from newsletter.models.core import (
    Role,
    _enum,
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    created_at: Mapped[created_at]
    # Argon2id (newsletter/passwords.py); None: an API-only user, who cannot sign in to the admin.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Where the admin sends test emails by default; optional.
    email: Mapped[str | None] = mapped_column(String(320))
    # Two-factor sign-in and deactivation (migration 0008, newsletter/twofactor.py): the TOTP secret is kept
    # encrypted with a key derived from SECRET_KEY; it is on once `totp_enabled_at` is set (a secret without
    # it is an enrolment waiting for its first code). `totp_last_step` is the time step of the last code
    # accepted, so a code cannot be used twice. A deactivated user can neither sign in nor use a token.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    totp_last_step: Mapped[int | None] = mapped_column(BigID)
    deactivated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    """Only a hash of the token is stored; the prefix lets people tell tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # What the token is for ("deploy script", "newsroom CMS"), shown beside its prefix (migration 0008).
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[created_at]
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="tokens")


class WebSession(Base):
    """A signed-in admin browser (newsletter/websessions.py). The cookie carries an opaque id; only its
    SHA-256 is stored, so a copy of the table signs nobody in."""

    __tablename__ = "web_sessions"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))

    user: Mapped[User] = relationship()


class Heartbeat(Base):
    """When a scheduler last ran: `beat` is written by the sweep Celery beat enqueues, `embedded` is held
    by the one `newsletter serve` process that starts due campaigns when there is no broker."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))  # host:pid of the process that wrote it
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WebhookNonce(Base):
    """A provider webhook's one-time token already seen (Mailgun's `token`), so a replay is refused; kept
    when no Redis is configured, and pruned once older than the provider's timestamp window."""

    __tablename__ = "webhook_nonces"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


# --- audit log and two-factor recovery codes (migration 0008) ---


class ActorKind(enum.StrEnum):
    user = "user"  # a signed-in admin page
    token = "token"  # noqa: S105 - an API bearer token (a kind of actor, not a secret)
    cli = "cli"  # the command line, as the OS user
    system = "system"  # the scheduler or a worker acting on its own


class AuditEntry(Base):
    """Who did what, when (newsletter/audit.py). `actor` is the user's name as text, not a key: the record
    stays when the user is deleted."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_at", "actor", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
    )

    id: Mapped[intpk]
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    actor_kind: Mapped[ActorKind] = mapped_column(_enum(ActorKind, "actor_kind"))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))


class RecoveryCode(Base):
    """A one-time two-factor recovery code of a user; only its hash is kept, and `used_at` spends it."""

    __tablename__ = "recovery_codes"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
