"""The editor's whole path in one browser walk, against the real processes: `newsletter serve` (a
subprocess), PostgreSQL, the aiosmtpd server and a Celery worker (Redis broker). Sign in, write a draft of
three items in the form, watch the preview follow, switch it to 320 px, run the check, send a test and find
it at the SMTP server, fix a typo, send to a list (the browser clicks Send; the worker sends), watch the
progress reach `finished`, open and click received messages, read the report's chart, resend to the
recipient the server refused. Screenshots of every page at 1280 and 390 px in test-output/screenshots/.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from bench.workers import settings_env
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list, make_subscribers
from tests.processes import CeleryWorker, free_port, wait_until
from tests.smtpserver import RecordingSMTPServer

pytestmark = [pytest.mark.browser, pytest.mark.postgres]
REFUSED = "554 5.7.1 Message refused by local policy"
TRACKED = re.compile(r'https?://[^"\s<>]+/(?:o|c)/[A-Za-z0-9_.\-=]+')
ITEMS = [
    ("Railway deal signd", "Ariana News", "https://example.com/rail"),  # the typo is fixed after the test send
    ("Record year for visitors", "Azernews", "https://example.com/visitors"),
    ("New bridge over the Ili", "Reuters", "https://example.com/bridge"),
]


@pytest.fixture
def served(
    make_settings: Callable[..., Settings],
    committed_pg: str,
    redis_url: str,
    smtp_server: RecordingSMTPServer,
    tmp_path: Path,
) -> Iterator[tuple[str, Settings]]:
    """`newsletter serve` and a Celery worker on the same settings (broker: the test Redis)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = make_settings(
        database_url=committed_pg, broker_url=redis_url, smtp_url=smtp_server.url, base_url=base_url
    )
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("newsletter")), "serve", "--port", str(port)],
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = CeleryWorker(settings, "editor-path", tmp_path).start()
    try:
        wait_until(lambda: _up(base_url), 60, "newsletter serve to answer")
        yield base_url, settings
    finally:
        worker.stop()
        server.terminate()
        server.wait(20)
        log.close()
        print(worker.log_tail(3000), (tmp_path / "serve.log").read_text(errors="replace")[-3000:])


def _up(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def tracking_urls(message: Any) -> list[str]:
    body = message.message.get_body(preferencelist=("html",))
    return sorted(set(TRACKED.findall(body.get_content())))


def test_the_editors_whole_path_from_a_draft_to_the_report_and_a_resend(
    served: tuple[str, Settings], chromium: Chromium, smtp_server: RecordingSMTPServer
) -> None:  # long: one user's session, step by step
    from playwright.sync_api import expect

    base_url, settings = served
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "aigerim", Role.editor, email="aigerim@example.org")
        make_subscribers(session, make_list(session, slug="weekly", name="The Weekly"), 6)
        session.commit()
    engine.dispose()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"{base_url}/admin/sign-in")
    screenshot(page, "path-sign-in")
    page.get_by_label("User name").fill("aigerim")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Digests").first).to_be_visible()
    screenshot(page, "path-dashboard")

    # a draft of three items, written in the form
    page.get_by_role("link", name="Digests").first.click()
    page.get_by_role("link", name="New digest").click()
    page.get_by_label("Title").fill("Foreign media on Kazakhstan")
    page.get_by_label("Date", exact=True).first.fill("2025-04-26")
    for index, (headline, source, url) in enumerate(ITEMS):
        if index:
            page.get_by_role("button", name="Add an item").click()
            expect(page.locator(f"#items-{index}-headline")).to_be_visible()
        page.locator(f"#items-{index}-headline").fill(headline)
        page.locator(f"#items-{index}-source").fill(source)
        page.locator(f"#items-{index}-url").fill(url)
        page.locator(f"#items-{index}-summary").fill(f"What *{source}* wrote.")
    screenshot(page, "path-digest-new")
    page.get_by_role("button", name="Create draft", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Draft created.")).to_be_visible()

    # the preview follows the form
    frame = page.frame_locator("#preview-frame iframe")
    expect(frame.get_by_role("link", name="New bridge over the Ili")).to_be_visible()
    with page.expect_response(lambda answer: answer.url.endswith("/autosave") and answer.ok):
        page.locator("#items-2-headline").fill("New bridge over the Ili opens")
    expect(
        page.frame_locator("#preview-frame iframe").get_by_role("link", name="New bridge over the Ili opens")
    ).to_be_visible()
    page.get_by_text("320 px").click()
    expect(page.locator("#preview-frame")).to_have_class(re.compile(r"frame-320"))
    expect(page.locator("#preview-frame iframe")).to_be_visible()
    box = page.locator("#preview-frame iframe").bounding_box()
    assert box is not None and round(box["width"]) == 320
    screenshot(page, "path-digest-preview-320")
    page.get_by_role("link", name="Run the check").click()
    expect(page.locator("#check-panel")).to_contain_text("Nothing stops this digest from being sent.")
    screenshot(page, "path-digest-check")

    # a test to the editor's own address, found at the SMTP server
    page.get_by_role("link", name="Send", exact=True).click()
    expect(page.get_by_label("Send the test to")).to_have_value("aigerim@example.org")
    page.get_by_role("button", name="Send a test").click()
    expect(page.get_by_text("Test sent to aigerim@example.org")).to_be_visible()
    [test] = smtp_server.wait_for(1)
    assert test.rcpt_tos == ("aigerim@example.org",)
    assert "Railway deal signd" in test.message.get_body(preferencelist=("html",)).get_content()
    screenshot(page, "path-send")

    # the typo, fixed in the draft (still editable: no campaign uses it yet)
    page.goto(f"{base_url}/admin/digests/2025-04-26-foreign-media-on-kazakhstan")
    with page.expect_response(lambda answer: answer.url.endswith("/autosave") and answer.ok):
        page.locator("#items-0-headline").fill("Railway deal signed")
    expect(page.locator("#save-status")).to_have_text(re.compile(r"Saved \d\d:\d\d UTC"))

    # send to the list: the browser clicks Send, the worker sends; one recipient's server refuses
    smtp_server.responses = lambda rcpt: REFUSED if rcpt == "r3@example.com" else None
    page.get_by_role("link", name="Send", exact=True).click()
    page.get_by_label("The Weekly").check()
    expect(page.locator("#reach")).to_contain_text("Reaches 6 people")
    page.get_by_role("button", name="Review…").click()
    expect(page.get_by_text("6 recipients, list The Weekly, now.")).to_be_visible()
    screenshot(page, "path-confirm")
    page.get_by_role("button", name=re.compile(r"^Send to 6")).click()
    expect(page.locator("#progress")).to_be_visible()
    screenshot(page, "path-campaign-sending")
    # the htmx poll sees `finished` and reloads the page: the report
    expect(page.get_by_role("heading", name="How it did")).to_be_visible(timeout=60_000)
    expect(page.locator("#progress")).to_contain_text("6 of 6 done")
    expect(page.locator("#progress")).to_contain_text("finished")

    # readers open and click received messages; the report shows them, with the chart
    received = [m for m in smtp_server.wait_for(6) if m.rcpt_tos != ("aigerim@example.org",)]
    assert len(received) == 5 and all("Railway deal signed" in m.message.as_string() for m in received)
    for message in received[:3]:
        urls = tracking_urls(message)
        opens, clicks = [u for u in urls if "/o/" in u], [u for u in urls if "/c/" in u]
        for url in opens[:1] + clicks[:1]:
            assert httpx.get(url, follow_redirects=False).status_code in (200, 302, 303, 307), url
    page.reload()
    expect(page.locator("#timeline-chart")).to_be_visible()
    expect(page.get_by_text("3 reader(s) (60.0% of 5 sent)")).to_be_visible()
    page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length === 1")
    expect(page.get_by_text("refused by local policy").first).to_be_visible()
    screenshot(page, "path-report")

    # resend to the failed recipient, now that the server accepts it: the worker sends it
    smtp_server.responses = None
    page.get_by_role("button", name="Resend", exact=True).click()
    expect(page.get_by_text("1 recipient(s) are in the queue again.")).to_be_visible()
    wait_until(lambda: any(m.rcpt_tos == ("r3@example.com",) for m in smtp_server.messages), 60, "the resend")
    page.reload()
    expect(page.locator("#progress")).to_contain_text("6 of 6 done")
    expect(page.locator("#progress")).to_contain_text("finished")
    screenshot(page, "path-resent")
    assert errors == [], "\n".join(dict.fromkeys(errors))
