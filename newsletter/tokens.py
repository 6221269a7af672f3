"""Signed, purpose-bound tokens: what a link in an email or on a page carries, and nothing else."""

from __future__ import annotations

import datetime as dt
import hmac
from base64 import urlsafe_b64decode, urlsafe_b64encode
from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, Signer, TimestampSigner

from newsletter.errors import NotFound


class UnknownToken(NotFound):
    """A token that is forged, for another purpose, or for something that no longer exists."""


class ExpiredToken(UnknownToken):
    """A genuine confirmation link that is older than CONFIRM_MAX_AGE."""


class TokenPurpose(StrEnum):
    confirm = "confirm"
    unsubscribe = "unsubscribe"
    preferences = "preferences"
    track = "track"


CONFIRM_MAX_AGE = dt.timedelta(days=7)


_MAX_AGE = {TokenPurpose.confirm: CONFIRM_MAX_AGE}


class Tokens:
    """Opaque, purpose-bound signed tokens: ids packed in base64, an HMAC per purpose.

    Unsubscribe links must keep working in old emails, so those tokens carry no expiry; confirmation links
    carry a timestamp and expire after `CONFIRM_MAX_AGE` (a forwarded old confirmation mail should not sign
    anyone up months later). The purpose is the itsdangerous salt, so an unsubscribe token can never
    confirm. Signers are built once because the delivery path signs several tokens per recipient.
    """

    def __init__(self, secret_key: str) -> None:
        self._signers: dict[TokenPurpose, Signer] = {
            purpose: (TimestampSigner if purpose in _MAX_AGE else Signer)(secret_key, salt=f"newsletter.{purpose}")
            for purpose in TokenPurpose
        }
        # itsdangerous derives the key and builds a new HMAC on every call (~25 us); the delivery path signs
        # three tokens per recipient and every hot web request reads one, so each purpose is keyed once.
        self._macs = {
            purpose: hmac.new(signer.derive_key(), digestmod=signer.algorithm.digest_method)  # type: ignore[attr-defined]
            for purpose, signer in self._signers.items()
        }

    def _signature(self, purpose: TokenPurpose, value: bytes) -> bytes:
        """What itsdangerous' `get_signature` returns, from the pre-keyed HMAC."""
        mac = self._macs[purpose].copy()
        mac.update(value)
        return urlsafe_b64encode(mac.digest()).rstrip(b"=")

    def make(self, purpose: TokenPurpose, *ids: int) -> str:
        packed = urlsafe_b64encode(b".".join(b"%x" % i for i in ids)).rstrip(b"=")
        if purpose in _MAX_AGE:
            return self._signers[purpose].sign(packed).decode("ascii")
        return (packed + b"." + self._signature(purpose, packed)).decode("ascii")

    def read(self, purpose: TokenPurpose, token: str, count: int) -> tuple[int, ...]:
        signer = self._signers[purpose]
        try:
            # Compare the exact signature text in constant time: itsdangerous compares decoded bytes, and
            # base64's spare low bits would let a second spelling of the same signature through.
            value, _, signature = token.encode("ascii").rpartition(b".")
            if not hmac.compare_digest(self._signature(purpose, value), signature):
                raise BadSignature("signature mismatch")
            if isinstance(signer, TimestampSigner):
                packed = signer.unsign(token.encode("ascii"), max_age=int(_MAX_AGE[purpose].total_seconds()))
            else:
                packed = value
            payload = urlsafe_b64decode(packed + b"=" * (-len(packed) % 4))
            ids = tuple(int(part, 16) for part in payload.split(b"."))
        except SignatureExpired:
            raise ExpiredToken("this link has expired") from None
        except (BadSignature, ValueError, UnicodeEncodeError):
            raise UnknownToken("this link is not valid") from None
        if len(ids) != count:
            raise UnknownToken("this link is not valid")
        return ids
