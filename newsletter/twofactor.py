"""Two-factor sign-in with TOTP (RFC 6238, pyotp): enrol, confirm, check a code, recovery codes, disable.

The shared secret is stored encrypted (Fernet) under a key derived from SECRET_KEY with HKDF, so a copy of
the database alone cannot mint codes; keys in OLD_SECRET_KEYS still decrypt after a rotation. A code is
accepted for the current 30-second step or one step either side (clock drift), and only when its step is
later than the last one accepted: a code seen once — typed, shoulder-surfed, phished — is refused after.
Recovery codes are 80 random bits each, so a plain SHA-256 of them is enough (nobody can enumerate 2^80
candidates); each works once.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyotp
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

from newsletter import passwords
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.errors import Invalid
from newsletter.models import RecoveryCode, User

ISSUER = "newsletter"
RECOVERY_CODES = 10
DRIFT_STEPS = 1  # accept the previous and the next 30-second step too


class TwoFactorError(Invalid):
    """A two-factor change that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Enrolment:
    """A secret waiting for its first code: shown as a QR code and as text for typing in."""

    secret: str
    uri: str

    def qr_svg(self) -> str:
        return qr_svg(self.uri)


# `cryptography` (~7 MB of a web process) and segno are imported by the first two-factor sign-in or set-up,
# not at start: most requests never touch a TOTP secret.
def _cipher(settings: Settings) -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    keys = (settings.secret_key, *settings.previous_secret_keys)
    return MultiFernet([Fernet(_derive(key)) for key in keys])


def _derive(secret_key: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"newsletter totp secret v1")
    return base64.urlsafe_b64encode(kdf.derive(secret_key.encode()))


def _secret(settings: Settings, user: User) -> str:
    if user.totp_secret is None:
        raise TwoFactorError(f"{user.name} has not started setting up two-factor sign-in")
    from cryptography.fernet import InvalidToken

    try:
        return _cipher(settings).decrypt(user.totp_secret.encode()).decode()
    except InvalidToken:
        raise TwoFactorError("the two-factor secret cannot be read: was SECRET_KEY changed?") from None


def is_enabled(user: User) -> bool:
    return user.totp_enabled_at is not None


def qr_svg(uri: str) -> str:
    """The QR code of `uri` as an inline SVG element, drawn here (no request leaves the server)."""
    import segno

    # omitsize: a viewBox instead of a fixed width and height, so the stylesheet can size it without cropping
    return segno.make(uri, error="m").svg_inline(omitsize=True, dark="#000", light="#fff")


def begin(session: Session, settings: Settings, user: User) -> Enrolment:
    """Give `user` a new secret, not yet in force: sign-in does not ask for codes until `confirm`."""
    if is_enabled(user):
        raise TwoFactorError("two-factor sign-in is already on; turn it off first to set up a new device")
    secret = pyotp.random_base32()
    user.totp_secret = _cipher(settings).encrypt(secret.encode()).decode()
    user.totp_last_step = None
    session.flush()
    return Enrolment(secret, pyotp.TOTP(secret).provisioning_uri(name=user.name, issuer_name=ISSUER))


def pending(settings: Settings, user: User) -> Enrolment | None:
    """The enrolment `begin` started and no code confirmed yet, if any."""
    if is_enabled(user) or user.totp_secret is None:
        return None
    secret = _secret(settings, user)
    return Enrolment(secret, pyotp.TOTP(secret).provisioning_uri(name=user.name, issuer_name=ISSUER))


def _accept_code(session: Session, settings: Settings, user: User, code: str, now: dt.datetime) -> bool:
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return False
    totp = pyotp.TOTP(_secret(settings, user))
    current = totp.timecode(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return _spend_step(session, user, step)
    return False


def _spend_step(session: Session, user: User, step: int) -> bool:
    """Move the user's last accepted step to `step` unless it is there or later already — one conditional
    UPDATE, so two requests racing with the same code cannot both win."""
    result = session.execute(
        update(User)
        .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False  # this code (or a later one) was used already
    set_committed_value(user, "totp_last_step", step)
    return True


def confirm(session: Session, settings: Settings, user: User, code: str, now: dt.datetime | None = None) -> list[str]:
    """Switch two-factor on once the authenticator's first code matches; returns the recovery codes, shown
    this once."""
    if is_enabled(user):
        raise TwoFactorError("two-factor sign-in is already on")
    if user.totp_secret is None:
        raise TwoFactorError("start the set-up first: no secret is waiting for a code")
    now = now or utcnow()
    if not _accept_code(session, settings, user, code, now):
        raise TwoFactorError("that code does not match: check the device's clock and type the current code")
    user.totp_enabled_at = now
    session.flush()
    return new_recovery_codes(session, user)


def hash_recovery_code(code: str) -> str:
    return hashlib.sha256("".join(code.lower().split()).replace("-", "").encode()).hexdigest()


def new_recovery_codes(session: Session, user: User) -> list[str]:
    """Replace `user`'s recovery codes with ten new ones (returned once; only hashes are kept)."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits, 16 characters
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
        session.add(RecoveryCode(user_id=user.id, code_hash=hash_recovery_code(raw)))
    session.flush()
    return codes


def remaining_recovery_codes(session: Session, user: User) -> int:
    rows = session.scalars(
        select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )
    return len(rows.all())


def verify(session: Session, settings: Settings, user: User, code: str, now: dt.datetime | None = None) -> str | None:
    """Check the second factor of a sign-in: a current TOTP code not used before ("totp"), or an unused
    recovery code, which is spent ("recovery"); None when neither."""
    now = now or utcnow()
    if not is_enabled(user):
        return None
    if _accept_code(session, settings, user, code, now):
        return "totp"
    if len(code) > 64:
        return None
    spent = session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == hash_recovery_code(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return "recovery" if spent.rowcount == 1 else None  # type: ignore[attr-defined]


def disable(session: Session, settings: Settings, user: User, *, password: str, code: str) -> None:
    """Switch two-factor off; asks for the password and a current code (or a recovery code)."""
    if not is_enabled(user):
        raise TwoFactorError("two-factor sign-in is not on")
    if not passwords.verify(user, password):
        raise TwoFactorError("the password is wrong: two-factor sign-in stays on")
    if verify(session, settings, user, code) is None:
        raise TwoFactorError("that code does not match (or was used already): two-factor sign-in stays on")
    reset(session, user)


def reset(session: Session, user: User) -> None:
    """Remove `user`'s second factor and recovery codes (their own `disable`, or an admin's reset for
    someone who lost their device)."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    session.flush()
