"""The admin API: every route for both roles and for missing, wrong and revoked tokens; then behaviour."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter import confirmations, delivery, lists, models, templates
from newsletter.config import Settings
from newsletter.models import ApiToken, CampaignStatus, Delivery, DeliveryStatus, Subscriber, Subscription, Suppression
from newsletter.rendering import TEMPLATES_DIR
from tests.apiclient import Api, api_client
from tests.factories import SAMPLE_DIGEST, make_list, make_subscriber, publish_sample

pytestmark = pytest.mark.postgres

DIGEST = {
    "title": "Foreign media on Kazakhstan",
    "date": "2025-04-26",
    "slug": "api-digest",
    "items": [{"headline": "Rail", "source": "Ariana", "url": "https://example.com/a", "summary": "Text."}],
}


@pytest.fixture
def api(make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]) -> Iterator[Api]:
    with api_client(make_settings(database_url=pg_url), pg_sessions) as client:
        yield client


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    """A list with subscribers, a digest and a finished campaign with one failed delivery."""
    with api.sessions() as session:
        weekly = make_list(session, slug="weekly")
        make_list(session, slug="spare")
        ana = make_subscriber(session, weekly, "ana@example.com", "Ana")
        make_subscriber(session, weekly, "bob@example.com", "Bob")
        publish_sample(session)
        digest = session.scalars(select(models.Digest)).first()
        assert digest is not None
        campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["weekly"])
        session.add_all(
            [
                Delivery(
                    campaign_id=campaign.id, subscriber_id=ana.id, list_id=weekly.id, status=DeliveryStatus.failed
                ),
            ]
        )
        campaign.status = CampaignStatus.finished
        hook = models.WebhookEndpoint(url="https://hooks.example.net/n", event_types=["campaign.started"], secret="x")
        session.add(hook)
        session.commit()
        return {"campaign": campaign.id, "subscriber": ana.id, "digest": digest.slug, "endpoint": hook.id}


# A delivery status notification about a message of no campaign: recorded as ignored.
DSN = (
    "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n"
    "Content-Type: message/delivery-status\n\nReporting-MTA: dns; relay.example.org\n\n"
    "Final-Recipient: rfc822; gone@example.com\nAction: failed\nStatus: 5.1.1\n\n--b--\n"
)

# (method, path template, json body, editor allowed); values come from `world`.
ROUTES: list[tuple[str, str, Any, bool]] = [
    ("GET", "/api/v1/me", None, True),
    ("GET", "/api/v1/users", None, False),
    ("POST", "/api/v1/users", {"name": "newbie", "role": "editor"}, False),
    ("POST", "/api/v1/users/{name}/rotate", None, False),
    ("DELETE", "/api/v1/users/{name}/tokens", None, False),
    ("DELETE", "/api/v1/tokens/{prefix}", None, False),
    ("POST", "/api/v1/users/{name}/role", {"role": "editor"}, False),
    ("POST", "/api/v1/users/{name}/tokens", {"purpose": "a script"}, False),
    ("POST", "/api/v1/users/{name}/deactivate", None, False),
    ("POST", "/api/v1/users/{name}/reactivate", None, False),
    ("GET", "/api/v1/audit", None, False),
    ("GET", "/api/v1/lists", None, True),
    ("POST", "/api/v1/lists", {"slug": "fresh", "name": "Fresh", "from_email": "n@example.org"}, False),
    ("GET", "/api/v1/lists/{slug}", None, True),
    ("PATCH", "/api/v1/lists/{slug}", {"description": "changed"}, False),
    ("DELETE", "/api/v1/lists/{spare}", None, False),
    ("POST", "/api/v1/lists/{slug}/import", "email\ncsv@example.com\n", False),
    ("GET", "/api/v1/lists/{slug}/export", None, False),
    ("GET", "/api/v1/subscribers", None, False),
    ("GET", "/api/v1/subscribers/export", None, False),
    ("POST", "/api/v1/subscribers", {"email": "new@example.com"}, False),
    ("GET", "/api/v1/subscribers/{subscriber_id}", None, False),
    ("PATCH", "/api/v1/subscribers/{subscriber_id}", {"name": "Ana K"}, False),
    ("POST", "/api/v1/subscribers/{subscriber_id}/unsubscribe", {"lists": []}, False),
    ("GET", "/api/v1/subscribers/{subscriber_id}/gdpr", None, False),
    ("POST", "/api/v1/subscribers/{subscriber_id}/erase", None, False),
    ("DELETE", "/api/v1/subscribers/{subscriber_id}", None, False),
    ("POST", "/api/v1/digests", DIGEST, True),
    ("GET", "/api/v1/digests", None, True),
    ("GET", "/api/v1/digests/{digest}", None, True),
    ("GET", "/api/v1/digests/{digest}/preview", None, True),
    # The world's digest is used by its campaign: an edit is refused (409), a duplicate is a new draft.
    ("PUT", "/api/v1/digests/{digest}", {k: v for k, v in DIGEST.items() if k != "slug"}, True),
    ("POST", "/api/v1/digests/{digest}/duplicate", None, True),
    ("POST", "/api/v1/campaigns/test", {"digest": "{digest}", "to": "editor@example.com"}, True),
    ("GET", "/api/v1/campaigns", None, True),
    ("POST", "/api/v1/campaigns", {"digest": "{digest}", "lists": ["weekly"], "again": True}, True),
    ("GET", "/api/v1/campaigns/{campaign_id}", None, True),
    ("GET", "/api/v1/campaigns/{campaign_id}/deliveries", None, True),
    ("GET", "/api/v1/campaigns/reach", None, True),
    ("GET", "/api/v1/campaigns/{campaign_id}/progress", None, True),
    ("GET", "/api/v1/campaigns/{campaign_id}/timeline", None, True),
    ("GET", "/api/v1/campaigns/{campaign_id}/events", None, True),
    ("POST", "/api/v1/campaigns/{campaign_id}/pause", None, True),
    ("POST", "/api/v1/campaigns/{campaign_id}/resume", None, True),
    ("POST", "/api/v1/campaigns/{campaign_id}/resend", {"statuses": ["failed"]}, True),
    ("POST", "/api/v1/campaigns/{campaign_id}/cancel", None, True),
    ("GET", "/api/v1/suppressions", None, False),
    ("POST", "/api/v1/suppressions", {"email": "never@example.com"}, False),
    ("DELETE", "/api/v1/suppressions/{email}", None, False),
    ("POST", "/api/v1/suppressions/import", "email\nformer@example.com\n", False),
    ("GET", "/api/v1/suppressions/domains", None, False),
    ("POST", "/api/v1/suppressions/domains", {"domain": "*@mailinator.com"}, False),
    ("DELETE", "/api/v1/suppressions/domains/{domain}", None, False),
    ("POST", "/api/v1/bounces", DSN, False),
    # segments (tests/test_api_segments.py has their behaviour)
    ("GET", "/api/v1/segments", None, True),
    ("POST", "/api/v1/segments", {"name": "openers", "filter": {"opened": {"last": 1}}}, False),
    ("POST", "/api/v1/segments/count", {"filter": {"opened": {"last": 1}}}, True),
    ("GET", "/api/v1/segments/{segment}", None, True),
    ("PATCH", "/api/v1/segments/{segment}", {"description": "who opened"}, False),
    ("GET", "/api/v1/segments/{segment}/count", None, True),
    ("GET", "/api/v1/segments/{segment}/export", None, False),
    ("DELETE", "/api/v1/segments/{segment}", None, False),
    ("POST", "/api/v1/campaigns/{campaign_id}/resend-non-openers", {}, True),
]
# Sequences (in this order: the admins' pass creates the sequence, then its step).
_STEP = {"subject": "Welcome", "body": "Hello."}
ROUTES += [
    ("POST", "/api/v1/sequences", {"list": "weekly"}, False),
    ("GET", "/api/v1/sequences", None, True),
    ("GET", "/api/v1/sequences/{slug}", None, True),
    ("POST", "/api/v1/sequences/{slug}/steps", _STEP, False),
    ("PATCH", "/api/v1/sequences/{slug}/steps/1", {"delay_hours": 24}, False),
    ("POST", "/api/v1/sequences/{slug}/steps/1/move", {"to": 1}, False),
    ("POST", "/api/v1/sequences/{slug}/preview", _STEP, True),
    ("POST", "/api/v1/sequences/{slug}/enable", None, False),
    ("POST", "/api/v1/sequences/{slug}/disable", None, False),
    ("DELETE", "/api/v1/sequences/{slug}/steps/1", None, False),
]
# Outgoing webhooks (admins only; tests/test_webhooks_api_cli.py has their behaviour). An IP literal: nothing
# to resolve, and a public address passes the SSRF check.
ROUTES += [
    ("GET", "/api/v1/webhooks", None, False),
    ("POST", "/api/v1/webhooks", {"url": "https://93.184.215.14/hook", "events": ["campaign.finished"]}, False),
    ("GET", "/api/v1/webhooks/{endpoint_id}", None, False),
    ("PATCH", "/api/v1/webhooks/{endpoint_id}", {"events": ["campaign.started", "campaign.paused"]}, False),
    ("GET", "/api/v1/webhooks/{endpoint_id}/deliveries", None, False),
    ("POST", "/api/v1/webhooks/{endpoint_id}/rotate-secret", None, False),
    ("POST", "/api/v1/webhooks/deliveries/0/redeliver", None, False),
    ("DELETE", "/api/v1/webhooks/{endpoint_id}", None, False),
]
# Path parameters as the OpenAPI document names them.
DOCUMENTED_NAMES = {
    "{spare}": "{slug}",
    "{digest}": "{slug}",
    "{segment}": "{name}",
    "/steps/1": "/steps/{position}",
    "/deliveries/0/": "/deliveries/{delivery_id}/",
}


def routes(w: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    values = {
        "{name}": "ed",
        "{prefix}": "nl_unknown",
        "{slug}": "weekly",
        "{spare}": "spare",
        "{subscriber_id}": str(w["subscriber"]),
        "{campaign_id}": str(w["campaign"]),
        "{digest}": w["digest"],
        "{email}": "never@example.com",
        "{domain}": "mailinator.com",
        "{segment}": "openers",
        "{endpoint_id}": str(w["endpoint"]),
    }

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    result = []
    for method, template, body, editor in ROUTES:
        if isinstance(body, dict) and body.get("digest") == "{digest}":
            body = {**body, "digest": w["digest"]}
        result.append((method, fill(template), body, editor))
    return result


def send(api: Api, role: str | None, method: str, path: str, body: Any) -> Any:
    if isinstance(body, str):
        return api.call(method, path, role, content=body, headers={"Content-Type": "text/csv"})
    return api.call(method, path, role, json=body)


def test_every_route_is_documented_and_covered(api: Api) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in api.client.get("/openapi.json").json()["paths"].items()
        if path.startswith("/api/v1")
        for method in operations
    }
    covered = set()
    for method, template, _, _ in ROUTES:
        for ours, theirs in DOCUMENTED_NAMES.items():
            template = template.replace(ours, theirs)
        covered.add((method, template.partition("?")[0]))
    assert documented == covered


@pytest.mark.parametrize("role", [None, "wrong", "revoked"])
def test_every_route_refuses_missing_wrong_and_revoked_tokens(
    api: Api, world: dict[str, Any], role: str | None
) -> None:
    for method, path, body, _ in routes(world):
        response = send(api, role, method, path, body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]


def test_editors_get_403_outside_digests_campaigns_and_reading(api: Api, world: dict[str, Any]) -> None:
    for method, path, body, editor_allowed in routes(world):
        response = send(api, "editor", method, path, body)
        if editor_allowed:
            assert response.status_code not in (401, 403), (method, path, response.text)
            assert response.status_code < 500
        else:
            assert response.status_code == 403, (method, path, response.text)
            assert "admin" in response.json()["error"]


def test_admins_may_do_everything(api: Api, world: dict[str, Any]) -> None:
    for method, path, body, _ in routes(world):
        response = send(api, "admin", method, path, body)
        assert response.status_code not in (401, 403), (method, path, response.text)
        assert response.status_code < 500
        # the world's campaign was made finished without ever starting: nobody to resend to
        expected_failures = {
            "/api/v1/tokens/nl_unknown": 404,
            "/pause": 409,
            "/resend-non-openers": 409,
            "/deliveries/0/redeliver": 422,  # no such delivery: ids start at 1
        }
        if method == "PUT":
            assert response.status_code == 409 and "duplicate it to edit" in response.text, response.text
            continue
        for suffix, status in expected_failures.items():
            if path.endswith(suffix):
                assert response.status_code == status, response.text
                break
        else:
            if not path.endswith("/resume") and not path.endswith("/cancel"):
                assert response.status_code in (200, 201, 204), (method, path, response.text)


def test_last_used_is_recorded_without_a_write_per_request(api: Api) -> None:
    for _ in range(3):
        assert api.call("GET", "/api/v1/me").status_code == 200
    with api.sessions() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.prefix == api.tokens["admin"][:12])).one()
        assert token.last_used_at is not None
        assert token.token_hash != api.tokens["admin"]


def test_users_create_rotate_revoke(api: Api) -> None:
    created = api.call("POST", "/api/v1/users", json={"name": "writer", "role": "editor"})
    assert created.status_code == 201
    token = created.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/me", headers=headers).json()["role"] == "editor"
    rotated = api.call("POST", "/api/v1/users/writer/rotate").json()["token"]
    assert api.client.get("/api/v1/me", headers=headers).status_code == 401
    assert api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {rotated}"}).status_code == 200
    listed = {u["name"]: u for u in api.call("GET", "/api/v1/users").json()}
    assert [t["prefix"] for t in listed["writer"]["tokens"]] == [rotated[:12]]
    assert api.call("DELETE", f"/api/v1/tokens/{rotated[:12]}").json() == {"revoked": 1}
    assert api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {rotated}"}).status_code == 401
    duplicate = api.call("POST", "/api/v1/users", json={"name": "writer", "role": "admin"})
    assert duplicate.status_code == 422 and "already exists" in duplicate.json()["error"]


def test_list_crud_with_theme_and_counts(api: Api) -> None:
    body = {
        "slug": "daily",
        "name": "Daily",
        "from_email": "Daily@Example.org",
        "opt_in": "single",
        "visibility": "private",
        "postal_address": "1 Main St",
        "theme": {"accent_color": "#1a5fb4", "logo_url": "https://example.org/logo.png"},
    }
    created = api.call("POST", "/api/v1/lists", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["from_email"] == "daily@example.org"
    assert created.json()["counts"] == {"confirmed": 0, "pending": 0, "unsubscribed": 0}
    bad = api.call("PATCH", "/api/v1/lists/daily", json={"theme": {"accent_color": "blue"}})
    assert bad.status_code == 422 and "accent_color" in bad.json()["error"]
    changed = api.call("PATCH", "/api/v1/lists/daily", json={"name": "Daily News", "reply_to": "r@example.org"})
    assert changed.json()["name"] == "Daily News" and changed.json()["theme"]["accent_color"] == "#1a5fb4"
    api.call("POST", "/api/v1/subscribers", json={"email": "a@example.com", "lists": ["daily"], "confirmed": True})
    api.call("POST", "/api/v1/subscribers", json={"email": "b@example.com", "lists": ["daily"]})
    assert api.call("GET", "/api/v1/lists/daily").json()["counts"] == {"confirmed": 1, "pending": 1, "unsubscribed": 0}
    assert api.call("DELETE", "/api/v1/lists/daily").status_code == 204
    missing = api.call("GET", "/api/v1/lists/daily")
    assert missing.status_code == 404 and missing.json()["error"] == "no list with slug 'daily'"


def test_a_lists_default_template_is_read_and_set_and_an_unknown_one_changes_nothing(api: Api) -> None:
    with api.sessions() as session:
        make_list(session, slug="styled", name="Styled")
        templates.save_template(session, "house", (TEMPLATES_DIR / "email" / "digest" / "body.mjml").read_text())
        session.commit()
    assert api.call("GET", "/api/v1/lists/styled").json()["default_template"] is None
    chosen = api.call("PATCH", "/api/v1/lists/styled", json={"default_template": "house"})
    assert chosen.status_code == 200 and chosen.json()["default_template"] == "house"
    assert api.call("GET", "/api/v1/lists", "editor").json()[0]["default_template"] == "house"
    # an unknown template: 404 naming it, and neither the template nor the other field of the body is stored
    unknown = api.call("PATCH", "/api/v1/lists/styled", json={"name": "Renamed", "default_template": "nope"})
    assert unknown.status_code == 404 and "no template named 'nope'" in unknown.json()["error"]
    for bad in ({"default_template": 7}, {"default_template": "x" * 101}, {"default_template": "a\u0000b"}):
        assert api.call("PATCH", "/api/v1/lists/styled", json=bad).status_code == 422, bad
    assert api.call("PATCH", "/api/v1/lists/other", json={"default_template": "house"}).status_code == 404
    with api.sessions() as session:
        stored = lists.get_list(session, "styled")
        assert (stored.name, templates.default_name(session, stored)) == ("Styled", "house")
    # null (or "") goes back to the bundled template; a campaign then uses none
    back = api.call("PATCH", "/api/v1/lists/styled", json={"default_template": None})
    assert back.status_code == 200 and back.json()["default_template"] is None
    assert api.call("PATCH", "/api/v1/lists/styled", json={"default_template": ""}).json()["default_template"] is None
    document = api.client.get("/openapi.json").json()
    assert "default_template" in document["components"]["schemas"]["ListPatch"]["properties"]
    assert "default_template" in document["components"]["schemas"]["ListOut"]["required"]


def test_the_slug_new_is_refused_with_a_reason(api: Api) -> None:
    body = {"slug": "new", "name": "New", "from_email": "n@example.org"}
    refused = api.call("POST", "/api/v1/lists", json=body)
    assert refused.status_code == 422 and "reserved for the admin's pages" in refused.json()["error"]
    assert api.call("GET", "/api/v1/lists").json() == []


def test_new_lists_take_tracking_from_the_setting_unless_told(
    make_settings: Callable[..., Settings], pg_url: str, pg_sessions: sessionmaker[Session]
) -> None:
    with api_client(make_settings(database_url=pg_url, track_default=False), pg_sessions) as api:
        body = {"name": "Quiet", "from_email": "quiet@example.org"}
        assert api.call("POST", "/api/v1/lists", json={**body, "slug": "quiet"}).json()["tracking"] is False
        told = api.call("POST", "/api/v1/lists", json={**body, "slug": "loud", "tracking": True})
        assert told.json()["tracking"] is True


def test_list_delete_refused_while_a_campaign_is_sending(api: Api) -> None:
    with api.sessions() as session:
        weekly = make_list(session, slug="busy")
        make_subscriber(session, weekly)
        digest = publish_sample(session, SAMPLE_DIGEST)
        campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["busy"])
        campaign.status = CampaignStatus.sending
        session.commit()
    response = api.call("DELETE", "/api/v1/lists/busy")
    assert response.status_code == 409 and "sending" in response.json()["error"]


def test_subscriber_search_pages_stably_under_inserts(api: Api) -> None:
    with api.sessions() as session:
        weekly = make_list(session, slug="paged")
        for i in range(7):
            subscriber = make_subscriber(session, weekly, f"p{i}@example.com", f"P {i}")
            subscriber.attributes = {"city": "Almaty" if i % 2 else "Astana"}
        session.commit()
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"list": "paged", "limit": 3}
        if after is not None:
            params["after"] = after
        page = api.call("GET", "/api/v1/subscribers", params=params).json()
        seen.extend(item["email"] for item in page["items"])
        if len(seen) == 3:  # someone subscribes while we page: it shows up at the end, nothing repeats
            api.call("POST", "/api/v1/subscribers", json={"email": "late@example.com", "lists": ["paged"]})
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [f"p{i}@example.com" for i in range(7)] + ["late@example.com"]
    found = api.call("GET", "/api/v1/subscribers", params={"attribute": "city:Almaty", "email": "P"}).json()
    assert [i["email"] for i in found["items"]] == ["p1@example.com", "p3@example.com", "p5@example.com"]
    pending = api.call("GET", "/api/v1/subscribers", params={"list": "paged", "subscription_status": "pending"})
    assert [i["email"] for i in pending.json()["items"]] == ["late@example.com"]
    for params in ({"attribute": "\x00:x"}, {"email": "p\x00"}, {"attribute": "city:Alm\x00aty"}):
        nothing = api.call("GET", "/api/v1/subscribers", params=params)  # no stored text can hold a NUL
        assert nothing.status_code == 200 and nothing.json()["items"] == [], params
        assert api.call("GET", "/api/v1/subscribers/export", params=params).text.count("\n") == 1  # the header


def test_subscriber_update_block_unsubscribe_delete(api: Api) -> None:
    api.call("POST", "/api/v1/lists", json={"slug": "one", "name": "One", "from_email": "n@example.org"})
    created = api.call(
        "POST",
        "/api/v1/subscribers",
        json={"email": "Zoe@Example.com", "name": "Zoe", "attributes": {"city": "Almaty"}, "lists": ["one"]},
    ).json()
    sid = created["id"]
    assert created["email"] == "zoe@example.com"
    patched = api.call("PATCH", f"/api/v1/subscribers/{sid}", json={"attributes": {"plan": "pro", "city": None}})
    assert patched.json()["attributes"] == {"plan": "pro"}
    assert api.call("PATCH", f"/api/v1/subscribers/{sid}", json={"blocked": True}).json()["status"] == "blocklisted"
    assert api.call("POST", f"/api/v1/subscribers/{sid}/unsubscribe", json={}).json() == {"unsubscribed": 1}
    assert api.call("GET", f"/api/v1/subscribers/{sid}").json()["subscriptions"][0]["status"] == "unsubscribed"
    assert api.call("DELETE", f"/api/v1/subscribers/{sid}").status_code == 204
    assert api.call("GET", f"/api/v1/subscribers/{sid}").status_code == 404
    bad = api.call("POST", "/api/v1/subscribers", json={"email": "not an address"})
    assert bad.status_code == 422 and "@" in bad.json()["error"]


def test_csv_import_and_export_over_http(api: Api) -> None:
    api.call("POST", "/api/v1/lists", json={"slug": "csv", "name": "CSV", "from_email": "n@example.org"})
    body = 'email;name;city\na@example.com;=HYPERLINK("http://evil");Almaty\nnope;X;Y\n'
    report = api.call("POST", "/api/v1/lists/csv/import", content=body, headers={"Content-Type": "text/csv"}).json()
    assert report["imported"] == 1 and report["errors"][0]["line"] == 3
    assert report["pending_confirmation"] == 1 and report["confirmation_emails_queued"] is True
    assert api.jobs.confirmations
    # The import left them pending: not in the default export (confirmed only), there with status=all.
    assert api.call("GET", "/api/v1/lists/csv/export").text.splitlines() == ["email,name,status"]
    exported = api.call("GET", "/api/v1/lists/csv/export", params={"status": "all"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines() == [
        "email,name,status,city",
        'a@example.com,"\'=HYPERLINK(""http://evil"")",pending,Almaty',
    ]
    strict = api.call(
        "POST", "/api/v1/lists/csv/import", params={"strict": True}, content=body, headers={"Content-Type": "text/csv"}
    )
    assert strict.status_code == 422 and strict.json()["detail"]["errors"][0]["line"] == 3
    no_email = api.call("POST", "/api/v1/lists/csv/import", content="name\nx\n", headers={"Content-Type": "text/csv"})
    assert no_email.status_code == 422 and "email" in no_email.json()["error"]


def test_gdpr_export_and_erase_over_http(api: Api) -> None:
    api.call("POST", "/api/v1/lists", json={"slug": "g", "name": "G", "from_email": "n@example.org"})
    sid = api.call("POST", "/api/v1/subscribers", json={"email": "gdpr@example.com", "lists": ["g"]}).json()["id"]
    exported = api.call("GET", f"/api/v1/subscribers/{sid}/gdpr").json()
    assert exported["subscriber"]["email"] == "gdpr@example.com" and exported["subscriptions"][0]["list"] == "g"
    assert api.call("POST", f"/api/v1/subscribers/{sid}/erase").status_code == 204
    after = api.call("GET", f"/api/v1/subscribers/{sid}").json()
    assert "gdpr@example.com" not in str(after)
    again = api.call("POST", "/api/v1/subscribers", json={"email": "gdpr@example.com"})
    assert again.status_code == 422 and "suppression" in again.json()["error"]


def test_digest_publish_read_and_conflict(api: Api) -> None:
    first = api.call("POST", "/api/v1/digests", "editor", json=DIGEST)
    assert first.status_code == 201 and first.json() == {"slug": "api-digest", "created": True}
    assert api.call("POST", "/api/v1/digests", "editor", json=DIGEST).json()["created"] is False
    changed = {**DIGEST, "title": "Other"}
    assert api.call("POST", "/api/v1/digests", "editor", json=changed).status_code == 409
    bad = api.call("POST", "/api/v1/digests", "editor", json={**DIGEST, "items": [{"headline": "x"}]})
    assert bad.status_code == 422 and bad.json()["detail"]
    read = api.call("GET", "/api/v1/digests/api-digest", "editor").json()
    assert read["items"][0]["url"] == "https://example.com/a"
    assert [d["slug"] for d in api.call("GET", "/api/v1/digests", "editor").json()] == ["api-digest"]


def test_preview_and_test_send(api: Api) -> None:
    with api.sessions() as session:
        make_list(session, slug="weekly", name="The Weekly")
        session.commit()
    assert api.call("POST", "/api/v1/digests", "editor", json=DIGEST).status_code == 201
    html = api.call("GET", "/api/v1/digests/api-digest/preview", "editor")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert ">Rail<" in html.text and "%%" not in html.text and "/unsubscribe/" in html.text
    text = api.call("GET", "/api/v1/digests/api-digest/preview?text=true", "editor")
    assert text.headers["content-type"].startswith("text/plain") and "Rail" in text.text
    assert api.call("GET", "/api/v1/digests/nope/preview", "editor").status_code == 404

    sent = api.call("POST", "/api/v1/campaigns/test", "editor", json={"digest": "api-digest", "to": "ed@example.com"})
    assert sent.status_code == 200 and sent.json()["subject"].startswith("[TEST] ")
    outbox = api.client.app.state.settings.outbox_dir
    [message] = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in outbox.glob("*.eml")]
    assert message["X-Newsletter-Test"] == "yes" and message["To"].addresses[0].addr_spec == "ed@example.com"
    bad = api.call("POST", "/api/v1/campaigns/test", "editor", json={"digest": "api-digest", "to": "not an address"})
    assert bad.status_code == 422 and bad.json()["error"]
    assert len(list(outbox.glob("*.eml"))) == 1


def test_campaign_create_stats_ledger_and_resend(api: Api) -> None:
    with api.sessions() as session:
        weekly = make_list(session, slug="stats")
        ana = make_subscriber(session, weekly, "s1@example.com")
        bob = make_subscriber(session, weekly, "s2@example.com")
        session.commit()
    api.call("POST", "/api/v1/digests", "editor", json=DIGEST)
    created = api.call("POST", "/api/v1/campaigns", "editor", json={"digest": "api-digest", "lists": ["stats"]})
    assert created.status_code == 201 and created.json()["status"] == "draft"
    cid = created.json()["id"]
    assert api.jobs.started == [cid]
    with api.sessions() as session:
        session.add_all(
            [
                Delivery(campaign_id=cid, subscriber_id=ana.id, list_id=weekly.id, status=DeliveryStatus.sent),
                Delivery(campaign_id=cid, subscriber_id=bob.id, list_id=weekly.id, status=DeliveryStatus.failed),
            ]
        )
        delivery.get_campaign(session, cid).status = CampaignStatus.finished
        session.commit()
    report = api.call("GET", f"/api/v1/campaigns/{cid}", "editor").json()
    assert report["counts"] == {"pending": 0, "sending": 0, "sent": 1, "failed": 1, "unknown": 0, "skipped": 0}
    failed = api.call("GET", f"/api/v1/campaigns/{cid}/deliveries", "editor", params={"status": "failed"}).json()
    assert [d["email"] for d in failed["items"]] == ["s2@example.com"]
    refused = api.call("POST", f"/api/v1/campaigns/{cid}/resend", "editor", json={"statuses": ["sent"]})
    assert refused.status_code == 422 or refused.status_code == 409
    resent = api.call("POST", f"/api/v1/campaigns/{cid}/resend", "editor", json={"statuses": ["failed"]}).json()
    assert resent == {"id": cid, "status": "sending", "requeued": 1}
    assert api.jobs.batches
    counts = api.call("GET", f"/api/v1/campaigns/{cid}", "editor").json()["counts"]
    assert counts["sent"] == 1 and counts["pending"] == 1
    assert api.call("POST", f"/api/v1/campaigns/{cid}/pause", "editor").json()["status"] == "paused"
    assert api.call("POST", f"/api/v1/campaigns/{cid}/cancel", "editor").json()["status"] == "cancelled"
    past = api.call(
        "POST",
        "/api/v1/campaigns",
        "editor",
        json={"digest": "api-digest", "lists": ["stats"], "at": "2000-01-01T00:00:00Z"},
    )
    assert past.status_code == 409 and "past" in past.json()["error"]


def test_campaign_with_an_uploaded_template(api: Api) -> None:
    with api.sessions() as session:
        make_subscriber(session, make_list(session, slug="styled"), "t1@example.com")
        templates.save_template(session, "house", (TEMPLATES_DIR / "email" / "digest" / "body.mjml").read_text())
        session.commit()
    api.call("POST", "/api/v1/digests", "editor", json=DIGEST)
    body = {"digest": "api-digest", "lists": ["styled"], "template": "nope"}
    missing = api.call("POST", "/api/v1/campaigns", "editor", json=body)
    assert missing.status_code == 404 and "no template named 'nope'" in missing.json()["error"]
    assert api.call("GET", "/api/v1/campaigns", "editor").json() == [] and api.jobs.started == []
    created = api.call("POST", "/api/v1/campaigns", "editor", json={**body, "template": "house"})
    assert created.status_code == 201, created.text
    with api.sessions() as session:
        campaign = delivery.get_campaign(session, created.json()["id"])
        assert campaign.template_id == templates.get_template(session, "house").id


def test_suppressions_add_list_remove(api: Api) -> None:
    added = api.call("POST", "/api/v1/suppressions", json={"email": "Spam@Example.com", "detail": "asked by phone"})
    assert added.status_code == 201 and added.json()["created"] is True
    assert api.call("POST", "/api/v1/suppressions", json={"email": "spam@example.com"}).status_code == 200
    listed = api.call("GET", "/api/v1/suppressions", params={"email": "spam"}).json()
    assert [s["email"] for s in listed["items"]] == ["spam@example.com"]
    assert api.call("DELETE", "/api/v1/suppressions/spam@example.com").status_code == 204
    assert api.call("DELETE", "/api/v1/suppressions/spam@example.com").status_code == 404
    with api.sessions() as session:
        assert session.scalars(select(Suppression)).all() == []
        assert session.scalars(select(Subscriber)).all() == []


def test_suppressions_import_from_another_tool(api: Api) -> None:
    def upload(body: bytes, **params: str) -> Any:
        return api.call(
            "POST", "/api/v1/suppressions/import", content=body, params=params, headers={"Content-Type": "text/csv"}
        )

    latin = upload("email\nok@example.com\nzoë@exämple.com\n".encode("latin-1"))
    assert latin.status_code == 422 and "not UTF-8" in latin.json()["error"]
    with api.sessions() as session:
        assert session.scalars(select(Suppression)).all() == []  # not even the row before the bad byte

    api.call("POST", "/api/v1/suppressions", json={"email": "old@example.com"})
    csv = "\ufeffname,Email\nOld,OLD@example.com\nNew,new@example.com\nBad,not-an-address\n,\n"
    result = upload(csv.encode(), detail="bounced at the previous provider")
    assert result.status_code == 200, result.text
    report = result.json()
    assert (report["added"], report["already"], [e["line"] for e in report["errors"]]) == (1, 1, [4])
    assert "not-an-address" in report["errors"][0]["reason"]
    listed = {s["email"]: s for s in api.call("GET", "/api/v1/suppressions").json()["items"]}
    assert set(listed) == {"old@example.com", "new@example.com"}
    assert listed["new@example.com"]["detail"] == "bounced at the previous provider"
    assert api.call("POST", "/api/v1/suppressions/import", "editor", content=b"x@example.com\n").status_code == 403


def test_interactive_docs_are_served(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    document = api.client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    operation = document["paths"]["/api/v1/lists/{slug}"]["get"]
    assert {"401", "403", "404", "422"} <= set(operation["responses"])


def test_validation_errors_use_the_error_body(api: Api) -> None:
    response = api.call("POST", "/api/v1/lists", json={"slug": "Bad Slug"})
    assert response.status_code == 422
    assert response.json()["error"] and response.json()["detail"][0]["loc"]


def _stored(api: Api) -> list[Any]:
    with api.sessions() as session:
        return [
            *session.execute(select(Subscriber.email, Subscriber.name, Subscriber.attributes).order_by(Subscriber.id)),
            *session.execute(select(Subscription.subscriber_id, Subscription.status).order_by(Subscription.id)),
            *session.execute(select(Suppression.email)),
        ]


def test_nul_in_a_body_or_filter_is_a_422_or_nothing_found_never_a_500(api: Api) -> None:
    """Issue 11 item 8: PostgreSQL refuses NUL; these were 500s."""
    api.call("POST", "/api/v1/lists", json={"slug": "weekly", "name": "Weekly", "from_email": "n@example.org"})
    api.call("POST", "/api/v1/suppressions", json={"email": "gone@example.com"})
    before = _stored(api)
    for body, field in (
        ({"email": "a\x00@example.com"}, "email"),
        ({"email": "ana@example.com", "name": "A\x00na"}, "name"),
        ({"email": "ana@example.com", "attributes": {"city": "Alm\x00aty"}}, None),
        ({"email": "ana@example.com", "attributes": {"ci\x00ty": "Almaty"}}, None),
    ):
        response = api.call("POST", "/api/v1/subscribers", json={**body, "lists": ["weekly"]})
        assert response.status_code == 422, response.text
        assert "NUL" in response.text or (field and field in response.text), response.text
    assert api.call("POST", "/api/v1/suppressions", json={"email": "x\x00@example.com"}).status_code == 422
    assert api.call("POST", "/api/v1/suppressions/domains", json={"domain": "a\x00.com"}).status_code == 422
    found = api.call("GET", "/api/v1/suppressions", params={"email": "gone\x00"})
    assert found.status_code == 200 and found.json()["items"] == []
    assert _stored(api) == before


def test_adding_a_subscriber_without_confirmed_sends_one_confirmation(api: Api, smtp_server: Any) -> None:
    """Issue 11 item 14: the subscription stays pending and the confirmation goes out after the commit."""
    from newsletter.mailer import SMTPMailer

    api.call("POST", "/api/v1/lists", json={"slug": "weekly", "name": "Weekly", "from_email": "n@example.org"})
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    queued: list[int] = []

    def enqueue(subscription_id: int) -> None:  # what the Celery task does, on the test's sessions
        queued.append(subscription_id)
        mailer = SMTPMailer(smtp_server.url)
        with api.sessions.begin() as session:
            confirmations.send_confirmation(session, settings, mailer, subscription_id)

    api.client.app.state.enqueue_confirmation = enqueue  # type: ignore[attr-defined]
    added = api.call("POST", "/api/v1/subscribers", json={"email": "ana@example.com", "lists": ["weekly"]})
    assert added.status_code == 201, added.text
    assert [s["status"] for s in added.json()["subscriptions"]] == ["pending"]
    assert len(queued) == 1 and [m.rcpt_tos for m in smtp_server.messages] == [("ana@example.com",)]
    assert b"/confirm/" in smtp_server.messages[0].data
    # Again within the window, or with consent given elsewhere: no second email.
    api.call("POST", "/api/v1/subscribers", json={"email": "ana@example.com", "lists": ["weekly"]})
    confirmed = api.call(
        "POST", "/api/v1/subscribers", json={"email": "bo@example.com", "lists": ["weekly"], "confirmed": True}
    )
    assert [s["status"] for s in confirmed.json()["subscriptions"]] == ["confirmed"]
    assert len(queued) == 1 and len(smtp_server.messages) == 1


def test_import_accepts_a_multipart_upload_as_curl_sends_it(api: Api) -> None:
    """Issue 11 item 15: `curl -F file=@people.csv` failed with "no 'email' column (found: ------...)"."""
    api.call("POST", "/api/v1/lists", json={"slug": "weekly", "name": "Weekly", "from_email": "n@example.org"})
    people = b"email,name\nana@example.com,Ana\nbo@example.com,Bo\n"
    report = api.call(
        "POST", "/api/v1/lists/weekly/import", params={"confirmed": True}, files={"file": ("people.csv", people)}
    )
    assert report.status_code == 200, report.text
    assert report.json()["imported"] == 2 and report.json()["errors"] == []
    before = _stored(api)
    wrong_field = api.call("POST", "/api/v1/lists/weekly/import", files={"upload": ("people.csv", people)})
    assert wrong_field.status_code == 422 and "no 'file' field" in wrong_field.json()["error"]
    broken = api.call(
        "POST",
        "/api/v1/lists/weekly/import",
        content=b"--x\r\nnot a part",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert broken.status_code == 422, broken.text
    too_big = api.call(
        "POST",
        "/api/v1/lists/weekly/import",
        content=b"email\n",
        headers={"Content-Type": "text/csv", "Content-Length": str(600 * 2**20)},
    )
    assert too_big.status_code == 413
    assert _stored(api) == before


def test_list_export_status_filter_and_column(api: Api) -> None:
    api.call("POST", "/api/v1/lists", json={"slug": "weekly", "name": "Weekly", "from_email": "n@example.org"})
    body = "email\nin@example.com\n"
    api.call("POST", "/api/v1/lists/weekly/import", params={"confirmed": True}, content=body)
    api.call("POST", "/api/v1/lists/weekly/import", content="email\npending@example.com\n")
    default = api.call("GET", "/api/v1/lists/weekly/export")
    assert default.text == "email,name,status\r\nin@example.com,,confirmed\r\n"
    everyone = api.call("GET", "/api/v1/lists/weekly/export", params={"status": "all"}).text
    assert sorted(everyone.splitlines()[1:]) == ["in@example.com,,confirmed", "pending@example.com,,pending"]
    assert api.call("GET", "/api/v1/lists/weekly/export", params={"status": "left"}).status_code == 422


def test_the_domain_blocklist_api(api: Api) -> None:
    """Issue 11 item 16: managed in the API; a clear error when the admin path meets a blocked domain."""
    api.call("POST", "/api/v1/lists", json={"slug": "weekly", "name": "Weekly", "from_email": "n@example.org"})
    created = api.call("POST", "/api/v1/suppressions/domains", json={"domain": "*@Mailinator.com", "detail": "spam"})
    assert created.status_code == 201 and created.json()["domain"]["domain"] == "mailinator.com"
    assert api.call("POST", "/api/v1/suppressions/domains", json={"domain": "mailinator.com"}).status_code == 200
    bad = api.call("POST", "/api/v1/suppressions/domains", json={"domain": "not a domain"})
    assert bad.status_code == 422 and "not a mail domain" in bad.json()["error"]
    assert [d["domain"] for d in api.call("GET", "/api/v1/suppressions/domains").json()] == ["mailinator.com"]
    before = _stored(api)
    refused = api.call("POST", "/api/v1/subscribers", json={"email": "x@mailinator.com", "lists": ["weekly"]})
    assert refused.status_code == 422 and "addresses at mailinator.com are blocked" in refused.json()["error"]
    imported = api.call("POST", "/api/v1/lists/weekly/import", content="email\nx@mailinator.com\n").json()
    assert imported["imported"] == 0
    assert imported["errors"] == [
        {"line": 2, "reason": "email 'x@mailinator.com': addresses at mailinator.com are blocked"}
    ]
    assert _stored(api) == before
    assert api.call("DELETE", "/api/v1/suppressions/domains/mailinator.com").status_code == 204
    assert api.call("DELETE", "/api/v1/suppressions/domains/mailinator.com").status_code == 404
    assert api.call("GET", "/api/v1/suppressions/domains").json() == []
