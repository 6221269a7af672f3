"""Admin passwords: the rules a new one must meet, Argon2id hashing, and checking one at sign-in.

argon2-cffi's `PasswordHasher` with its defaults (Argon2id, RFC 9106's low-memory profile); a hash made
with older parameters is replaced at the next successful sign-in (`check_needs_rehash`). Checking the
password of an unknown user costs one verification against a dummy hash, so the time a sign-in takes does
not tell which user names exist.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import Invalid
from newsletter.models import User

MIN_LENGTH = 10
MAX_BYTES = 1024  # Argon2 hashes any length, but a megabyte "password" is only a way to burn our CPU


class InvalidPassword(Invalid):
    """A new password that breaks a rule; the message says how to pick one that does not."""


# The one hasher (tests swap in one with lower costs, still Argon2id, through `use_hasher`).
_hasher = PasswordHasher()


def use_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Make `hasher` the one used from now on; returns the previous one."""
    global _hasher
    previous, _hasher = _hasher, hasher
    return previous


@cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash("a password nobody has, for user names nobody has")


def check_rules(password: str, *, user_name: str) -> None:
    """Raise InvalidPassword unless `password` is acceptable for the user `user_name`."""
    if len(password) < MIN_LENGTH:
        raise InvalidPassword(
            f"the password is too short ({len(password)} characters): use at least {MIN_LENGTH}, "
            "e.g. four or five random words"
        )
    if len(password.encode()) > MAX_BYTES:
        raise InvalidPassword(f"the password is too long: use at most {MAX_BYTES} bytes")
    if password.strip().casefold() == user_name.casefold() or password.casefold() in user_name.casefold():
        raise InvalidPassword("the password must not be the user name: choose something else")
    if len(set(password)) < 3:
        raise InvalidPassword("the password repeats one or two characters: mix in others, or use random words")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def set_password(user: User, password: str) -> None:
    """Check the rules and store the new hash (the caller revokes the user's web sessions)."""
    check_rules(password, user_name=user.name)
    user.password_hash = hash_password(password)


def verify(user: User | None, password: str) -> bool:
    """Whether `password` is the user's; unknown users and API-only users (no password) cost the same."""
    if len(password.encode()) > MAX_BYTES:
        return False
    stored = user.password_hash if user is not None else None
    try:
        _hasher.verify(stored or _dummy_hash(_hasher), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if stored is None or user is None:
        return False
    if _hasher.check_needs_rehash(stored):
        user.password_hash = hash_password(password)
    return True


def user_for_sign_in(session: Session, name: str, password: str) -> User | None:
    """The user `name` when `password` is theirs and they are not deactivated, else None (which of these
    was wrong is not said)."""
    user = session.scalar(select(User).where(User.name == name)) if len(name) <= 100 else None
    if user is not None and user.deactivated_at is not None:
        user = None  # still costs one verification, like an unknown name
    return user if verify(user, password) else None
