"""The subscriber's path in a real browser: form, confirmation email, digest, one-click unsubscribe, undo.

Chromium (Debian's) drives a real uvicorn server on loopback with a committed PostgreSQL database; mail
goes through the Celery tasks in embedded mode to the aiosmtpd test server. Screenshots of every page
land in test-output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Subscriber, Subscription, SubscriptionStatus
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from tests.factories import make_list, publish_sample
from tests.smtpserver import RecordingSMTPServer
from tests.test_web_public import start

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def show_email(page: object, html: str) -> None:
    # From a blank page: set_content writes into the current document, whose CSP would block the styles.
    page.goto("about:blank")  # type: ignore[attr-defined]
    page.set_content(html)  # type: ignore[attr-defined]


def test_subscriber_journey_in_chromium(live: tuple[str, Settings], smtp_server: RecordingSMTPServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    from worker import tasks

    base_url, settings = live
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        mailing_list = make_list(
            session,
            slug="steppe",
            name="The Steppe Courier",
            description="A weekly round-up of what foreign media wrote about Kazakhstan.",
            postal_address="Steppe Media LLP, 1 Example Avenue, Astana 010000",
        )
        mailing_list.form_fields = [{"name": "city", "label": "City"}]
        list_id = mailing_list.id
        session.commit()

    def shot(page: object, name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"web-{name}.png"), full_page=True)  # type: ignore[attr-defined]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 800})

        # 1. The form: labelled fields, keyboard focus visible.
        page.goto(f"{base_url}/subscribe/steppe")
        expect(page.get_by_role("heading", name="Subscribe to The Steppe Courier")).to_be_visible()
        page.get_by_label("Email address").fill("not an address")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("alert")).to_contain_text("Please check your email address")
        shot(page, "01-subscribe-error")
        page.get_by_label("Email address").fill("Aigerim@Example.com")
        page.get_by_label("Name").fill("Aigerim")
        page.get_by_label("City").fill("Almaty")
        page.get_by_label("City").focus()
        shot(page, "02-subscribe-form")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
        shot(page, "03-check-inbox")

        # 2. The confirmation email at the SMTP server, opened in the browser too.
        confirmation = parse(smtp_server.wait_for(1)[0].data)
        assert confirmation["To"].addresses[0].addr_spec == "aigerim@example.com"
        assert confirmation["Subject"] == "Confirm your subscription to The Steppe Courier"
        show_email(page, body(confirmation, "html"))
        shot(page, "04-confirmation-email")
        match = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", body(confirmation, "plain"))
        assert match
        assert page.get_by_role("link", name="Yes, subscribe me").get_attribute("href") == match[1]
        page.goto(match[1])  # the button opens a new tab (target=_blank), as mail clients do
        expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
        assert page.url == match[1]
        shot(page, "05-confirmed")

        # 3. A digest campaign goes out through the worker tasks (embedded mode).
        with Session(engine) as session:
            subscription = session.scalar(select(Subscription).where(Subscription.list_id == list_id))
            assert subscription is not None and subscription.status == SubscriptionStatus.confirmed
            assert subscription.consent_ip == "127.0.0.1"
            subscriber = session.get(Subscriber, subscription.subscriber_id)
            assert subscriber is not None and subscriber.attributes == {"city": "Almaty"}
            digest = publish_sample(session)
            digest_title = digest.title
            campaign = delivery.create_campaign(session, digest_slug=digest.slug, list_slugs=["steppe"])
            ranges = start(session, settings, campaign.id)
            session.commit()
        tasks.enqueue_batches(ranges)
        issue = parse(smtp_server.wait_for(2)[1].data)
        assert issue["To"].addresses[0].addr_spec == "aigerim@example.com"
        one_click = re.fullmatch(r"<([^>]+)>", issue["List-Unsubscribe"].strip())
        assert one_click and issue["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        # 4. Unsubscribe from the link in the received email, then undo.
        show_email(page, body(issue, "html"))
        shot(page, "06-digest-email")
        page.get_by_role("link", name="Unsubscribe").click()
        expect(page.get_by_role("heading", name="Unsubscribe")).to_be_visible()
        assert page.url == one_click[1]
        shot(page, "07-unsubscribe")
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        shot(page, "08-unsubscribed")
        with Session(engine) as session:
            left = session.scalar(select(Subscription).where(Subscription.list_id == list_id))
            assert left is not None and left.status == SubscriptionStatus.unsubscribed
            assert left.unsubscribe_source == "page"
        page.get_by_role("button", name="Undo: subscribe me again").click()
        expect(page.get_by_role("heading", name="Welcome back")).to_be_visible()
        shot(page, "09-welcome-back")
        with Session(engine) as session:
            back = session.scalar(select(Subscription).where(Subscription.list_id == list_id))
            assert back is not None and back.status == SubscriptionStatus.confirmed

        # 5. Preferences, archive, an issue page, a bad link, and the form on a phone.
        show_email(page, body(issue, "html"))
        page.get_by_role("link", name="Preferences").click()
        expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
        shot(page, "10-preferences")
        page.get_by_role("button", name="Save preferences").click()
        expect(page.get_by_role("status")).to_contain_text("saved")
        page.goto(f"{base_url}/archive")
        shot(page, "11-archive")
        page.get_by_role("link", name=digest_title).click()
        expect(page.get_by_role("heading", name=digest_title, exact=True)).to_be_visible()
        shot(page, "12-archive-issue")
        page.goto(f"{base_url}/unsubscribe/forged.token")
        expect(page.get_by_role("heading", name="This link is not valid")).to_be_visible()
        shot(page, "13-not-found")
        phone = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2)
        phone.goto(f"{base_url}/subscribe/steppe")
        phone.keyboard.press("Tab")  # the skip link shows on focus
        shot(phone, "14-subscribe-phone")
        browser.close()
    engine.dispose()
