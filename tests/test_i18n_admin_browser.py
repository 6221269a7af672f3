"""Readers' languages in Chromium, against the app served by uvicorn over PostgreSQL: an admin sets a list's
language and a subscriber's from the selects (a forged value is refused beside the field), and a Russian
reader's refused subscribe form says why in Russian. Screenshots at 1280 and 390 px land in
test-output/screenshots/i18n-admin-*.png and i18n-web-ru-subscribe-refused-*.png."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import MailingList, Role, Subscriber
from tests.admin import PASSWORD, make_user
from tests.browser import Chromium, screenshot
from tests.factories import make_list, make_subscriber

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


# long: one walk, list then subscriber then the reader's refused form, as a person takes it
def test_an_admin_sets_languages_and_a_reader_is_refused_in_russian(
    live: tuple[str, Settings], chromium: Chromium
) -> None:
    from playwright.sync_api import expect

    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        make_user(session, "aigerim", Role.admin)
        courier = make_list(session, slug="steppe", name="The Steppe Courier")
        reader_id = make_subscriber(session, courier, "oleg@example.org", "Oleg").id
        list_id = courier.id
        session.commit()
    page = chromium.new_page(base_url)
    page.goto(f"{base_url}/admin/sign-in")
    page.get_by_label("User name").fill("aigerim")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    page.goto(f"{base_url}/admin/lists/steppe")
    language = page.get_by_label("Language", exact=True)
    expect(language).to_have_value("")
    language.select_option("ru")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved the settings of The Steppe Courier.")).to_be_visible()
    expect(page.get_by_label("Language", exact=True)).to_have_value("ru")
    expect(page.locator("dl.facts")).to_contain_text("Русский (ru)")
    screenshot(page, "i18n-admin-list-language")
    # a value no catalog has, forged into the select: refused beside the field, the stored one kept
    page.get_by_label("Language", exact=True).evaluate(
        "select => { select.add(new Option('Klingon', 'tlh')); select.value = 'tlh'; }"
    )
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#err-language")).to_have_text("language must be one of en, kk, ru, got 'tlh'")
    expect(page.get_by_label("Language", exact=True)).to_have_value("tlh")  # as it was sent, marked unavailable
    screenshot(page, "i18n-admin-list-language-refused")

    page.goto(f"{base_url}/admin/subscribers/{reader_id}")
    page.get_by_label("Language", exact=True).select_option("kk")
    page.get_by_role("button", name="Save the language").click()
    expect(page.get_by_text("Saved the language: Қазақ тілі (kk).")).to_be_visible()
    screenshot(page, "i18n-admin-subscriber-language")

    # the reader's side: the list now speaks Russian, and so does its refusal
    reader = chromium.new_page(base_url)
    reader.goto(f"{base_url}/subscribe/steppe")
    reader.get_by_label("Адрес электронной почты").fill("ivan.example.org")
    reader.get_by_role("button", name="Подписаться").click()
    expect(reader.get_by_role("alert")).to_have_text(
        "Проверьте адрес электронной почты: в адресе электронной почты должен быть знак @, например name@example.org"
    )
    expect(reader.get_by_label("Адрес электронной почты")).to_have_value("ivan.example.org")
    screenshot(reader, "i18n-web-ru-subscribe-refused")
    with Session(engine) as session:
        stored_list = session.get(MailingList, list_id)
        stored_reader = session.get(Subscriber, reader_id)
        assert stored_list is not None and stored_list.language == "ru"
        assert stored_reader is not None and stored_reader.language == "kk"
    engine.dispose()
