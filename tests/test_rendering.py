"""Digest email rendering: content, escaping, links, placeholders, size, layout in a browser, spam score.

Rendering (Jinja2 + MJML) happens once per campaign; per recipient the composer only substitutes the
placeholders, which `personalise` below imitates.
"""

from __future__ import annotations

import email.policy
import email.utils
import html as html_lib
import re
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from markupsafe import escape

from newsletter import deliverability
from newsletter.digests import Digest, load_digest, parse_digest
from newsletter.models import MailingList
from newsletter.rendering import (
    NAME,
    PLACEHOLDERS,
    PREFERENCES_URL,
    TRACK,
    UNSUBSCRIBE_URL,
    RenderedEmail,
    Theme,
    format_date,
    render_digest,
    theme_for,
)

ROOT = Path(__file__).parent.parent
DIGESTS = Path(__file__).parent / "digests"
SAMPLE = ROOT / "newsletter" / "samples" / "sample-digest.md"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")

THEME = Theme(
    publication_name="The Steppe Courier",
    accent_color="#0b6e4f",
    postal_address="Example Media LLP\n1 Example Avenue, Astana 010000, Kazakhstan",
)


TRACKED: list[str] = []  # shared by every test so a URL keeps its number throughout the module


def tracked(url: str) -> str:
    """Imitate the delivery layer: one numbered click-tracking URL per distinct link."""
    if url not in TRACKED:
        TRACKED.append(url)
    return f"https://news.example.org/c/{TRACK}.{TRACKED.index(url)}"


def render(digest: Digest, **overrides: object) -> RenderedEmail:
    options: dict[str, object] = {
        "theme": THEME,
        "list_name": "Kazakhstan in Foreign Media",
        "list_description": "A weekly digest",
        "link_href": tracked,
        "open_pixel_url": f"https://news.example.org/o/{TRACK}",
    }
    options.update(overrides)
    return render_digest(digest, **options)  # type: ignore[arg-type]


def personalise(rendered: RenderedEmail, *, html: bool) -> str:
    """Substitute placeholders the way the composer does: plain replacement, values escaped for HTML."""
    values = {
        NAME: "Aigerim & Co",
        UNSUBSCRIBE_URL: "https://news.example.org/unsubscribe/tok_9f8e7d6c5b4a",
        PREFERENCES_URL: "https://news.example.org/preferences/tok_9f8e7d6c5b4a",
        TRACK: "d1234",
    }
    body = rendered.html if html else rendered.text
    for placeholder, value in values.items():
        body = body.replace(placeholder, html_lib.escape(value) if html else value)
    return body


@pytest.fixture(scope="module")
def sample() -> Digest:
    return load_digest(SAMPLE)


@pytest.fixture(scope="module")
def sample_email(sample: Digest) -> RenderedEmail:
    return render(sample)


def test_every_item_appears_in_html_and_text(sample: Digest, sample_email: RenderedEmail) -> None:
    for item in sample.items:
        assert str(escape(item.headline)) in sample_email.html
        assert item.headline in sample_email.text.replace("\n", " ")
        assert str(escape(item.source)) in sample_email.html
        assert item.source in sample_email.text
        assert item.date is not None
        assert format_date(item.date) in sample_email.html
        assert f"{item.source} · {format_date(item.date)}" in sample_email.text
    for name, _ in sample.sections():
        assert f"<h2>{name}</h2>" in sample_email.html
        assert f"{(name or '').upper()}\n" in sample_email.text
    assert sample_email.subject == sample.title
    assert "26 April 2025" in sample_email.html and "26 April 2025" in sample_email.text


def test_links_go_through_link_href(sample: Digest, sample_email: RenderedEmail) -> None:
    item_urls = [item.url for item in sample.items]
    assert list(sample_email.links[: len(item_urls)]) == item_urls
    assert "https://example.net/etj/kazakhstan-renewables/full" in sample_email.links  # a summary link
    for url in sample_email.links:
        assert f'href="{url}"' not in sample_email.html
        assert url not in sample_email.text
        assert f'href="{tracked(url)}"' in sample_email.html
        assert tracked(url) in sample_email.text


def test_link_href_is_called_once_per_distinct_url() -> None:
    calls: list[str] = []

    def record(url: str) -> str:
        calls.append(url)
        return url + "#t"

    rendered = render(load_digest(DIGESTS / "ten-items.yaml"), link_href=record)
    assert calls == list(rendered.links)
    assert len(set(calls)) == len(calls)
    assert "mailto:talks@example.org" not in calls  # only http(s) URLs are tracked
    assert 'href="mailto:talks@example.org"' in rendered.html


def test_default_link_href_is_identity() -> None:
    digest = load_digest(DIGESTS / "ten-items.yaml")
    rendered = render_digest(digest, theme=THEME, list_name="Tools")
    assert f'href="{digest.items[0].url}"' in rendered.html
    assert rendered.links[0] == digest.items[0].url
    assert TRACK not in rendered.html  # no pixel, no tracked links


def test_escaping_fixture_stays_text() -> None:
    rendered = render(load_digest(DIGESTS / "escaping.json"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;" in rendered.html
    for needle in ("<script", "<b>not bold", "<i>Section", "<em>HTML", "<img src=x", 'href="javascript:'):
        assert needle not in rendered.html
    # markdown-it refuses javascript: links outright, so the source stays visible as harmless text.
    assert "A [bad link](javascript:alert(3)) and a" in rendered.html
    assert 'alt="&#34;&gt;&lt;script&gt;alert(5)&lt;/script&gt;"' in rendered.html
    assert "https://example.com/a?x=1&amp;y=&#34;2&#34;" not in rendered.links  # links hold raw URLs
    assert 'https://example.com/a?x=1&y="2"' in rendered.links
    # The text part is plain text: nothing is escaped there.
    assert '<script>alert(1)</script> & "quotes"' in rendered.text
    assert "and a good one (https://news.example.org/c/" in " ".join(rendered.text.split())


def test_unicode_is_intact() -> None:
    digest = load_digest(DIGESTS / "unicode.yaml")
    rendered = render(digest)
    for text in ("Қазақстан апталық шолуы 🇰🇿", "כותרת בעברית על כלכלת קזחסטן", "عنوان عربي عن السكك الحديدية 🚆", "🎉"):
        assert text in rendered.html
        assert text in rendered.text
    assert rendered.subject == "Қазақстан апталық шолуы 🇰🇿"
    assert 'dir="auto"' in rendered.html  # right-to-left headlines lay out by their own direction


def test_placeholders_are_emitted_verbatim(sample_email: RenderedEmail) -> None:
    for part in (sample_email.html, sample_email.text):
        for placeholder in PLACEHOLDERS:
            assert placeholder in part, placeholder
    assert f'href="{UNSUBSCRIBE_URL}"' in sample_email.html
    assert f'href="{PREFERENCES_URL}"' in sample_email.html
    assert f"Hello {NAME}," in sample_email.html and f"Hello {NAME}," in sample_email.text
    assert f'src="https://news.example.org/o/{TRACK}"' in sample_email.html
    assert f"Unsubscribe: {UNSUBSCRIBE_URL}\n" in sample_email.text


def test_greeting_and_pixel_are_optional(sample: Digest) -> None:
    rendered = render(sample, greeting=False, open_pixel_url=None)
    assert NAME not in rendered.html and NAME not in rendered.text
    assert "/o/" not in rendered.html


def test_sample_html_is_small(sample_email: RenderedEmail) -> None:
    size = len(sample_email.html.encode("utf-8"))
    assert size <= 60_000, f"sample digest HTML is {size} bytes"


def test_theme_appears(sample_email: RenderedEmail) -> None:
    assert "#0b6e4f" in sample_email.html
    assert "The Steppe Courier" in sample_email.html and "The Steppe Courier" in sample_email.text
    address = "Example Media LLP, 1 Example Avenue, Astana 010000, Kazakhstan"
    assert address in sample_email.html and address in sample_email.text
    assert "You are receiving this because you subscribed to Kazakhstan in Foreign Media." in sample_email.html


def test_logo_is_shown_with_alt(sample: Digest) -> None:
    theme = Theme.from_dict({"publication_name": "Courier", "logo_url": "https://example.org/logo.png", "extra": 1})
    rendered = render(sample, theme=theme)
    assert re.search(r'<img alt="Courier"[^>]*src="https://example.org/logo.png"', rendered.html)


def test_theme_validation() -> None:
    assert Theme.from_dict({"publication_name": "P", "accent_color": "#abc"}).accent_color == "#abc"
    with pytest.raises(ValueError, match="accent_color must be a hex colour like #1a5fb4 or #15b, got 'red'"):
        Theme.from_dict({"publication_name": "P", "accent_color": "red"})
    with pytest.raises(ValueError, match="publication_name"):
        Theme.from_dict({"accent_color": "#abc"})
    with pytest.raises(ValueError, match="logo_url must be an absolute http"):
        Theme(publication_name="P", logo_url="javascript:alert(1)")


def test_a_lists_theme_fills_its_gaps_from_the_list_and_a_broken_one_falls_back() -> None:
    weekly = MailingList(name="Weekly", postal_address="1 Example Street", theme={"accent_color": "#15b"})
    assert theme_for(weekly) == Theme(publication_name="Weekly", accent_color="#15b", postal_address="1 Example Street")
    # lists.check_theme refuses this on write; a row stored before that check must not stop an email
    weekly.theme = {"accent_color": "red", "logo_url": "javascript:alert(1)"}
    assert theme_for(weekly) == Theme(publication_name="Weekly", postal_address="1 Example Street")


def test_markdown_in_summaries() -> None:
    digest = parse_digest(
        "---\ntitle: T\ndate: 2025-01-01\n---\n\n## H\nSource: S · https://example.com/item\n\n"
        "Some **bold** and a [link](https://example.com/in-summary), an <b>html</b> tag,\n"
        "a [relative](/x) one and [mail](mailto:a@example.com).\n\n"
        "- first point\n- second point with a very long line that certainly needs to be wrapped somewhere "
        "around the seventy-sixth column\n\n1. one\n2. two\n\n> quoted words\n",
        "md",
    )
    rendered = render(digest)
    assert "<strong>bold</strong>" in rendered.html
    assert "&lt;b&gt;html&lt;/b&gt;" in rendered.html
    assert 'href="/x"' not in rendered.html and "a relative one" in rendered.html
    assert f'href="{tracked("https://example.com/in-summary")}"' in rendered.html
    text = rendered.text
    assert f"a link ({tracked('https://example.com/in-summary')})" in text.replace("\n", " ")
    assert "mail (a@example.com)" in text
    assert "\n- first point\n- second point with" in text
    assert "\n  somewhere around the seventy-sixth column\n" in text  # continuation lines hang under the text
    assert "\n1. one\n2. two\n" in text
    assert "\n> quoted words\n" in text


def test_text_part_wraps_but_never_breaks_urls(sample_email: RenderedEmail) -> None:
    for line in sample_email.text.splitlines():
        if len(line) > 76:
            assert re.search(r"\S*https?://\S+", line), line
    for url in re.findall(r"https?://\S+", sample_email.text):
        assert url.rstrip(").,").startswith("https://news.example.org/c/")
    assert "\r" not in sample_email.text


def test_text_part_mirrors_html_footer(sample_email: RenderedEmail) -> None:
    text = sample_email.text
    assert "\n-- \nKazakhstan in Foreign Media: A weekly digest\n" in text
    assert "You are receiving this because you subscribed to Kazakhstan in Foreign Media." in " ".join(text.split())
    assert f"Preferences: {PREFERENCES_URL}\n" in text
    assert text.endswith("\n") and "\n\n\n" not in text


# --- Layout in a real browser --------------------------------------------------------------------------

PLACEHOLDER_IMAGE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="600">'
    '<rect width="1200" height="600" fill="#8fa9b8"/><circle cx="900" cy="180" r="90" fill="#f2d16b"/>'
    '<path d="M0 600 L350 220 L600 480 L820 300 L1200 600 Z" fill="#50646f"/></svg>'
)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@pytest.mark.parametrize("width", [320, 600])
def test_sample_fits_the_screen_and_images_have_alt(sample_email: RenderedEmail, width: int) -> None:
    from playwright.sync_api import Route, sync_playwright

    def serve_offline(route: Route) -> None:
        # Tests never touch the network: images get a local picture, anything else is refused.
        if route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/svg+xml", body=PLACEHOLDER_IMAGE)
        else:
            route.abort()

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.route("**/*", serve_offline)
            page.set_content(personalise(sample_email, html=True), wait_until="load")
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            inner_width = page.evaluate("window.innerWidth")
            missing_alt = page.evaluate(
                "[...document.images].filter(i => i.getAttribute('aria-hidden') !== 'true'"
                " && !(i.getAttribute('alt') || '').trim()).map(i => i.src)"
            )
            image_count = page.evaluate("document.images.length")
            page.screenshot(path=str(SCREENSHOTS / f"digest-{width}.png"), full_page=True)
        finally:
            browser.close()
    assert scroll_width <= inner_width, f"content is {scroll_width}px wide in a {inner_width}px viewport"
    assert image_count >= 2
    assert missing_alt == []


# --- SpamAssassin --------------------------------------------------------------------------------------


def build_message(rendered: RenderedEmail) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Digest <news@example.org>"
    message["To"] = "Aigerim Sadykova <aigerim@example.com>"
    message["Subject"] = rendered.subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain="example.org")
    message["List-Id"] = "Kazakhstan in Foreign Media <foreign-media.news.example.org>"
    message["List-Unsubscribe"] = "<https://news.example.org/unsubscribe/tok_9f8e7d6c5b4a>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(personalise(rendered, html=False))
    message.add_alternative(personalise(rendered, html=True), subtype="html")
    return message.as_bytes()


@pytest.mark.skipif(shutil.which("spamassassin") is None, reason="needs spamassassin")
@pytest.mark.parametrize("fixture", [SAMPLE, DIGESTS / "ten-items.yaml"], ids=["sample", "ten-items"])
def test_spamassassin_score_is_low(fixture: Path) -> None:
    spam = deliverability.spam_score(build_message(render(load_digest(fixture))))
    assert spam.score <= 0.5, spam.rules
