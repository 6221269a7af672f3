"""SendGrid's Event Webhook: an ECDSA P-256 signature (the "signed event webhook") over the timestamp
header followed by the raw body, with the public key shown in SendGrid's console.

https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from newsletter.config import Settings
from newsletter.providers import BadPayload, NotVerified, ProviderEvent, WebhookOff, check_fresh, text_of, unix_time

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# `cryptography` is imported by the first request checked, not at start (see ses.py).

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
MAX_AGE = dt.timedelta(minutes=5)


@lru_cache(maxsize=4)
def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = text.strip().encode()
    key = (
        serialization.load_pem_public_key(data)
        if data.startswith(b"-----")
        else serialization.load_der_public_key(base64.b64decode(data))
    )
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise NotVerified("NEWSLETTER_SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA public key")
    return key


def verify(settings: Settings, headers: Mapping[str, str], body: bytes) -> list[ProviderEvent]:
    """The events of a request that SendGrid signed within the last 5 minutes; NotVerified otherwise."""
    if not settings.sendgrid_webhook_public_key:
        raise WebhookOff("SendGrid", "SENDGRID_WEBHOOK_PUBLIC_KEY")
    timestamp = headers.get(TIMESTAMP, "")
    try:
        signature = base64.b64decode(headers.get(SIGNATURE, ""), validate=True)
    except (binascii.Error, ValueError):
        raise NotVerified("the signature header is not base64") from None
    if not signature or not timestamp:
        raise NotVerified(f"the request has no {SIGNATURE} and {TIMESTAMP} headers")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        _public_key(settings.sendgrid_webhook_public_key).verify(
            signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError):
        raise NotVerified("the request's signature does not verify with the configured key") from None
    check_fresh(unix_time(timestamp), MAX_AGE)
    return parse(body)


def parse(body: bytes) -> list[ProviderEvent]:
    try:
        items = json.loads(body)
    except ValueError:
        raise BadPayload("the body is not JSON") from None
    if not isinstance(items, list):
        raise BadPayload("the body is not a JSON array of events")
    return [event for item in items if isinstance(item, dict) and (event := _event(item)) is not None]


def _event(item: dict[str, Any]) -> ProviderEvent | None:
    name = item.get("event")
    if name == "bounce":
        # `type` is "bounce" (the address refused it for good) or "blocked" (refused this time).
        kind = "hard_bounce" if item.get("type", "bounce") == "bounce" else "soft_bounce"
    elif name == "spamreport":
        kind = "complaint"
    elif name == "delivered":
        kind = "delivered"
    else:
        return None  # processed, deferred, dropped, open, click, ...: not a verdict on the address
    sg_id = str(item.get("sg_message_id") or "")
    return ProviderEvent(
        kind=kind,  # type: ignore[arg-type]
        recipient=text_of(item.get("email")),
        message_id=text_of(item.get("smtp-id")),
        # "<queue id>.filterdrecv-...": the part before ".filter" is what the SMTP relay answered.
        provider_message_id=sg_id.split(".filter", 1)[0] or None,
        status=text_of(item.get("status")),
        diagnostic=text_of(item.get("reason") or item.get("response")),
        event_id=text_of(item.get("sg_event_id")),
    )
