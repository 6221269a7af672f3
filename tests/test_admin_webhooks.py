"""/admin/webhooks: admins register endpoints (SSRF refused with the reason next to the field), see the
secret once, read the delivery log, redeliver, disable/enable and delete; editors get 403, strangers the
sign-in page, forms without their CSRF token change nothing (both backends)."""

from __future__ import annotations

import datetime as dt
import html
import re

from sqlalchemy import func, select

from newsletter import outbox
from newsletter.db import utcnow
from newsletter.models import Role, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from newsletter.webhooks import dispatch, endpoints
from tests.admin import AdminWeb, csrf_from

PUBLIC = "https://93.184.215.14/hooks/newsletter"  # an address literal: no DNS needed, nothing is sent
TAGS = re.compile(r"<[^>]+>")


def text_of(page: str) -> str:
    return " ".join(html.unescape(TAGS.sub(" ", page)).split())


def count(admin_web: AdminWeb) -> int:
    with admin_web.sessions() as session:
        return session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0


def test_strangers_sign_in_and_editors_are_refused(admin_web: AdminWeb) -> None:
    assert admin_web.client.get("/admin/webhooks").headers["location"].startswith("/admin/sign-in")
    editor = admin_web.signed_in(Role.editor)
    assert "/admin/webhooks" not in editor.get("/admin").text  # not in an editor's navigation
    page = editor.get("/admin/webhooks")
    assert page.status_code == 403 and "This page is for admins" in page.text
    token = csrf_from(editor.get("/admin/account").text)
    refused = editor.post("/admin/webhooks", data={"csrf_token": token, "url": PUBLIC, "events": "campaign.started"})
    assert refused.status_code == 403 and count(admin_web) == 0
    admin = admin_web.signed_in(Role.admin)
    assert 'href="/admin/webhooks"' in admin.get("/admin").text


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    empty = client.get("/admin/webhooks")
    assert empty.status_code == 200 and "No webhooks yet" in empty.text
    data = {"csrf_token": csrf_from(empty.text), "url": PUBLIC, "events": ["subscriber.confirmed", "campaign.finished"]}
    created = client.post("/admin/webhooks", data={**data, "description": "The CRM"})
    assert created.status_code == 201
    (secret,) = re.findall(r"whsec_[A-Za-z0-9+/=]+", created.text)
    with admin_web.sessions() as session:
        (endpoint,) = endpoints.all_endpoints(session)
        assert (endpoint.url, endpoint.event_types, endpoint.secret, endpoint.description) == (
            PUBLIC,
            ["subscriber.confirmed", "campaign.finished"],
            secret,
            "The CRM",
        )
    again = client.get(f"/admin/webhooks/{endpoint.id}")
    assert "whsec_" not in again.text and "Nothing sent yet" in again.text
    listed = text_of(client.get("/admin/webhooks").text)
    assert PUBLIC in listed and "subscriber.confirmed, campaign.finished" in listed and "enabled" in listed


REFUSED = [
    ("https://127.0.0.1/hook", ["campaign.started"], "127.0.0.1 is a loopback address"),
    ("https://10.0.0.8/hook", ["campaign.started"], "10.0.0.8 is a private address"),
    ("https://169.254.169.254/latest", ["campaign.started"], "a link-local address"),
    ("http://93.184.215.14/hook", ["campaign.started"], "must use https://"),
    (PUBLIC, [], "Choose at least one event type"),
    (PUBLIC, ["subscriber.exploded"], "Unknown event type subscriber.exploded"),
]


def test_a_refused_webhook_is_explained_next_to_its_field_and_not_stored(admin_web: AdminWeb) -> None:
    client = admin_web.signed_in(Role.admin)
    token = csrf_from(client.get("/admin/webhooks").text)
    for url, events, words in REFUSED:
        answer = client.post("/admin/webhooks", data={"csrf_token": token, "url": url, "events": events})
        assert answer.status_code == 422, url
        error = re.search(r'class="field-error" id="(\w+)-error">([^<]*)<', answer.text)
        assert error is not None and words in html.unescape(error[2]), (url, events)
        assert f'value="{url}"' in answer.text  # the values are kept
        assert count(admin_web) == 0
    # and a form without its CSRF token changes nothing either
    answer = client.post("/admin/webhooks", data={"url": PUBLIC, "events": "campaign.started"})
    assert answer.status_code == 403 and "did not come from this site" in answer.text
    assert count(admin_web) == 0


def test_the_log_redeliver_disable_enable_and_delete(admin_web: AdminWeb) -> None:
    with admin_web.sessions.begin() as session:
        endpoint = endpoints.create(session, admin_web.settings, PUBLIC, ["campaign.started"])
        outbox.emit(session, "campaign.started", {"campaign": {"id": 1}})
        session.flush()
        now = utcnow()
        dispatch.fan_out(session, now=now)
        (attempt,) = dispatch.claim(session, now=now)
        answer = dispatch.Answer(500, "upstream down", 41, "HTTP 500")
        dispatch.record(session, admin_web.settings, attempt, answer, now=now + dt.timedelta(seconds=1))
        endpoint_id, first_id = endpoint.id, attempt.delivery_id
    client = admin_web.signed_in(Role.admin)
    page = client.get(f"/admin/webhooks/{endpoint_id}")
    words = text_of(page.text)
    assert "campaign.started" in words and "HTTP 500" in words and "41 ms" in words and "upstream down" in words
    assert "pending" in words  # the retry, due later
    token = csrf_from(page.text)

    redone = client.post(f"/admin/webhooks/deliveries/{first_id}/redeliver", data={"csrf_token": token})
    assert redone.status_code == 303
    assert "is being sent again (attempt 3)" in text_of(client.get(redone.headers["location"]).text)
    with admin_web.sessions() as session:
        newest = dispatch.log_of(session, endpoint_id)[0]
        assert (newest.attempt, newest.manual, newest.status) == (3, True, WebhookDeliveryStatus.pending)

    assert client.post(f"/admin/webhooks/{endpoint_id}/disable", data={"csrf_token": token}).status_code == 303
    shown = text_of(client.get(f"/admin/webhooks/{endpoint_id}").text)
    assert "disabled — disabled by admin-user" in shown
    refused = client.post(f"/admin/webhooks/deliveries/{first_id}/redeliver", data={"csrf_token": token})
    assert "enable it first" in text_of(client.get(refused.headers["location"]).text)
    assert client.post(f"/admin/webhooks/{endpoint_id}/enable", data={"csrf_token": token}).status_code == 303

    rotated = client.post(f"/admin/webhooks/{endpoint_id}/rotate-secret", data={"csrf_token": token})
    (secret,) = re.findall(r"whsec_[A-Za-z0-9+/=]+", rotated.text)
    with admin_web.sessions() as session:
        assert endpoints.get(session, endpoint_id).secret == secret

    confirm = client.get(f"/admin/webhooks/{endpoint_id}/delete")
    assert "erases its delivery log" in text_of(confirm.text)
    gone = client.post(f"/admin/webhooks/{endpoint_id}/delete", data={"csrf_token": token})
    assert f"Deleted the webhook to {PUBLIC}" in text_of(client.get(gone.headers["location"]).text)
    with admin_web.sessions() as session:
        assert count(admin_web) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    assert client.get(f"/admin/webhooks/{endpoint_id}").status_code == 404
