"""Signed, purpose-bound tokens: what a link in an email or on a page carries, and nothing else."""

from __future__ import annotations

import datetime as dt
import hmac
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from itsdangerous import BadSignature, SignatureExpired, Signer, TimestampSigner

from newsletter.errors import NotFound

if TYPE_CHECKING:
    from newsletter.config import Settings


class UnknownToken(NotFound):
    """A token that is forged, for another purpose, or for something that no longer exists."""


class ExpiredToken(UnknownToken):
    """A genuine confirmation link that is older than CONFIRM_MAX_AGE."""


class TokenPurpose(StrEnum):
    confirm = "confirm"
    unsubscribe = "unsubscribe"
    preferences = "preferences"
    track = "track"
    bounce = "bounce"  # the VERP return path of one delivery (newsletter/verp.py)


CONFIRM_MAX_AGE = dt.timedelta(days=7)


_MAX_AGE = {TokenPurpose.confirm: CONFIRM_MAX_AGE}
_LOWERCASE_MAC = 24  # hex digits: 96 bits
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def binding(created_at: dt.datetime) -> int:
    """What a subscriber's token is bound to: their row's creation time, in microseconds since 1970.

    A row that later gets the same id (a database rebuilt from an export, a sequence reset) was created at
    another moment, so an old link cannot act on it; the value is no personal data, and SQL can compare
    it (the one-click fast path checks it inside its single statement).
    """
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    delta = created_at.astimezone(dt.UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def bound_time(value: int) -> dt.datetime:
    """The creation time a token's binding names (the inverse of `binding`)."""
    return _EPOCH + dt.timedelta(microseconds=value)


class Reading(NamedTuple):
    """What a token says. Unbound tokens (made before links were bound, so in mail already sent) stay valid
    for the row with their id, under two rules that keep them off anyone else's row:

    - Since migration 0002 no id is handed out twice, so the row with that id is the one it was made for.
      (An id SQLite had already reused before 0002 ran is beyond any token format's repair.)
    - A timestamped (confirmation) token must be older than the row it acts on: a row created after the
      link was signed cannot be the one it was made for. Unbound confirmation links die within
      CONFIRM_MAX_AGE anyway; the unsubscribe and preferences links in old campaign mail carry no time.

    What remains is a database rebuilt with explicit ids while old mail is in people's mailboxes: rotate
    SECRET_KEY then (README, "Rebuilding a database"): old links name rows that are no longer theirs.
    """

    ids: tuple[int, ...]
    bound_to: dt.datetime | None  # the subscriber's created_at the token was made for; None: unbound
    signed_at: dt.datetime | None = None  # when a timestamped (confirmation) token was signed


class Tokens:
    """Opaque, purpose-bound signed tokens: ids packed in base64, an HMAC per purpose.

    Unsubscribe links must keep working in old emails, so those tokens carry no expiry; confirmation links
    carry a timestamp and expire after `CONFIRM_MAX_AGE` (a forwarded old confirmation mail should not sign
    anyone up months later). The purpose is the itsdangerous salt, so an unsubscribe token can never
    confirm. Signers are built once because the delivery path signs several tokens per recipient.

    New tokens are signed with `secret_key`; tokens signed with one of `old_keys` (a key rotation) still
    verify, so links in mail already sent keep working.
    """

    def __init__(self, secret_key: str, old_keys: Sequence[str] = ()) -> None:
        # itsdangerous signs with the last key of the list and verifies with each, newest first.
        keys = [*(k for k in old_keys if k != secret_key), secret_key]
        self._signers: dict[TokenPurpose, Signer] = {
            purpose: (TimestampSigner if purpose in _MAX_AGE else Signer)(keys, salt=f"newsletter.{purpose}")
            for purpose in TokenPurpose
        }
        # itsdangerous derives the key and builds a new HMAC on every call (~25 us); the delivery path signs
        # three tokens per recipient and every hot web request reads one, so each purpose and key is keyed
        # once. The current key comes first: an old key is only tried when it does not match.
        self._macs = {
            purpose: [
                hmac.new(signer.derive_key(key), digestmod=signer.digest_method) for key in reversed(signer.secret_keys)
            ]
            for purpose, signer in self._signers.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        return cls(settings.secret_key, settings.previous_secret_keys)

    def _signature(self, purpose: TokenPurpose, value: bytes, key: int = 0) -> bytes:
        """What itsdangerous' `get_signature` returns, from the pre-keyed HMAC of one key."""
        mac = self._macs[purpose][key].copy()
        mac.update(value)
        return urlsafe_b64encode(mac.digest()).rstrip(b"=")

    def _verified(self, purpose: TokenPurpose, value: bytes, signature: bytes) -> bool:
        # Compare the exact signature text in constant time: itsdangerous compares decoded bytes, and
        # base64's spare low bits would let a second spelling of the same signature through.
        return any(
            hmac.compare_digest(self._signature(purpose, value, key), signature)
            for key in range(len(self._macs[purpose]))
        )

    def make(self, purpose: TokenPurpose, *ids: int, bound_to: dt.datetime | None = None) -> str:
        """A token for `ids`; `bound_to` (a subscriber's created_at) binds it to that very row."""
        parts = [*ids] if bound_to is None else [*ids, binding(bound_to)]
        packed = urlsafe_b64encode(b".".join(b"%x" % i for i in parts)).rstrip(b"=")
        if purpose in _MAX_AGE:
            return self._signers[purpose].sign(packed).decode("ascii")
        return (packed + b"." + self._signature(purpose, packed)).decode("ascii")

    def make_lowercase(self, purpose: TokenPurpose, value: int) -> str:
        """A token for one id in lowercase letters and digits only, `<hex id>-<hex mac>`: for the local
        part of an address, whose case a relay may fold (a bounce then comes back to another spelling)."""
        mac = self._macs[purpose][0].copy()
        mac.update(b"%x" % value)
        return f"{value:x}-{mac.hexdigest()[:_LOWERCASE_MAC]}"

    def read_lowercase(self, purpose: TokenPurpose, token: str) -> int:
        """The id of a `make_lowercase` token, in whatever case it comes back; UnknownToken if forged."""
        value, _, signature = token.lower().partition("-")
        if not (value.isalnum() and value.isascii() and len(value) <= 16) or len(signature) != _LOWERCASE_MAC:
            raise UnknownToken("this token is not valid")
        for key in range(len(self._macs[purpose])):
            mac = self._macs[purpose][key].copy()
            mac.update(value.encode())
            if hmac.compare_digest(mac.hexdigest()[:_LOWERCASE_MAC], signature):
                try:
                    return int(value, 16)
                except ValueError:
                    break
        raise UnknownToken("this token is not valid")

    def read_bound(self, purpose: TokenPurpose, token: str, count: int) -> Reading:
        """The `count` ids a token carries and the creation time it is bound to (None for older tokens)."""
        signer = self._signers[purpose]
        try:
            value, _, signature = token.encode("ascii").rpartition(b".")
            if not self._verified(purpose, value, signature):
                raise BadSignature("signature mismatch")
            signed_at = None
            if isinstance(signer, TimestampSigner):
                unsigned = signer.unsign(
                    token.encode("ascii"), max_age=int(_MAX_AGE[purpose].total_seconds()), return_timestamp=True
                )
                assert isinstance(unsigned, tuple)  # return_timestamp=True
                packed, signed_at = unsigned
            else:
                packed = value
            payload = urlsafe_b64decode(packed + b"=" * (-len(packed) % 4))
            parts = tuple(int(part, 16) for part in payload.split(b"."))
            if len(parts) not in (count, count + 1):
                raise ValueError("wrong number of ids")
            bound_to = bound_time(parts[count]) if len(parts) > count else None
        except SignatureExpired:
            raise ExpiredToken("this link has expired") from None
        except (BadSignature, ValueError, OverflowError, UnicodeEncodeError):
            raise UnknownToken("this link is not valid") from None
        return Reading(parts[:count], bound_to, signed_at)

    def read(self, purpose: TokenPurpose, token: str, count: int) -> tuple[int, ...]:
        """The ids of a token that is bound to no row (tracking); a bound token is not valid here."""
        reading = self.read_bound(purpose, token, count)
        if reading.bound_to is not None:
            raise UnknownToken("this link is not valid")
        return reading.ids
