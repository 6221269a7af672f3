"""The admin's path in a real browser against the app served by uvicorn over PostgreSQL (embedded mode:
the import runs in a thread of the server, campaigns inline), mail to aiosmtpd: sign in with a password
and a TOTP code → create a list with a theme and a CORS origin → import a CSV of 1,000 good and 10 bad
rows through the wizard and watch it finish → download the bad lines → find one subscriber and see their
timeline after a campaign → erase them → block a domain and see a subscribe from it refused → create an
editor and revoke a token → find it all in the audit log. Screenshots of every page at 1280 and 390 px
land in test-output/screenshots/."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import delivery, twofactor
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Role, Subscriber
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import publish_sample
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


def people_csv(good: int, bad: int) -> bytes:
    lines = ["email,name,city"] + [f"reader{i}@example.com,Reader {i},Almaty" for i in range(good)]
    lines[100:100] = [f"broken-{i},Broken {i},Nowhere" for i in range(bad)]
    return ("\n".join(lines) + "\n").encode()


# long: one walk through the pages, in the order an admin takes them
def test_lists_import_subscriber_timeline_erase_and_blocked_domain(
    live: tuple[str, Settings], chromium: Chromium, smtp_server: RecordingSMTPServer
) -> None:
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        dana = make_user(session, "dana", Role.admin)
        secret = twofactor.begin(session, settings, dana).secret
        twofactor.confirm(session, settings, dana, pyotp.TOTP(secret).now())
        digest_slug = publish_sample(session).slug
        session.commit()
    page = chromium.new_page(base_url)
    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("dana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # the code step: the next period's code (the one that switched two-factor on cannot be used twice)
    code = pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Lists").first).to_be_visible()

    # a list with a theme and a CORS origin; a bad colour first
    page.get_by_role("link", name="Lists").first.click()
    expect(page.get_by_text("No lists yet")).to_be_visible()
    screenshot(page, "admin-lists-empty")
    page.get_by_role("link", name="New list").click()
    page.get_by_label("Slug").fill("kz-weekly")
    page.get_by_label("Name", exact=True).fill("Kazakhstan Weekly")
    page.get_by_label("From address").fill("news@example.org")
    page.get_by_label("Postal address").fill("1 Example Street, Astana")
    page.get_by_label("Accent colour").fill("teal")
    page.get_by_label("Sites that may embed the form").fill("https://example.org")
    page.get_by_role("button", name="Create the list").click()
    expect(page.locator("#err-accent_color")).to_contain_text("hex colour")
    expect(page.get_by_label("Slug")).to_have_value("kz-weekly")
    screenshot(page, "admin-list-new-error")
    page.get_by_label("Accent colour").fill("#0f766e")
    page.get_by_role("button", name="Create the list").click()
    expect(page.get_by_text("Created the list Kazakhstan Weekly.")).to_be_visible()
    expect(page.get_by_text("Embed the subscribe form")).to_be_visible()
    screenshot(page, "admin-list-page")

    # the import wizard: preview, choices, live progress, report, bad lines
    page.get_by_role("link", name="Imports").first.click()
    page.locator("input#file").set_input_files(
        {"name": "readers.csv", "mimeType": "text/csv", "buffer": people_csv(1000, 10)}
    )
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.get_by_text("These become attributes: city")).to_be_visible()
    screenshot(page, "admin-import-preview")
    page.get_by_label("List").select_option("kz-weekly")
    page.get_by_label("They already agreed elsewhere").check()
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("heading", name="Report")).to_be_visible(timeout=60_000)  # the poll reloads the page
    expect(page.locator("dl.facts").last).to_contain_text("Imported1,000")
    screenshot(page, "admin-import-report")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the bad lines (CSV)").click()
    rows = list(csv.reader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert rows[0] == ["line", "reason", "content"] and len(rows) == 11 and "broken-0" in rows[1][2]
    page.get_by_role("link", name="All imports").click()
    expect(page.get_by_text("readers.csv")).to_be_visible()
    screenshot(page, "admin-imports")

    # a campaign to the list, then one subscriber's page
    from worker import tasks

    with Session(engine) as session:
        campaign = delivery.create_campaign(session, digest_slug=digest_slug, list_slugs=["kz-weekly"])
        session.commit()
        campaign_id = campaign.id
    tasks.start_campaign(campaign_id)  # embedded mode: planned and sent here, to aiosmtpd
    page.get_by_role("link", name="Subscribers").first.click()
    page.get_by_label("Address starts with").fill("reader7@")
    page.get_by_role("button", name="Search").click()
    screenshot(page, "admin-subscribers-search")
    page.get_by_role("link", name="reader7@example.com").click()
    expect(page.locator(".timeline")).to_contain_text("delivery sent")
    expect(page.get_by_role("heading", name="Subscriptions and consent")).to_be_visible()
    screenshot(page, "admin-subscriber-page")
    page.get_by_role("link", name="Erase…").click()
    expect(page.get_by_text("their address can never be mailed again")).to_be_visible()
    screenshot(page, "admin-subscriber-erase")
    page.get_by_role("button", name="Erase").click()
    expect(page.get_by_text("Erased the subscriber")).to_be_visible()

    # a blocked domain, and a subscribe from it that leaves no trace
    page.get_by_role("link", name="Suppressions").first.click()
    page.get_by_role("textbox", name="Domain").fill("mailinator.com")
    page.get_by_role("button", name="Block the domain").click()
    expect(page.get_by_text("Blocked mailinator.com")).to_be_visible()
    screenshot(page, "admin-suppressions")
    before = len(smtp_server.messages)
    page.goto(f"{base_url}/subscribe/kz-weekly")
    page.get_by_label("Email address").fill("someone@mailinator.com")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_text("Check your inbox")).to_be_visible()  # the same answer as for anyone: no enumeration
    screenshot(page, "admin-walk-blocked-subscribe")
    with Session(engine) as session:
        known = session.scalar(select(func.count()).where(Subscriber.email == "someone@mailinator.com"))
    assert known == 0 and len(smtp_server.messages) == before

    # an editor with a token, the token revoked; then all of it in the audit log
    page.goto(f"{base_url}/admin/users")
    page.get_by_label("User name").fill("erlan")
    page.get_by_role("button", name="Add user").click()
    page.goto(f"{base_url}/admin/users/erlan")
    page.get_by_label("What is the new token for?").fill("newsroom script")
    page.get_by_role("button", name="Create a token").click()
    page.locator("button[aria-label^='Revoke token']").first.click()
    expect(page.get_by_text("was revoked")).to_be_visible()
    page.goto(f"{base_url}/admin/audit?actor=dana")
    log = page.locator("main")
    for action in ("list.create", "import.run", "subscriber.erase", "blocked_domain.add", "user.create"):
        expect(log).to_contain_text(action)
    expect(log).to_contain_text("token")
    screenshot(page, "admin-walk-audit")
    engine.dispose()
