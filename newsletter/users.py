"""API users and their bearer tokens: create, authenticate, list, revoke and rotate; only hashes are stored.

Tokens are 256 random bits, so a plain SHA-256 is enough: slow password hashes (bcrypt, argon2) exist to
make guessing low-entropy secrets expensive, and nobody can enumerate 2^256 candidates. A fast hash also
lets every request authenticate with one indexed lookup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter import passwords, websessions
from newsletter.addresses import normalise_email
from newsletter.db import utcnow
from newsletter.errors import Invalid, NotFound, Unauthenticated
from newsletter.models import ApiToken, Role, User

TOKEN_PREFIX = "nl_"  # noqa: S105 - a public marker that makes leaked tokens easy to scan for
PREFIX_LENGTH = 12  # "nl_" + 9 characters: enough to tell tokens apart, far too little to guess the rest
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
# Writing last_used_at on every request would turn every read into a write; a minute is precise enough.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class InvalidUser(Invalid):
    """A user that cannot be created as asked; the message says why."""


class UserNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")


class TokenNotFound(NotFound):
    def __init__(self, prefix: str) -> None:
        super().__init__(f"no active token with prefix {prefix!r}")


class AuthenticationFailed(Unauthenticated):
    """The bearer token is missing, unknown or revoked."""


@dataclass(frozen=True)
class IssuedToken:
    """A token as it is shown exactly once to the person who asked for it."""

    user: User
    token: str
    prefix: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(session: Session, user: User, purpose: str | None = None) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    prefix = token[:PREFIX_LENGTH]
    session.add(ApiToken(user_id=user.id, prefix=prefix, token_hash=hash_token(token), name=purpose))
    session.flush()
    return IssuedToken(user=user, token=token, prefix=prefix)


def create_user(
    session: Session, name: str, role: Role | str, *, email: str | None = None, password: str | None = None
) -> IssuedToken:
    """Create a user with a first token; the token is returned once and never stored.

    `password` (checked against `passwords.check_rules`) lets them sign in to the admin; without one the
    user can only use the API. `email` is where the admin sends their test emails by default.
    """
    return _new_token(session, add_user(session, name, role, email=email, password=password))


def add_user(
    session: Session, name: str, role: Role | str, *, email: str | None = None, password: str | None = None
) -> User:
    """Create a user without a token (the admin's form: tokens are made on purpose, with a name)."""
    if not NAME.match(name):
        raise InvalidUser(f"user name {name!r}: use letters, digits and . _ @ - (at most 100 characters)")
    try:
        role = Role(role)
    except ValueError:
        raise InvalidUser(f"role {role!r}: choose admin or editor") from None
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise InvalidUser(f"a user named {name!r} already exists")
    user = User(name=name, role=role, email=normalise_email(email) if email else None)
    if password is not None:
        passwords.set_password(user, password)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, name: str, password: str, *, keep: int | None = None) -> int:
    """Give `name` a new password and sign out every browser of theirs but the session with row id `keep`
    (the one that asked); returns how many sessions were ended."""
    user = get_user(session, name)
    passwords.set_password(user, password)
    session.flush()
    return websessions.revoke_all(session, user, keep=keep)


def get_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserNotFound(name)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def active_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)
        )
    )


def authenticate(session: Session, token: str, now: dt.datetime | None = None) -> User:
    """The user a bearer token belongs to; unknown and revoked tokens fail alike (no hint which)."""
    now = now or utcnow()
    if not token.startswith(TOKEN_PREFIX):
        raise AuthenticationFailed("invalid or revoked API token")
    # The lookup is by hash, so comparing secrets in constant time is the database index's business,
    # and a timing difference could only reveal a hash prefix, which does not help find a token.
    row = session.execute(
        select(ApiToken, User)
        .join(User)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None), User.deactivated_at.is_(None))
    ).first()
    if row is None:
        raise AuthenticationFailed("invalid or revoked API token")
    api_token, user = row
    if api_token.last_used_at is None or now - api_token.last_used_at >= LAST_USED_RESOLUTION:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == api_token.id)
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    return user


def revoke(session: Session, *, prefix: str | None = None, name: str | None = None) -> int:
    """Revoke one token by its prefix, or every token of a user; returns how many were revoked."""
    now = utcnow()
    if prefix is not None:
        token = session.scalar(select(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked_at.is_(None)))
        if token is None:
            raise TokenNotFound(prefix)
        token.revoked_at = now
        session.flush()
        return 1
    if name is None:
        raise InvalidUser("name a token prefix or a user to revoke")
    user = get_user(session, name)
    tokens = active_tokens(session, user)
    for token in tokens:
        token.revoked_at = now
    session.flush()
    return len(tokens)


def rotate(session: Session, name: str) -> IssuedToken:
    """Issue a new token for a user and revoke all their previous ones in the same transaction."""
    user = get_user(session, name)
    revoke(session, name=name)
    return _new_token(session, user)


# --- roles, deactivation and named tokens (issue 14) ---

TOKEN_PURPOSE_LENGTH = 100


def create_token(session: Session, name: str, purpose: str) -> IssuedToken:
    """Issue one more token for `name`, labelled with what it is for; returned once, never stored."""
    purpose = " ".join(purpose.split())
    if not purpose or len(purpose) > TOKEN_PURPOSE_LENGTH:
        raise InvalidUser(f"say what the token is for in 1 to {TOKEN_PURPOSE_LENGTH} characters")
    user = get_user(session, name)
    if user.deactivated_at is not None:
        raise InvalidUser(f"{name} is deactivated: reactivate them before issuing a token")
    return _new_token(session, user, purpose)


def token_owner(session: Session, prefix: str) -> User:
    """The user an active token belongs to (so a page can check whose token it is revoking)."""
    user = session.scalar(select(User).join(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked_at.is_(None)))
    if user is None:
        raise TokenNotFound(prefix)
    return user


def set_role(session: Session, name: str, role: Role | str) -> Role:
    """Change `name`'s role; returns the previous one. The last active admin cannot become an editor."""
    try:
        role = Role(role)
    except ValueError:
        raise InvalidUser(f"role {role!r}: choose admin or editor") from None
    user = get_user(session, name)
    previous = user.role
    if previous == Role.admin and role != Role.admin:
        _keep_an_admin(session, user, "become an editor")
    user.role = role
    session.flush()
    return previous


def _keep_an_admin(session: Session, user: User, change: str) -> None:
    others = session.scalar(
        select(User.id).where(User.role == Role.admin, User.deactivated_at.is_(None), User.id != user.id).limit(1)
    )
    if others is None:
        raise InvalidUser(f"{user.name} is the last active admin and cannot {change}: make another admin first")


def deactivate(session: Session, name: str) -> int:
    """Stop `name` from signing in or using their tokens (their rows stay, for the record); ends their
    sessions and returns how many. The last active admin cannot be deactivated."""
    user = get_user(session, name)
    if user.deactivated_at is not None:
        raise InvalidUser(f"{name} is already deactivated")
    if user.role == Role.admin:
        _keep_an_admin(session, user, "be deactivated")
    user.deactivated_at = utcnow()
    session.flush()
    return websessions.revoke_all(session, user)


def reactivate(session: Session, name: str) -> None:
    """Let a deactivated user sign in and use their (unrevoked) tokens again."""
    user = get_user(session, name)
    if user.deactivated_at is None:
        raise InvalidUser(f"{name} is active already")
    user.deactivated_at = None
    session.flush()
