"""The webhook pages in a real browser: the empty state, a refused private URL, the secret shown once, the
delivery log and "Send again". Screenshots at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from newsletter import outbox
from newsletter.config import Settings
from newsletter.db import make_engine, utcnow
from newsletter.models import Role
from newsletter.webhooks import dispatch, endpoints
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.postgres]
PUBLIC = "https://93.184.215.14/hooks/newsletter"  # nothing is sent: the server runs no dispatcher


def test_add_a_webhook_read_its_log_and_send_again(live: tuple[str, Settings], chromium: Chromium) -> None:
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "dana", Role.admin)
        session.commit()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("dana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_text("No webhooks yet")).to_be_visible()
    screenshot(page, "admin-webhooks-empty")

    page.get_by_label("URL").fill("https://169.254.169.254/latest/meta-data")
    page.get_by_label("subscriber.confirmed").check()
    page.get_by_role("button", name="Add the webhook").click()
    expect(page.get_by_text("a link-local address")).to_be_visible()
    screenshot(page, "admin-webhooks-refused")
    assert [e for e in errors if "422" not in e] == []  # the refusal is a 422, which the console reports
    errors.clear()

    page.get_by_label("URL").fill(PUBLIC)
    page.get_by_label("campaign.finished").check()
    page.get_by_role("button", name="Add the webhook").click()
    expect(page.get_by_role("heading", name="The signing secret — copy it now")).to_be_visible()
    secret = page.locator(".secret").inner_text()
    assert secret.startswith("whsec_")
    screenshot(page, "admin-webhook-secret")

    with Session(engine) as session:
        (endpoint,) = endpoints.all_endpoints(session)
        assert endpoint.secret == secret and endpoint.event_types == ["subscriber.confirmed", "campaign.finished"]
        outbox.emit(session, "campaign.finished", {"campaign": {"id": 1}})
        outbox.emit(session, "subscriber.confirmed", {"subscriber": {"id": 1}})
        session.flush()
        now = utcnow()
        dispatch.fan_out(session, now=now)
        first, second = dispatch.claim(session, now=now)
        later = now + dt.timedelta(seconds=1)
        dispatch.record(session, settings, first, dispatch.Answer(204, "", 87, None), now=later)
        dispatch.record(session, settings, second, dispatch.Answer(503, "try later", 1204, "HTTP 503"), now=later)
        session.commit()
        endpoint_id = endpoint.id
    page.goto(f"{base_url}/admin/webhooks/{endpoint_id}")
    expect(page.get_by_text("HTTP 503")).to_be_visible()
    assert "whsec_" not in page.content()
    screenshot(page, "admin-webhook-log")
    page.get_by_role("button", name="Send again").first.click()
    expect(page.get_by_text("is being sent again")).to_be_visible()
    assert errors == [] and chromium.foreign == []
    engine.dispose()
