"""/admin/segments in real Chromium: an admin writes a filter, the live count follows the typing (htmx),
a bad filter's error shows next to it, the segment is saved and appears in the send flow. Screenshots at
1280 and 390 px land in test-output/screenshots/."""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Role
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list, make_subscriber, publish_sample


def test_write_a_segment_with_its_live_count_and_pick_it_when_sending(
    live: tuple[str, Settings], chromium: Chromium
) -> None:
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "dana", Role.admin)
        weekly = make_list(session, slug="weekly", name="The Weekly")
        for i, city in enumerate(["Almaty", "Almaty", "Astana"]):
            make_subscriber(session, weekly, f"reader{i}@example.com").attributes = {"city": city}
        slug = publish_sample(session).slug
        session.commit()
    engine.dispose()
    page = chromium.new_page(base_url)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("dana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Segments").first.click()
    expect(page.get_by_text("No segments yet")).to_be_visible()
    screenshot(page, "admin-segments-empty")

    page.get_by_role("link", name="New segment").first.click()
    page.get_by_label("Name").fill("Almaty readers")
    box = page.get_by_label("Filter (JSON)")
    box.fill('{"attribute": {"name": "city", "op": "like", "value": "Almaty"}}')
    expect(page.locator("#segment-count")).to_contain_text('filter.attribute: unknown operator "like"')
    box.fill('{"attribute": {"name": "city", "op": "eq", "value": "Almaty"}}')
    expect(page.locator("#segment-count")).to_contain_text("Matches 2 subscribers")  # htmx, as it is typed
    screenshot(page, "admin-segment-new")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Segment “Almaty readers” saved.")).to_be_visible()

    page.goto(f"{base_url}/admin/campaigns/new?digest={slug}")
    page.get_by_label("The Weekly").check()
    expect(page.locator("#reach")).to_contain_text("Reaches 3 people")
    page.get_by_label("Only those in the segment").select_option("Almaty readers")
    expect(page.locator("#reach")).to_contain_text("Reaches 2 people")
    screenshot(page, "admin-campaign-new-segment")
    page.goto(f"{base_url}/admin/segments")
    page.get_by_role("link", name="Count Almaty readers").click()
    expect(page.locator("#count-1")).to_have_text("2 subscribers")
    screenshot(page, "admin-segments")
    assert errors == []
