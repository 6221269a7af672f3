"""Every public URL shape: the paths the web app serves and the absolute links emails carry, built here only."""

from __future__ import annotations

import datetime as dt

from newsletter.tokens import TokenPurpose, Tokens

CONFIRM = "/confirm/"
UNSUBSCRIBE = "/unsubscribe/"
PREFERENCES = "/preferences/"
OPEN = "/o/"
CLICK = "/c/"
SUBSCRIBE = "/subscribe/"
ARCHIVE = "/archive"

# `bound_to` is the subscriber's created_at: the link then acts only on that row (see tokens.binding).


def unsubscribe_url(
    base_url: str, tokens: Tokens, subscriber_id: int, list_id: int, *, bound_to: dt.datetime | None = None
) -> str:
    return f"{base_url}{UNSUBSCRIBE}{tokens.make(TokenPurpose.unsubscribe, subscriber_id, list_id, bound_to=bound_to)}"


def preferences_url(base_url: str, tokens: Tokens, subscriber_id: int, *, bound_to: dt.datetime | None = None) -> str:
    return f"{base_url}{PREFERENCES}{tokens.make(TokenPurpose.preferences, subscriber_id, bound_to=bound_to)}"


def confirm_url(
    base_url: str, tokens: Tokens, subscriber_id: int, list_id: int, *, bound_to: dt.datetime | None = None
) -> str:
    return f"{base_url}{CONFIRM}{tokens.make(TokenPurpose.confirm, subscriber_id, list_id, bound_to=bound_to)}"
