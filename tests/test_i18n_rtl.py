"""Adding a language is one catalog: a small Arabic catalog dropped beside the committed ones (in the test's
temporary copy of newsletter/locale/) is offered by the forms, accepted for lists and subscribers, and makes
the emails and the public pages right-to-left, with no list of languages edited anywhere."""

from __future__ import annotations

import html
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from sqlalchemy.orm import Session

from newsletter import digests, i18n, rendering
from newsletter.rendering import ListLook, Theme
from tests.factories import make_list
from tests.test_web_public import Web
from tests.test_web_public import web as web_app

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "digests" / "ten-items.md"
# A few strings of the emails and pages, as an Arabic catalog would have them.
ARABIC = {
    "In this issue:": "في هذا العدد:",
    "Unsubscribe": "إلغاء الاشتراك",
    "Email address": "عنوان البريد الإلكتروني",
    "Subscribe": "اشترك",
}

site = pytest.fixture(name="site")(web_app.__wrapped__)  # type: ignore[attr-defined]


def _forget_catalogs() -> None:
    i18n.available.cache_clear()
    i18n.translations.cache_clear()
    rendering._environment.cache_clear()


@pytest.fixture
def arabic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The committed catalogs plus `ar/LC_MESSAGES/messages.mo`, compiled here from `ARABIC`."""
    locale = tmp_path / "locale"
    shutil.copytree(i18n.LOCALE_DIR, locale)
    catalog = Catalog(locale="ar")
    for msgid, text in ARABIC.items():
        catalog.add(msgid, text)
    folder = locale / "ar" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with (folder / "messages.mo").open("wb") as mo:
        write_mo(mo, catalog)
    monkeypatch.setattr(i18n, "LOCALE_DIR", locale)
    _forget_catalogs()
    yield locale
    monkeypatch.undo()
    _forget_catalogs()


@pytest.mark.usefixtures("arabic")
def test_one_catalog_adds_a_language_everywhere() -> None:
    assert i18n.available() == ("en", "ar", "kk", "ru")
    assert i18n.check_language("ar-EG") == "ar" and i18n.page_language(None, None, "ar-SA, en;q=0.5") == "ar"
    assert i18n.language_name("ar") == "العربية"
    with pytest.raises(i18n.InvalidLanguage, match="one of en, ar, kk, ru"):
        i18n.check_language("fa")


@pytest.mark.usefixtures("arabic")
def test_an_arabic_digest_email_is_right_to_left() -> None:
    digest = digests.load_digest(SAMPLE).model_copy(update={"language": "ar"})
    look = ListLook(Theme("The Steppe Courier"), "Steppe Courier", "Weekly", True, None, "steppe", True)
    rendered = rendering.render_for_list(digest, look, base_url="https://news.example.org")
    assert '<html lang="ar" dir="rtl"' in rendered.html
    assert "في هذا العدد:" in html.unescape(rendered.html) and "في هذا العدد:" in rendered.text
    assert "إلغاء الاشتراك" in html.unescape(rendered.html)
    # the English headlines of the items keep their own direction (dir="auto")
    assert '<h3 dir="auto">' in rendered.html
    confirmation = rendering.render_confirmation(
        theme=look.theme, list_name="Steppe Courier", confirm_url="https://news.example.org/confirm/t", language="ar"
    )
    assert 'lang="ar" dir="rtl"' in confirmation.html
    english = rendering.render_for_list(digest.model_copy(update={"language": "en"}), look, base_url="https://x.org")
    assert '<html lang="en" dir="ltr"' in english.html


@pytest.mark.usefixtures("arabic")
def test_an_arabic_reader_gets_right_to_left_pages(site: Web, session: Session) -> None:
    make_list(session, slug="steppe", name="Steppe Courier")
    session.commit()
    page = site.client.get("/subscribe/steppe", headers={"Accept-Language": "ar"})
    assert page.status_code == 200 and '<html lang="ar" dir="rtl">' in page.text
    assert "عنوان البريد الإلكتروني" in page.text and '<option value="ar" lang="ar"' in page.text
    done = site.client.post("/subscribe/steppe", data={"email": "layla@example.com", "language": "ar"})
    assert done.status_code == 200
    english = site.client.get("/subscribe/steppe", headers={"Accept-Language": "en"})
    assert '<html lang="en" dir="ltr">' in english.text
