"""Writing a digest as Markdown: reading what was written gives the same digest (the editor's Markdown tab)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.digests import Digest, Unrepresentable, load_digest, parse_digest, to_markdown

DIGESTS = Path(__file__).parent / "digests"
SAMPLES = sorted((Path(__file__).parent.parent / "newsletter" / "samples").glob("*.md"))

# Single-line text as the validators allow it: no control characters but tab, no surrounding space.
_line_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x7f")
line = (
    st.text(_line_chars, min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
    .filter(lambda text: not any(ord(ch) < 32 and ch != "\t" for ch in text))
)
# Markdown-ish prose that is likely to hit the format's edges: headings, fences, metadata-like lines.
_fragment = st.sampled_from(["# not a section", "## nor an item", "```", "~~~", "Source: x", "---", "", "* a", "> q"])
paragraph = st.lists(st.one_of(line, _fragment), min_size=0, max_size=6).map("\n".join).map(str.strip)
tricky_name = st.one_of(
    line,
    st.sampled_from(["2025-04-21", "a · b", "x | y", "news:today", '"quoted"', "BBC #", "# hash", "C #"]),
)
urls = st.from_regex(r"\Ahttps://[a-z]{1,10}\.example\.(org|com)(/[a-z0-9_-]{1,10}){0,3}\Z")
dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2100, 12, 31))

item = st.fixed_dictionaries(
    {"headline": tricky_name, "source": tricky_name, "url": urls, "summary": paragraph},
    optional={
        "date": dates,
        "section": st.one_of(st.none(), tricky_name, st.sampled_from(["World", "Economy"])),
        "image": urls,
        "image_alt": tricky_name,
    },
)
digest_data = st.fixed_dictionaries(
    {"title": tricky_name, "date": dates, "items": st.lists(item, min_size=1, max_size=6)},
    optional={
        "slug": st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,30}\Z"),
        "intro": paragraph,
        "language": st.sampled_from(["en", "ru", "kk", "pt-BR"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digest_data)
def test_reading_what_was_written_gives_the_same_digest(data: dict[str, object]) -> None:
    digest = Digest.model_validate(data)
    try:
        text = to_markdown(digest)
    except Unrepresentable as exc:
        # Only a summary with a heading-like line or an unbalanced fence cannot be written; it is named.
        assert "summary" in str(exc)
        assert any(re.search(r"^(#{1,2}([ \t]|$)|`{3}|~{3})", it.summary, re.MULTILINE) for it in digest.items)
        return
    assert parse_digest(text, "md") == digest
    assert parse_digest(text, "md").content_hash() == digest.content_hash()


@pytest.mark.parametrize("path", [*SAMPLES, *sorted(DIGESTS.glob("*.md")), *sorted(DIGESTS.glob("*.yaml"))])
def test_the_sample_digests_round_trip(path: Path) -> None:
    digest = load_digest(path)
    text = to_markdown(digest)
    assert text.startswith("---\ntitle: ")
    assert parse_digest(text, "md") == digest


def test_the_written_form_is_the_one_people_type() -> None:
    digest = Digest.model_validate(
        {
            "title": "Weekly",
            "date": "2025-04-26",
            "slug": "weekly-1",
            "language": "en",
            "intro": "Hello **all**.",
            "items": [
                {
                    "headline": "First",
                    "source": "Azernews",
                    "url": "https://example.com/a",
                    "date": "2025-04-21",
                    "section": "Tourism",
                    "summary": "One.",
                    "image": "https://example.com/i.jpg",
                    "image_alt": "A view",
                },
                {"headline": "Second", "source": "2025-04-21 · Review", "url": "https://example.com/b", "summary": ""},
            ],
        }
    )
    assert to_markdown(digest) == (
        "---\ntitle: Weekly\ndate: '2025-04-26'\nslug: weekly-1\nlanguage: en\n---\n\nHello **all**.\n\n"
        "# Tourism\n\n## First\nSource: Azernews\nURL: https://example.com/a\nDate: 2025-04-21\n"
        "Image: https://example.com/i.jpg\nImage-Alt: A view\n\nOne.\n\n"
        '## Second\nSource: "2025-04-21 · Review"\nURL: https://example.com/b\nSection: ""\n'
    )


def test_a_summary_the_format_cannot_hold_is_refused_with_its_item() -> None:
    digest = Digest.model_validate(
        {
            "title": "T",
            "date": "2025-04-26",
            "items": [{"headline": "Ok", "source": "S", "url": "https://example.com/a", "summary": "# Big\ntext"}],
        }
    )
    with pytest.raises(Unrepresentable, match=r"item 1 \(headline 'Ok'\): its summary has a line"):
        to_markdown(digest)


def test_a_quoted_metadata_value_is_taken_literally_and_a_stray_quote_is_kept() -> None:
    text = (
        '---\ntitle: T\ndate: 2025-04-26\n---\n\n## H\nSource: "2025-04-21"\nURL: https://example.com/a\n\n'
        '## G\nSource: "The Times\nURL: https://example.com/b\n'
    )
    first, second = parse_digest(text, "md").items
    assert first.source == "2025-04-21" and first.date is None
    assert second.source == '"The Times'
