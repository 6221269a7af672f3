"""A NUL in the text the admin API takes (a body's field, a list item, a query filter) is a 422 naming the
field, with nothing changed: PostgreSQL text cannot hold one, and the schema fuzz (tests/test_api_schema.py
with NUL-laden strings) found these as 500s. Attributes, and the subscriber and suppression searches (where
a NUL finds nothing), are tested in test_api.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter import models
from tests.apiclient import Api
from tests.test_api import api, world  # noqa: F401  # the PostgreSQL API client and its rows

pytestmark = pytest.mark.postgres
NUL = "a\x00b"
NEW_LIST = {"slug": "new", "name": "N", "from_email": "n@example.org"}
THEME = {"publication_name": "P", "logo_url": "https://example.org/l.png", "accent_color": "#123456"}

# (method, path, json body or None, query or None, the field the error names); {…} come from `world`
CASES: list[tuple[str, str, Any, Any, str]] = [
    ("POST", "/api/v1/users/root/tokens", {"purpose": NUL}, None, "purpose"),
    *[("PATCH", "/api/v1/lists/weekly", {f: NUL}, None, f) for f in ("name", "from_email", "from_name", "reply_to")],
    *[("PATCH", "/api/v1/lists/weekly", {f: NUL}, None, f) for f in ("description", "postal_address", "language")],
    ("PATCH", "/api/v1/lists/weekly", {"cors_origins": ["https://example.org", NUL]}, None, "cors_origins"),
    *[("PATCH", "/api/v1/lists/weekly", {"theme": {**THEME, f: NUL}}, None, f) for f in THEME],
    ("PATCH", "/api/v1/lists/weekly", {"theme": {"postal_address": NUL}}, None, "postal_address"),
    ("POST", "/api/v1/lists", {**NEW_LIST, "language": NUL}, None, "language"),
    ("POST", "/api/v1/subscribers", {"email": "c@example.com", "lists": [NUL]}, None, "lists"),
    ("POST", "/api/v1/subscribers", {"email": "c@example.com", "language": NUL}, None, "language"),
    ("PATCH", "/api/v1/subscribers/{subscriber}", {"language": NUL}, None, "language"),
    ("POST", "/api/v1/subscribers/{subscriber}/unsubscribe", {"lists": [NUL]}, None, "lists"),
    ("POST", "/api/v1/campaigns", {"digest": "{digest}", "lists": [NUL]}, None, "lists"),
    *[
        ("POST", "/api/v1/campaigns", {"digest": "{digest}", "lists": ["weekly"], f: NUL}, None, f)
        for f in ("subject", "template", "segment")
    ],
    ("POST", "/api/v1/campaigns/test", {"digest": "{digest}", "to": NUL + "@example.com"}, None, "to"),
    ("POST", "/api/v1/campaigns/{campaign}/resend-non-openers", {"subject": NUL}, None, "subject"),
    ("POST", "/api/v1/webhooks", {"url": "https://hooks.example.net/x", "events": [NUL]}, None, "events"),
    ("PATCH", "/api/v1/webhooks/{endpoint}", {"events": [NUL]}, None, "events"),
    ("GET", "/api/v1/campaigns/reach", None, {"list": "weekly", "segment": NUL}, "segment"),
    ("GET", "/api/v1/campaigns/{campaign}/deliveries", None, {"search": NUL}, "search"),
    ("POST", "/api/v1/suppressions/import", None, {"detail": NUL}, "detail"),
]


def filled(value: Any, rows: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**rows) if "{" in value else value
    if isinstance(value, list):
        return [filled(v, rows) for v in value]
    if isinstance(value, dict):
        return {k: filled(v, rows) for k, v in value.items()}
    return value


def snapshot(client: Api) -> dict[str, Any]:
    """Every row these requests could write, as they are."""
    with client.sessions() as session:
        counts = {
            table.__name__: session.scalar(select(func.count()).select_from(table))
            for table in (models.MailingList, models.Subscriber, models.Subscription, models.Campaign)
        }
        counts |= {t.__name__: session.scalar(select(func.count()).select_from(t)) for t in (models.ApiToken,)}
        weekly = session.scalars(select(models.MailingList).where(models.MailingList.slug == "weekly")).one()
        ana = session.scalars(select(models.Subscriber).where(models.Subscriber.email == "ana@example.com")).one()
        hooks = session.scalars(select(models.WebhookEndpoint.event_types)).all()
        return {
            **counts,
            "weekly": (weekly.name, weekly.from_email, weekly.description, weekly.theme, weekly.cors_origins),
            "ana": (ana.attributes, ana.language),
            "subscriptions": sorted(str(s) for s in session.scalars(select(models.Subscription.status))),
            "hooks": hooks,
        }


def test_a_nul_anywhere_is_a_422_naming_the_field_and_changes_nothing(
    api: Api,  # noqa: F811
    world: dict[str, Any],  # noqa: F811
) -> None:
    before = snapshot(api)
    for method, path, body, query, field in CASES:
        answer = api.call(method, filled(path, world), json=filled(body, world), params=query)
        assert answer.status_code == 422, (method, path, field, answer.status_code, answer.text[:300])
        assert field in answer.text, (method, path, field, answer.text[:300])
    assert snapshot(api) == before
