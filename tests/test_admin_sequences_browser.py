"""The sequence pages in a real browser over a live server in embedded mode: create a list's sequence, write
the welcome email, see it in the sandboxed preview, turn it on; a reader subscribes and the welcome arrives
at the SMTP server; the page counts it. Screenshots at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import OptIn, Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


def test_set_up_a_welcome_email_and_watch_it_go_out(
    live: tuple[str, Settings], chromium: Chromium, smtp_server: RecordingSMTPServer
) -> None:  # long: one admin's session, step by step
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "ada", Role.admin)
        make_list(session, slug="weekly", name="The Weekly", opt_in=OptIn.single)
        session.commit()
    engine.dispose()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Sequences").first.click()
    screenshot(page, "admin-sequences-list")
    page.get_by_role("button", name="Create a sequence for The Weekly").click()
    expect(page.get_by_role("heading", name="No steps yet")).to_be_visible()
    screenshot(page, "admin-sequences-empty")

    page.get_by_label("Subject").fill("Welcome to The Weekly")
    page.get_by_label("Message (Markdown)").fill("Thank you for joining. Every **Friday** you get the week's news.")
    page.get_by_role("button", name="Add step").click()
    expect(page.get_by_role("status").filter(has_text="Step 1 added.")).to_be_visible()
    frame = page.frame_locator(".frame iframe")
    expect(frame.locator("strong", has_text="Friday")).to_be_visible()
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("status").filter(has_text="Existing and imported subscribers do not")).to_be_visible()

    # A reader subscribes (single opt-in): the welcome goes out at once, through the campaign pipeline.
    answer = httpx.post(f"{base_url}/subscribe/weekly", data={"email": "reader@example.com"})
    assert answer.status_code == 200
    [welcome] = smtp_server.wait_for(1, timeout=20)
    assert welcome.rcpt_tos == ("reader@example.com",) and welcome.message["Subject"] == "Welcome to The Weekly"
    page.reload()
    row = page.locator("tbody tr").first
    expect(row.locator("td").nth(3)).to_have_text("1")  # sent
    screenshot(page, "admin-sequences-on")

    page.get_by_label("Subject").fill("Week one")
    page.get_by_label("Send after").fill("soon")
    page.get_by_label("Message (Markdown)").fill("A week in.")
    page.get_by_role("button", name="Add step").click()
    expect(page.locator("#delay-error")).to_contain_text("not a delay")
    expect(page.get_by_label("Send after")).to_have_value("soon")
    screenshot(page, "admin-sequences-add-error")

    page.get_by_role("link", name="Welcome to The Weekly").click()
    expect(page.get_by_role("heading", name="Step 1 of 1")).to_be_visible()
    screenshot(page, "admin-sequences-step")
    assert errors == [] and chromium.foreign == []
