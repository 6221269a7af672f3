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
ARCHIVE = "/archive"  # the index; an issue is ARCHIVE + "/" + its slug
FEED = "/feed.xml"
UNDO = "/undo"  # after UNSUBSCRIBE + token: the unsubscribed page's "subscribe again" button
STYLESHEET = "/static/style.css"
HEALTH = "/healthz"
WEBHOOKS = "/webhooks/"  # + ses, sendgrid, postmark, mailgun: providers' bounce and complaint webhooks

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


def archive_url(base_url: str, slug: str | None = None) -> str:
    return f"{base_url}{ARCHIVE}/{slug}" if slug else f"{base_url}{ARCHIVE}"


def feed_url(base_url: str) -> str:
    return f"{base_url}{FEED}"


def open_url(base_url: str, token: str) -> str:
    """The open pixel of one delivery (`token` is a placeholder in a campaign's pre-rendered HTML)."""
    return f"{base_url}{OPEN}{token}"


def click_token(token: str, position: int) -> str:
    """A click token: the delivery's signed token, a dot, and the link's position in its campaign."""
    return f"{token}.{position}"


def split_click_token(click: str) -> tuple[str, int] | None:
    """The signed token and link position of a click token, or None when it does not have that shape."""
    token, dot, position = click.rpartition(".")
    if not dot or not position.isascii() or not position.isdigit() or len(position) > 9:
        return None
    return token, int(position)


def click_url(base_url: str, token: str, position: int) -> str:
    """The tracked link to a campaign's link number `position`; the redirect goes to its registered URL."""
    return f"{base_url}{CLICK}{click_token(token, position)}"
