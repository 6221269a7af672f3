"""The admin's own pages in a real browser: set up two-factor sign-in and sign in with a code computed
here, add an editor, make and revoke a token, test the SMTP connection, read the audit log. Screenshots of
every page this adds at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


def test_two_factor_users_tokens_settings_and_audit(
    live: tuple[str, Settings], chromium: Chromium
) -> None:  # long: one walk
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "aigerim", Role.admin, email="aigerim@example.org")
        session.commit()
    engine.dispose()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    page.on(
        "console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None
    )

    def sign_in_with_password() -> None:
        page.goto(f"{base_url}/admin")
        page.get_by_label("User name").fill("aigerim")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()

    sign_in_with_password()
    page.goto(f"{base_url}/admin/account")
    expect(page.get_by_text("a stolen password alone is enough")).to_be_visible()
    screenshot(page, "admin-account")
    page.get_by_role("link", name="Set up two-factor sign-in").click()
    screenshot(page, "admin-two-factor-start")
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    expect(page.get_by_role("heading", name="1. Scan this code with your authenticator app")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text()
    screenshot(page, "admin-two-factor-scan")
    page.get_by_label("Code", exact=True).fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Switch two-factor sign-in on").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    assert page.locator("ol.recovery-codes li").count() == 10
    screenshot(page, "admin-two-factor-recovery-codes")
    page.get_by_role("button", name="Sign out").click()

    sign_in_with_password()
    expect(page.get_by_label("Code from your authenticator app")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(
        "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
    )
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is not right")
    screenshot(page, "admin-sign-in-code")
    # The next step's code: the enrolment spent the current one, and a code is good once.
    later = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    page.get_by_label("Code from your authenticator app").fill(later)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    page.get_by_role("navigation", name="Main").first.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    page.get_by_label("User name").fill("ed")
    page.get_by_label("Email (optional)").fill("ed@example.org")
    page.get_by_label("First password (optional)").fill("a long enough passphrase")
    screenshot(page, "admin-users")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_text("User ed (editor) created. They can sign in now.")).to_be_visible()
    page.get_by_label("What is the new token for?").fill("newsroom CMS")
    page.get_by_role("button", name="Create a token").click()
    token = page.locator("#new-token").inner_text()
    assert token.startswith("nl_")
    screenshot(page, "admin-user-page")
    page.get_by_role("button", name=f"Revoke token {token[:12]}").click()
    expect(page.get_by_text(f"Token {token[:12]}… of ed was revoked.")).to_be_visible()

    page.goto(f"{base_url}/admin/settings")
    page.get_by_role("button", name="Test the connection to").first.click()
    expect(page.get_by_text("every step passed")).to_be_visible()
    screenshot(page, "admin-settings")

    page.goto(f"{base_url}/admin/bounces")
    expect(page.get_by_text("No bounce or complaint reports yet")).to_be_visible()
    screenshot(page, "admin-bounces")
    page.goto(f"{base_url}/admin/templates")
    expect(page.get_by_text("No custom templates yet")).to_be_visible()
    screenshot(page, "admin-templates")

    page.goto(f"{base_url}/admin/audit")
    for action in ("token.revoke", "token.create", "user.create", "sign_in.ok", "sign_in.fail", "two_factor.enable"):
        expect(page.get_by_text(action, exact=True).first).to_be_visible()
    screenshot(page, "admin-audit")
    page.get_by_label("Action").fill("token")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    assert errors == []
