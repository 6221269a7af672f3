"""The admin in a real browser: sign in, the dashboard (empty, then with a campaign sending), the
account page, the 403 page, sign out. Screenshots at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import make_engine, utcnow
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryStatus, Role
from tests.admin import PASSWORD, make_user
from tests.browser import SCREENSHOTS, Chromium, screenshot
from tests.factories import make_list, make_subscribers
from tests.test_admin_dashboard import campaign_with, publish

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


def test_sign_in_dashboard_account_and_sign_out(live: tuple[str, Settings], chromium: Chromium) -> None:
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "aigerim", Role.admin, email="aigerim@example.org")
        make_user(session, "ed", Role.editor)
        session.commit()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    # Script errors and CSP violations; "Failed to load resource" is the status of a page (a 401 after a
    # wrong password), which the test checks itself.
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )

    page.goto(f"{base_url}/admin")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").focus()
    screenshot(page, "admin-sign-in")
    page.get_by_label("User name").fill("aigerim")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    screenshot(page, "admin-sign-in-error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_text("Nothing is sending right now")).to_be_visible()
    screenshot(page, "admin-dashboard-empty")

    # A campaign starts sending: the dashboard's live panel picks it up without a reload.
    with Session(engine) as session:
        weekly = make_list(session, slug="weekly", name="The Steppe Courier")
        readers = make_subscribers(session, weekly, 8)
        done = campaign_with(session, weekly, readers[:6], publish(session, "Steppe Courier #11"), ["sent"] * 6)
        done.status = CampaignStatus.finished
        live_one = campaign_with(
            session, weekly, readers, publish(session, "Steppe Courier #12"), ["sent"] * 3 + ["pending"] * 5
        )
        live_one.status = CampaignStatus.sending
        publish(session, "Steppe Courier #13 (draft)", date="2030-01-13")
        session.commit()
        live_id = live_one.id
    page.reload()
    panel = page.locator("#sending-now")
    expect(panel).to_contain_text("3 of 8 done (38%)")
    expect(page.locator("#growth-chart")).to_be_visible()
    screenshot(page, "admin-dashboard")
    dark = chromium.new_page(base_url, color_scheme="dark")
    dark.context.add_cookies(page.context.cookies())
    dark.goto(f"{base_url}/admin")
    expect(dark.locator("#growth-chart")).to_be_visible()
    screenshot(dark, "admin-dashboard-dark")
    dark.context.close()
    with Session(engine) as session:
        session.execute(
            update(Delivery).where(Delivery.campaign_id == live_id).values(status=DeliveryStatus.sent, sent_at=utcnow())
        )
        session.execute(update(Campaign).where(Campaign.id == live_id).values(status=CampaignStatus.finished))
        session.commit()
    expect(panel).to_contain_text("Nothing is sending right now", timeout=10_000)  # polled, then stops
    page.wait_for_timeout(2500)
    expect(page.locator("#sending-now[hx-trigger]")).to_have_count(0)

    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    screenshot(page, "admin-account")

    # On a phone the navigation is a menu that opens without JavaScript.
    phone = chromium.new_page(base_url, width=390, height=800)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(f"{base_url}/admin")
    expect(phone.get_by_role("link", name="Campaigns")).to_be_hidden()
    phone.get_by_text("Menu").click()
    expect(phone.get_by_role("link", name="Campaigns")).to_be_visible()
    phone.screenshot(path=str(SCREENSHOTS / "admin-menu-open-390.png"))
    phone.context.close()

    # A form whose token went stale: the 403 page, and still signed in.
    page.locator("form.signout input[name=csrf_token]").evaluate("input => { input.value = 'stale'; }")
    page.locator(".nav-side").get_by_role("link", name="Dashboard").wait_for()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You cannot do this here")).to_be_visible()
    screenshot(page, "admin-403")
    page.get_by_role("link", name="Go to the dashboard").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto(f"{base_url}/admin")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert errors == []
    engine.dispose()


def test_api_docs_render_offline(live: tuple[str, Settings], chromium: Chromium) -> None:
    from playwright.sync_api import expect

    base_url, _ = live
    page = chromium.new_page(base_url)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{base_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("newsletter")
    expect(page.get_by_text("/api/v1/campaigns").first).to_be_visible()
    screenshot(page, "docs-swagger", full_page=False)
    page.goto(f"{base_url}/redoc")
    expect(page.locator("h1").first).to_contain_text("newsletter", timeout=15_000)
    screenshot(page, "docs-redoc", full_page=False)
    # Redoc's "by Redocly" logo came from its CDN: scripts/vendor-assets.sh takes it out of the bundle.
    assert chromium.blocked_by_csp == []
    assert problems == []
