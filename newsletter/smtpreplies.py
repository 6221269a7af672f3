"""What the text of an SMTP reply says beyond its code: the RFC 3463 enhanced status, and the id a relay gave
the message it accepted (which providers' webhooks name it by)."""

from __future__ import annotations

import re

_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply text, e.g. (5, 1, 1)."""
    match = _ENHANCED.match(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


# How relays name the message they accepted: postfix, SendGrid, Postmark "2.0.0 Ok: queued as ID", Amazon
# SES "Ok ID", Exim "OK id=ID". Providers' webhooks name the message by this id.
_QUEUE_ID = re.compile(
    r"(?:\bqueued as |^\s*(?:2\.\d{1,3}\.\d{1,3}\s+)?ok\s+(?:id=)?)<?([A-Za-z0-9][A-Za-z0-9._@=+/-]{0,254})>?\s*$",
    re.IGNORECASE,
)


def provider_message_id(text: str) -> str | None:
    """The id a relay's 250 reply gives the accepted message, e.g. `Ok: queued as 4F2Kx71Qz3z9` -> that id."""
    match = _QUEUE_ID.search(text)
    return match[1] if match else None
