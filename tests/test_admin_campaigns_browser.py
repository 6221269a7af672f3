"""The campaign pages in a real browser: the empty list, the campaigns list and the cancel confirmation.
(The send flow with a test send, the confirmation, live progress, the report with its chart and resend to
the failed are walked with a real worker in test_admin_editor_path_browser.py.) Screenshots at 1280 and
390 px land in test-output/screenshots/."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Campaign, Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list, make_subscribers, publish_sample

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


def test_the_campaigns_list_and_cancelling_a_scheduled_campaign(live: tuple[str, Settings], chromium: Chromium) -> None:
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

    # The send flow, the live progress, the report and the resend are walked against `newsletter serve` and a
    # real Celery worker in tests/test_admin_editor_path_browser.py; here, the list and the cancel step.
    with Session(engine) as session:
        cid = delivery.create_campaign(session, digest_slug=slug, list_slugs=["weekly"], created_by="aigerim").id
        session.commit()
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


def campaign_subject(engine: Any, campaign_id: int) -> str:
    with Session(engine) as session:
        return str(session.scalar(select(Campaign.subject).where(Campaign.id == campaign_id)))
