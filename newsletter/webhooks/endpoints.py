"""Webhook endpoints: the URLs admins register, the events each receives, and their signing secrets."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import Conflict, Invalid, NotFound
from newsletter.models import WebhookEndpoint
from newsletter.outbox import EVENT_TYPES, notify_on_commit
from newsletter.webhooks.destinations import check_url

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 32  # Standard Webhooks: between 24 and 64 bytes
MAX_DESCRIPTION = 255


class EndpointNotFound(NotFound):
    def __init__(self, endpoint_id: int) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id}")


class InvalidEventTypes(Invalid):
    """Event types an endpoint cannot subscribe to."""


def new_secret() -> str:
    """`whsec_` + base64 of random key bytes, as Standard Webhooks libraries expect it."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_event_types(types: Iterable[str]) -> list[str]:
    """The distinct event types, in the order given; `*` means all of them."""
    chosen = list(dict.fromkeys(t.strip() for t in types if t.strip()))
    if chosen == ["*"]:
        return list(EVENT_TYPES)
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise InvalidEventTypes(
            f"unknown event type{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"choose from {', '.join(EVENT_TYPES)} (or * for all)"
        )
    if not chosen:
        raise InvalidEventTypes(f"choose at least one event type: {', '.join(EVENT_TYPES)} (or * for all)")
    return chosen


def create(
    session: Session, settings: Settings, url: str, event_types: Iterable[str], *, description: str = ""
) -> WebhookEndpoint:
    """A new, enabled endpoint. Its URL is checked first (scheme, and every address its host resolves
    to), so a refused one stores nothing. The secret is shown to the caller now; it is not hidden later
    from admins, but print it only once."""
    types = check_event_types(event_types)
    checked = check_url(url, allow_private=settings.webhooks_allow_private)
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"the description is longer than {MAX_DESCRIPTION} characters")
    endpoint = WebhookEndpoint(
        url=checked, event_types=types, secret=new_secret(), description=description.strip(), enabled=True
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint


def all_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def set_event_types(session: Session, endpoint_id: int, event_types: Iterable[str]) -> WebhookEndpoint:
    endpoint = get(session, endpoint_id)
    endpoint.event_types = check_event_types(event_types)
    session.flush()
    return endpoint


def enable(session: Session, endpoint_id: int) -> WebhookEndpoint:
    """Back on; its deliveries still pending are due at once (each gets one more try at least)."""
    endpoint = get(session, endpoint_id)
    endpoint.enabled = True
    endpoint.disabled_reason = None
    session.flush()
    notify_on_commit(session)
    return endpoint


def disable(session: Session, endpoint_id: int, reason: str = "disabled by an admin") -> WebhookEndpoint:
    endpoint = get(session, endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"webhook endpoint {endpoint_id} is already disabled: {endpoint.disabled_reason}")
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    session.flush()
    return endpoint


def delete(session: Session, endpoint_id: int) -> None:
    """Gone, with its delivery log (the events stay in the outbox)."""
    session.delete(get(session, endpoint_id))
    session.flush()


def rotate_secret(session: Session, endpoint_id: int) -> WebhookEndpoint:
    """A new secret, used from the next attempt on; the old one stops working at once."""
    endpoint = get(session, endpoint_id)
    endpoint.secret = new_secret()
    session.flush()
    return endpoint
