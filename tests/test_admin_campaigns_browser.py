"""The campaign pages in a real browser: the send flow with a test send, the confirmation, live progress
polled by htmx while the campaign is sent to the aiosmtpd server, the report with its chart after readers
opened and clicked (their /o/ and /c/ URLs fetched), resend to the failed, the campaigns list and the
cancel confirmation. Screenshots at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.delivery import sending
from newsletter.mailer import get_mailer
from newsletter.models import Campaign, Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list, make_subscribers, publish_sample
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.browser, pytest.mark.postgres]
FULL = "554 5.7.1 Message refused by local policy"
TRACKED = re.compile(r'https?://[^"\s<>]+/(?:o|c)/[A-Za-z0-9_.\-=]+')


def tracking_urls(message: Any) -> list[str]:
    body = message.message.get_body(preferencelist=("html",))
    return sorted(set(TRACKED.findall(body.get_content())))


def test_send_follow_live_progress_read_the_report_and_resend(
    live: tuple[str, Settings], chromium: Chromium, smtp_server: RecordingSMTPServer
) -> None:
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "aigerim", Role.editor, email="aigerim@example.org")
        weekly = make_list(session, slug="weekly", name="The Weekly")
        make_list(session, slug="spare", name="Spare")
        make_subscribers(session, weekly, 8)
        digest = publish_sample(session)
        session.commit()
        slug = digest.slug
    page = chromium.new_page(base_url)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("aigerim")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Campaigns").click()
    expect(page.get_by_text("No campaigns yet")).to_be_visible()
    screenshot(page, "admin-campaigns-empty")

    # the send flow: a test to the user's own address first
    page.goto(f"{base_url}/admin/campaigns/new?digest={slug}")
    expect(page.get_by_label("Send the test to")).to_have_value("aigerim@example.org")
    page.get_by_role("button", name="Send a test").click()
    expect(page.get_by_text("Test sent to aigerim@example.org")).to_be_visible()
    assert smtp_server.wait_for(1)[0].rcpt_tos == ("aigerim@example.org",)
    page.get_by_label("The Weekly").check()
    expect(page.locator("#reach")).to_contain_text("Reaches 8 people")  # htmx, as the list is ticked
    screenshot(page, "admin-campaign-new")
    page.get_by_role("button", name="Review…").click()
    expect(page.get_by_text("8 recipients, list The Weekly, now.")).to_be_visible()
    screenshot(page, "admin-campaign-confirm")
    # the tasks run inline in this server (embedded mode): they would send before the page answered, so
    # the campaign is created and planned here, and its batches are sent below while the page watches
    with Session(engine) as session:
        campaign = delivery.create_campaign(session, digest_slug=slug, list_slugs=["weekly"], created_by="aigerim")
        ranges = delivery.start(session, settings, campaign.id)
        session.commit()
        cid = campaign.id
    page.goto(f"{base_url}/admin/campaigns/{cid}")
    expect(page.locator("#progress")).to_contain_text("0 of 8 done")
    screenshot(page, "admin-campaign-sending")

    smtp_server.responses = lambda rcpt: FULL if rcpt == "r3@example.com" else None
    mailer = get_mailer(settings.smtp_url, settings.outbox_dir)
    sessions = delivery_sessions(engine)
    for batch in ranges:
        sending.send_batch(sessions, settings, mailer, cid, batch.first_id, batch.last_id)
    # the poll sees the campaign finished and reloads the page: the report
    expect(page.get_by_role("heading", name="How it did")).to_be_visible(timeout=10_000)
    expect(page.locator("#progress")).to_contain_text("8 of 8 done")

    # readers open and click: fetch the tracking URLs of some received messages
    received = [m for m in smtp_server.wait_for(8) if m.rcpt_tos != ("aigerim@example.org",)]
    assert len(received) == 7
    for message in received[:4]:
        urls = tracking_urls(message)
        opens, clicks = [u for u in urls if "/o/" in u], [u for u in urls if "/c/" in u]
        assert opens and clicks
        for url in opens[:1] + clicks[:1]:
            # a click answers with a redirect to the article, which is not followed (no other host)
            answer = httpx.get(url, follow_redirects=False)
            assert answer.status_code in (200, 302, 303, 307), (url, answer.status_code)
    page.reload()
    expect(page.locator("#timeline-chart")).to_be_visible()
    expect(page.get_by_text("4 reader(s) (57.1% of 7 sent)")).to_be_visible()
    page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length === 1")
    expect(page.get_by_text("refused by local policy").first).to_be_visible()
    screenshot(page, "admin-campaign-report")

    # resend to the failed one, now that the server accepts it
    smtp_server.responses = None
    page.get_by_role("button", name="Resend").click()
    expect(page.get_by_text("1 recipient(s) are in the queue again.")).to_be_visible()
    expect(page.locator("#progress")).to_contain_text("finished")
    assert any(m.rcpt_tos == ("r3@example.com",) for m in smtp_server.messages)
    screenshot(page, "admin-campaign-resent")

    page.get_by_role("link", name="Campaigns").click()
    expect(page.get_by_role("link", name=campaign_subject(engine, cid))).to_be_visible()
    screenshot(page, "admin-campaigns-list")

    # a second campaign, to the spare list, scheduled: its cancel confirmation names the consequence
    with Session(engine) as session:
        other = delivery.create_campaign(session, digest_slug=slug, list_slugs=["spare"])
        session.commit()
        other_id = other.id
    page.goto(f"{base_url}/admin/campaigns/{other_id}")
    page.get_by_role("link", name="Cancel…").click()
    expect(page.get_by_text("This cannot be undone")).to_be_visible()
    screenshot(page, "admin-campaign-cancel")
    page.get_by_role("button", name="Cancel the campaign").click()
    expect(page.get_by_text("Cancelled: nobody else will get this campaign.")).to_be_visible()
    assert errors == []
    engine.dispose()


def delivery_sessions(engine: Any) -> Any:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=engine, expire_on_commit=False)


def campaign_subject(engine: Any, campaign_id: int) -> str:
    with Session(engine) as session:
        return str(session.scalar(select(Campaign.subject).where(Campaign.id == campaign_id)))
