"""Postmark's bounce, spam complaint and delivery webhooks. Postmark signs nothing: HTTP basic auth (in the
webhook's URL, over HTTPS) is its only scheme, so the credentials are compared in constant time before
the body is read.

https://postmarkapp.com/developer/webhooks/bounce-webhook
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from newsletter.config import Settings
from newsletter.providers import BadPayload, ProviderEvent, WebhookOff, check_basic_auth, text_of

# https://postmarkapp.com/developer/api/bounce-api#bounce-types
_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
_SOFT = {"SoftBounce", "DnsError", "Blocked", "SMTPApiError"}


def authenticate(settings: Settings, headers: Mapping[str, str]) -> None:
    if not settings.postmark_webhook_auth:
        raise WebhookOff("Postmark", "POSTMARK_WEBHOOK_AUTH")
    check_basic_auth(headers, settings.postmark_webhook_auth)


def parse(body: bytes) -> list[ProviderEvent]:
    try:
        item = json.loads(body)
    except ValueError:
        raise BadPayload("the body is not JSON") from None
    if not isinstance(item, dict) or "RecordType" not in item:
        raise BadPayload("the body is not a Postmark webhook record (no RecordType)")
    event = _event(item)
    return [event] if event is not None else []


def _event(item: dict[str, Any]) -> ProviderEvent | None:
    record_type, bounce_type = item.get("RecordType"), item.get("Type")
    if record_type == "SpamComplaint" or (record_type == "Bounce" and bounce_type == "SpamComplaint"):
        kind = "complaint"
    elif record_type == "Bounce" and bounce_type in _HARD:
        kind = "hard_bounce"
    elif record_type == "Bounce" and bounce_type in _SOFT:
        kind = "soft_bounce"
    elif record_type == "Delivery":
        kind = "delivered"
    else:
        return None  # Transient (still trying), AutoResponder, opens, clicks, ...
    return ProviderEvent(
        kind=kind,  # type: ignore[arg-type]
        recipient=text_of(item.get("Email") or item.get("Recipient")),
        provider_message_id=text_of(item.get("MessageID")),
        diagnostic=text_of(" ".join(str(item.get(k) or "") for k in ("Name", "Description", "Details"))),
        # a bounce's or complaint's record id; a delivery has none (its message id and address name it)
        event_id=f"{record_type}:{item['ID']}" if item.get("ID") is not None else None,
    )
