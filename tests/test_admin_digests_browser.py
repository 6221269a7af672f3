"""The digest editor in a real browser: write a draft of three items in the form, watch the preview follow,
switch it to 320 px and dark, run the pre-send check, edit in the Markdown tab and see the form reflect it.
Screenshots of every page and state at 1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

import re as RE

import pytest
from sqlalchemy.orm import Session

from newsletter import delivery
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list, make_subscribers

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

ITEMS = [
    ("Railway deal signed", "Ariana News", "https://example.com/rail"),
    ("Record year for visitors", "Azernews", "https://example.com/visitors"),
    ("Headline three", "Reuters", "https://example.com/three"),
]


def test_write_preview_check_and_edit_a_digest(
    live: tuple[str, Settings], chromium: Chromium
) -> None:  # long: one user's session, step by step
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "ed", Role.editor)
        weekly = make_list(session, slug="weekly", name="The Weekly")
        make_subscribers(session, weekly, 2)
        session.commit()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    # Script errors and CSP violations; "Failed to load resource" is the 422 of a Save with a mistake, which
    # the test checks itself.
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )

    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("ed")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Digests").first.click()
    expect(page.get_by_role("heading", name="No digests yet")).to_be_visible()
    screenshot(page, "admin-digests-empty")

    # 1. A draft of three items, written in the form; "Add an item" works inline (htmx).
    page.get_by_role("link", name="New digest").click()
    page.get_by_role("button", name="Create draft", exact=True).click()  # nothing filled in yet
    expect(page.get_by_role("alert")).to_contain_text("Title: is required")
    expect(page.get_by_role("alert")).to_contain_text("Items: a digest needs at least one item")
    screenshot(page, "admin-digests-new-errors")
    page.get_by_label("Title").fill("Foreign media on Kazakhstan")
    page.get_by_label("Date", exact=True).first.fill("2025-04-26")
    for index, (headline, source, url) in enumerate(ITEMS):
        if index:
            page.get_by_role("button", name="Add an item").click()
            expect(page.locator(f"#items-{index}-headline")).to_be_visible()
        page.locator(f"#items-{index}-headline").fill(headline)
        page.locator(f"#items-{index}-source").fill(source)
        page.locator(f"#items-{index}-url").fill(url)
        page.locator(f"#items-{index}-summary").fill(f"Summary of *{headline}*.")
    screenshot(page, "admin-digests-new")
    page.get_by_role("button", name="Create draft", exact=True).click()
    expect(page.get_by_role("heading", name="Foreign media on Kazakhstan")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Draft created.")).to_be_visible()

    # 2. The preview is the email itself; typing in the form saves and the preview follows.
    frame = page.frame_locator("#preview-frame iframe")
    expect(frame.get_by_role("link", name="Railway deal signed")).to_be_visible()
    with page.expect_response(lambda answer: answer.url.endswith("/autosave") and answer.ok):
        page.locator("#items-0-headline").fill("Railway deal signed at last")
    expect(page.locator("#save-status")).to_have_text(RE.compile(r"Saved \d\d:\d\d UTC"))
    expect(
        page.frame_locator("#preview-frame iframe").get_by_role("link", name="Railway deal signed at last")
    ).to_be_visible()
    screenshot(page, "admin-digests-editor")

    # 3. 320 px, then dark mode.
    page.get_by_text("320 px").click()
    expect(page.locator("#preview-frame")).to_have_class(RE.compile(r"frame-320"))
    box = page.locator("#preview-frame iframe").bounding_box()
    assert box is not None and round(box["width"]) == 320
    page.get_by_text("Dark", exact=True).click()
    expect(page.locator("#preview-frame")).to_have_class(RE.compile(r"frame-dark"))
    email = page.frame_locator("#preview-frame iframe")
    expect(email.get_by_role("link", name="Railway deal signed at last")).to_be_visible()
    screenshot(page, "admin-digests-preview-320-dark")

    # 4. The pre-send check, inline.
    page.get_by_role("link", name="Run the check").click()
    expect(page.locator("#check-panel")).to_contain_text("Nothing stops this digest from being sent.")
    expect(page.locator("#check-panel")).to_contain_text("KB of HTML")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "admin-digests-check")

    # 5. Reorder inline: item 3 moves up; the form and the stored draft follow.
    page.get_by_role("button", name="Move item 3 up").click()
    expect(page.locator("#items-1-headline")).to_have_value("Headline three")
    expect(page.locator("#save-status")).to_have_text(RE.compile(r"Saved"))

    # 6. The Markdown tab edits the same draft; the form shows the change.
    page.get_by_role("link", name="Markdown", exact=True).click()
    source = page.get_by_label("The digest in Markdown")
    text = source.input_value()
    assert "## Headline three" in text and text.index("Headline three") < text.index("Record year")
    with page.expect_response(lambda answer: answer.url.endswith("/markdown") and answer.ok):
        source.fill(text.replace("## Headline three", "## Headline three, edited in Markdown"))
    expect(page.locator("#save-status")).to_have_text(RE.compile(r"Saved \d\d:\d\d UTC"))
    screenshot(page, "admin-digests-markdown")
    page.get_by_role("link", name="Form", exact=True).click()
    expect(page.locator("#items-1-headline")).to_have_value("Headline three, edited in Markdown")

    # 7. A mistake is explained beside its field; nothing is saved until it is fixed.
    page.locator("#items-2-url").fill("not a link")
    expect(page.locator("#err-items-2-url")).to_contain_text("must be an absolute http(s) URL")
    expect(page.locator("#save-status")).to_contain_text("Not saved: 1 problem")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Item 3, URL: must be an absolute http(s) URL")
    screenshot(page, "admin-digests-errors")
    page.locator("#items-2-url").fill("https://example.com/visitors")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()

    # 8. The table; then the digest used by a campaign is read-only, with "Duplicate to edit".
    page.get_by_role("link", name="All digests").click()
    expect(page.get_by_role("link", name="Foreign media on Kazakhstan")).to_be_visible()
    screenshot(page, "admin-digests-list")
    with page.expect_response(lambda answer: "q=nothing" in answer.url):
        page.get_by_label("Search by title").fill("nothing like it")  # live, with htmx
    expect(page.get_by_role("heading", name="No digest matches")).to_be_visible()
    screenshot(page, "admin-digests-search-empty")
    page.get_by_role("link", name="Show all digests").click()
    with Session(engine) as session:
        delivery.create_campaign(session, digest_slug="2025-04-26-foreign-media-on-kazakhstan", list_slugs=["weekly"])
        session.commit()
    page.get_by_role("link", name="Foreign media on Kazakhstan").click()
    expect(page.get_by_text("can no longer change")).to_be_visible()
    screenshot(page, "admin-digests-frozen")
    page.get_by_role("button", name="Duplicate to edit").click()
    expect(page.locator("#items-0-headline")).to_have_value("Railway deal signed at last")
    assert page.url.endswith("/admin/digests/2025-04-26-foreign-media-on-kazakhstan-copy")
    assert errors == [], "\n".join(dict.fromkeys(errors))
    engine.dispose()
