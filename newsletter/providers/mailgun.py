"""Mailgun's webhooks: an HMAC-SHA256 of the timestamp and a one-time token under the account's webhook
signing key, in the JSON body's `signature` object. The signature is checked (in constant time) before
`event-data` is read, a timestamp older than 5 minutes is refused, and each token is remembered for as
long as its timestamp would pass (in Redis when there is one, else in `webhook_nonces`, written by the
same statement that accepts the events), so a captured request cannot be played again.

https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/#securing-webhooks
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
from typing import Any

from newsletter.config import Settings
from newsletter.providers import (
    BadPayload,
    NotVerified,
    ProviderEvent,
    WebhookOff,
    check_fresh,
    normalise_message_id,
    object_of,
    text_of,
    unix_time,
)

MAX_AGE = dt.timedelta(minutes=5)
NONCE_KEPT = MAX_AGE + dt.timedelta(minutes=5)  # the window, plus the future skew check_fresh allows


def verify(settings: Settings, body: bytes) -> tuple[list[ProviderEvent], str]:
    """The events of a request Mailgun signed within 5 minutes, and the digest of its one-time token, which
    the caller spends when it accepts the events (`spend_in_redis`, or `providers.inbox.accept`)."""
    if not settings.mailgun_webhook_signing_key:
        raise WebhookOff("Mailgun", "MAILGUN_WEBHOOK_SIGNING_KEY")
    try:
        payload = json.loads(body)
        signed = payload["signature"]
        timestamp, token, signature = str(signed["timestamp"]), str(signed["token"]), str(signed["signature"])
    except (ValueError, KeyError, TypeError):
        raise NotVerified("the request carries no Mailgun signature (signature.timestamp/token/signature)") from None
    key = settings.mailgun_webhook_signing_key.encode()
    expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise NotVerified("the request's signature does not verify with the configured signing key")
    check_fresh(unix_time(timestamp), MAX_AGE)
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise BadPayload("the body has no event-data object")
    event = _event(data)
    return ([event] if event is not None else []), hashlib.sha256(token.encode()).hexdigest()


REPLAYED = "this request was received before (its token is spent): a replay is refused"


def spend_in_redis(redis_url: str, digest: str) -> None:
    """Remember a token in Redis for as long as its timestamp would pass; NotVerified when it was spent."""
    if not _redis(redis_url).set(_redis_key(digest), 1, nx=True, ex=NONCE_KEPT):
        raise NotVerified(REPLAYED)


def give_back_in_redis(redis_url: str, digest: str) -> None:
    """Forget a token spent by a request that then failed (500), so Mailgun's retry of it is accepted."""
    _redis(redis_url).delete(_redis_key(digest))


def _redis_key(digest: str) -> str:
    return f"newsletter:webhook-nonce:mailgun:{digest}"


@functools.cache
def _redis(url: str) -> Any:
    """One client (a thread-safe connection pool) per Redis URL and process: not a new connection per request."""
    import redis

    return redis.Redis.from_url(url)


def _event(data: dict[str, Any]) -> ProviderEvent | None:
    name, severity = data.get("event"), data.get("severity")
    status = object_of(data.get("delivery-status"))
    enhanced = text_of(status.get("enhanced-code"))
    if name == "failed" and severity == "permanent":
        # Mailgun calls every failure after its retries permanent; a full mailbox still is a soft bounce.
        soft = bool(enhanced) and not str(enhanced).startswith(("5.1.", "5.2.1"))
        kind = "soft_bounce" if soft else "hard_bounce"
    elif name == "complained":
        kind = "complaint"
    elif name == "delivered":
        kind = "delivered"
    else:
        return None  # temporary failures (Mailgun retries), opens, clicks, ...
    headers = object_of(object_of(data.get("message")).get("headers"))
    message_id = text_of(headers.get("message-id"))
    return ProviderEvent(
        kind=kind,  # type: ignore[arg-type]
        recipient=text_of(data.get("recipient")),
        message_id=normalise_message_id(message_id) if message_id else None,
        provider_message_id=message_id,
        status=enhanced,
        diagnostic=text_of(status.get("description") or status.get("message")),
        event_id=text_of(data.get("id")),
    )
