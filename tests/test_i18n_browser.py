"""What a reader sees, in Chromium: the digest email at 320 and 600 px, light and dark, images on and blocked,
in English, Russian and Kazakh; every public page at 390 and 1280 px in each language.

One browser, one page per test, many viewports. Screenshots land in test-output/screenshots/i18n-*.png.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from newsletter import colors, delivery, digests, rendering
from newsletter.config import Settings
from newsletter.db import make_engine
from newsletter.models import Subscriber
from newsletter.rendering import ListLook, Theme
from newsletter.tokens import TokenPurpose, Tokens
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Chromium
from tests.factories import make_list, make_subscriber
from tests.test_web_public import start

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")]

DIGESTS = Path(__file__).parent / "digests"
SAMPLES = {"en": DIGESTS / "ten-items.md", "ru": DIGESTS / "russian.md", "kk": DIGESTS / "kazakh.md"}
ACCENT = "#c2410c"
LOOK = ListLook(
    Theme("The Steppe Courier", accent_color=ACCENT), "The Steppe Courier", "Weekly", True, None, "steppe", True
)
# A 4x3 grey PNG, served for every image the email asks for: nothing leaves the machine.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAFklEQVR4nGNsaGhgQAJMyBwGBgYGAAq+AUFdS5v7AAAAAElFTkSuQmCC"
)


def _show(page: Any, html: str, *, images: bool) -> None:
    def answer(route: Any) -> None:
        if route.request.resource_type == "image" and images:
            route.fulfill(status=200, content_type="image/png", body=PNG)
        elif route.request.url.startswith("about:"):
            route.continue_()
        else:
            route.abort("blockedbyclient")  # a blocked image, as a mail client that does not load them

    page.unroute("**/*")
    page.route("**/*", answer)
    page.goto("about:blank")
    page.set_content(html)


def test_the_digest_email_at_320_and_600_px_light_and_dark_images_on_and_blocked() -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    palette = colors.palette(ACCENT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 600, "height": 900})
        for language, sample in SAMPLES.items():
            html = rendering.render_for_list(
                digests.load_digest(sample), LOOK, base_url="https://news.example.org"
            ).html
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                for images in (True, False):
                    _show(page, html, images=images)
                    for width in (320, 600):
                        if language != "en" and not images and (scheme, width) != ("light", 320):
                            continue  # every variant in English; the other languages in the five that differ
                        page.set_viewport_size({"width": width, "height": 900})
                        _check_layout(page, width)
                        name = f"i18n-email-{language}-{scheme}-{'images' if images else 'blocked'}-{width}.png"
                        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
                    if not images:
                        _check_blocked_image(page, scheme)
                link = page.locator(".d a").last.evaluate("a => getComputedStyle(a).color")
                wanted = palette.dark if scheme == "dark" else palette.light
                assert link == _rgb(wanted), (language, scheme, link)
        browser.close()


def _rgb(color: str) -> str:
    value = color.lstrip("#")
    return f"rgb({int(value[0:2], 16)}, {int(value[2:4], 16)}, {int(value[4:6], 16)})"


def _check_layout(page: Any, width: int) -> None:
    # Nothing wider than the screen, and the header's date on one line (no lone year).
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    date = page.locator(".nw").first.bounding_box()
    line = page.locator(".nw").first.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)")
    assert date is not None and date["height"] <= line * 1.2
    if width == 320:  # the title in at most four lines (it took five at 28 px)
        title = page.locator("h1").first
        lines = title.evaluate("h => h.getBoundingClientRect().height / parseFloat(getComputedStyle(h).lineHeight)")
        assert lines <= 4.2


def _check_blocked_image(page: Any, scheme: str) -> None:
    # A blocked image shows its alt text in a tinted box of the column's width, not as a small underlined link.
    image = page.locator(".ph img").first
    box = image.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > box["width"] / 2  # a 16:9 box, not a line
    background = image.evaluate("i => getComputedStyle(i).backgroundColor")
    assert background == ("rgb(33, 38, 45)" if scheme == "dark" else "rgb(238, 241, 244)")


@pytest.mark.postgres
def test_every_public_page_at_390_and_1280_px_in_each_language(live: tuple[str, Settings], chromium: Chromium) -> None:
    base_url, settings = live
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        mailing_list = make_list(
            session,
            slug="steppe",
            name="The Steppe Courier",
            description="What foreign media wrote about Kazakhstan this week.",
            theme={"accent_color": ACCENT},
        )
        reader = make_subscriber(session, mailing_list, "aigerim@example.com", "Aigerim")
        for sample in SAMPLES.values():
            digest = digests.load_digest(sample)
            # Without images: an issue page loads them from their sites, which this browser must not reach.
            bare = tuple(item.model_copy(update={"image": None, "image_alt": None}) for item in digest.items)
            stored, _ = digests.publish(session, digest.model_copy(update={"items": bare}))
            campaign = delivery.create_campaign(
                session, digest_slug=stored.slug, list_slugs=["steppe"], allow_repeat=True
            )
            start(session, settings, campaign.id)
        session.commit()
        slug = digests.from_stored(stored).slug
        tokens = Tokens(settings.secret_key)
        subscriber = session.get(Subscriber, reader.id)
        assert subscriber is not None
        unsubscribe = tokens.make(TokenPurpose.unsubscribe, reader.id, mailing_list.id, bound_to=subscriber.created_at)
        preferences = tokens.make(TokenPurpose.preferences, reader.id, bound_to=subscriber.created_at)
    engine.dispose()  # its pooled connection closed now, not by the garbage collector in a later test
    pages = {
        "subscribe": "/subscribe/steppe",
        "archive": "/archive",
        "list-archive": "/archive?list=steppe",
        "issue": f"/archive/{slug}",
        "unsubscribe": f"/unsubscribe/{unsubscribe}",
        "preferences": f"/preferences/{preferences}",
        "not-found": "/archive/no-such-issue",
    }
    for language in ("en", "ru", "kk"):
        page = chromium.new_page(base_url, width=1280, height=800, locale=language, extra_http_headers={})
        page.set_extra_http_headers({"Accept-Language": language})
        for name, path in pages.items():
            page.goto(f"{base_url}{path}")
            lang = page.locator("html").get_attribute("lang")
            # The issue page speaks the language (the Kazakh sample, published last); the rest the reader's.
            assert lang == ("kk" if name == "issue" else language), (name, language, lang)
            for width in (1280, 390) if language == "en" or name in ("subscribe", "archive") else (390,):
                page.set_viewport_size({"width": width, "height": 800})
                assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, width)
                page.screenshot(path=str(SCREENSHOTS / f"i18n-web-{language}-{name}-{width}.png"), full_page=True)
        # the list's accent reached the page (through the hashed <style>, which the CSP allowed)
        accent = page.locator("header.site").evaluate("h => getComputedStyle(h).borderTopColor")
        assert accent == _rgb(colors.palette(ACCENT).light)
        page.context.close()
    assert chromium.blocked_by_csp == []
