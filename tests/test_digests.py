"""Digest source formats: the same content in every format, and a precise message for each bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from newsletter.digests import Digest, InvalidDigest, load_digest, parse_digest, slugify

DIGESTS = Path(__file__).parent / "digests"
BAD = DIGESTS / "bad"
SAMPLE = Path(__file__).parent.parent / "newsletter" / "samples" / "sample-digest.md"

FRONT = "---\ntitle: T\ndate: 2025-04-26\n---\n\n"


@pytest.mark.parametrize("stem", ["ten-items", "unicode"])
def test_every_format_of_a_fixture_parses_to_the_same_digest(stem: str) -> None:
    paths = sorted(DIGESTS.glob(f"{stem}.*"))
    assert len(paths) >= 2
    digests = [load_digest(path) for path in paths]
    assert all(digest == digests[0] for digest in digests), [str(path) for path in paths]
    assert len({digest.content_hash() for digest in digests}) == 1


def test_ten_items_fields() -> None:
    digest = load_digest(DIGESTS / "ten-items.yaml")
    assert digest.title == "This week in open-source tooling"
    assert digest.date == dt.date(2025, 3, 14)
    assert digest.slug == "2025-03-14-this-week-in-open-source-tooling"
    assert len(digest.items) == 10
    last = digest.items[-1]
    assert last.image == "https://example.org/images/conference-hall.png"
    assert last.image_alt and last.image_alt.startswith("An empty conference hall")
    assert digest.items[8].date is None
    assert [name for name, _ in digest.sections()] == ["Packaging", "Databases", "Web", "Testing", "Community"]
    assert [len(items) for _, items in digest.sections()] == [2, 2, 2, 2, 2]


def test_sample_digest_is_valid() -> None:
    digest = load_digest(SAMPLE)
    assert 8 <= len(digest.items) <= 12
    assert [name for name, _ in digest.sections()] == ["Diplomacy", "Tourism", "Investment", "Energy"]
    assert digest.intro and "weekly round-up" in digest.intro


def test_unicode_survives_parsing() -> None:
    digest = load_digest(DIGESTS / "unicode.md")
    assert digest.title == "Қазақстан апталық шолуы 🇰🇿"
    assert digest.items[1].headline == "כותרת בעברית על כלכלת קזחסטן"
    # Cyrillic folds to nothing in ASCII: the slug falls back to the date alone.
    assert digest.slug == "2025-04-26"


def test_sections_group_by_first_appearance() -> None:
    items = [
        {"headline": f"H{n}", "source": "S", "url": f"https://example.com/{n}", "section": section}
        for n, section in enumerate(["B", None, "A", "B", None])
    ]
    digest = Digest.model_validate({"title": "T", "date": "2025-01-01", "items": items})
    assert [(name, [i.headline for i in group]) for name, group in digest.sections()] == [
        ("B", ["H0", "H3"]),
        (None, ["H1", "H4"]),
        ("A", ["H2"]),
    ]


def test_canonical_json_is_deterministic_and_content_sensitive() -> None:
    yaml_digest = load_digest(DIGESTS / "ten-items.yaml")
    json_digest = load_digest(DIGESTS / "ten-items.json")
    assert yaml_digest.canonical_json() == json_digest.canonical_json()
    assert json.loads(yaml_digest.canonical_json())["slug"] == yaml_digest.slug
    changed = yaml_digest.model_copy(update={"title": "Another title"})
    assert changed.content_hash() != yaml_digest.content_hash()


def test_whitespace_is_stripped_and_blank_optionals_become_none() -> None:
    digest = parse_digest(
        'title: "  Padded  "\ndate: 2025-04-26\nintro: "  "\nitems:\n'
        '  - {headline: " H ", source: " S ", url: "https://example.com/", section: "", image: ""}\n',
        "yaml",
    )
    assert digest.title == "Padded"
    assert digest.intro is None
    item = digest.items[0]
    assert (item.headline, item.source, item.section, item.image) == ("H", "S", None, None)


def test_slug_is_derived_and_bounded() -> None:
    assert slugify("Élan & Co: Week 12!", dt.date(2025, 1, 2)) == "2025-01-02-elan-co-week-12"
    long_slug = slugify("word " * 60, dt.date(2025, 1, 2))
    assert len(long_slug) <= 100 and not long_slug.endswith("-")


def test_explicit_slug_must_have_the_right_shape() -> None:
    with pytest.raises(InvalidDigest, match=r"^slug: must be 1-100 lowercase letters.*got 'Bad Slug'"):
        parse_digest(FRONT.replace("date:", "slug: Bad Slug\ndate:") + "## H\nSource: S · https://e.com/\n", "md")


def test_markdown_metadata_keys_and_summary() -> None:
    digest = parse_digest(
        FRONT + "Intro text.\n\n# Money\n\n## First ##\nSOURCE: Paper\nURL: http://example.com/a\nDate: 2025-04-20\n"
        "Image: https://example.com/i.png\nImage-Alt: A picture\n\nPara one.\n\n### Not an item\n\n"
        "```\n## not a heading either\n```\n\n## Second\nSection: Other\nSource: Paper · https://example.com/b\n",
        "md",
    )
    first, second = digest.items
    assert digest.intro == "Intro text."
    assert (first.headline, first.source, first.url, first.date) == (
        "First",
        "Paper",
        "http://example.com/a",
        dt.date(2025, 4, 20),
    )
    assert (first.section, first.image, first.image_alt) == ("Money", "https://example.com/i.png", "A picture")
    assert "### Not an item" in first.summary and "## not a heading either" in first.summary
    assert (second.section, second.summary) == ("Other", "")


# --- Bad input: each message names the field, item and line -------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing-title.md", "missing-title.md: title: is required"),
        ("no-headline.yaml", "no-headline.yaml: item 1: headline: is required"),
        ("no-url.yaml", 'no-url.yaml: item 1 (headline "A"): url: is required'),
        (
            "javascript-url.md",
            'javascript-url.md: item 3 at line 12 (headline "Foo"): url: must be an absolute http(s) URL, '
            "got 'javascript:alert(1)'",
        ),
        ("bad-date.json", "bad-date.json: date: expected a date like 2025-04-26, got '2025-02-30'"),
        ("invalid-syntax.yaml", "invalid-syntax.yaml: invalid YAML at line 6, column 9: mapping values"),
        ("invalid-syntax.json", "invalid-syntax.json: invalid JSON at line 5, column 22: Expecting property"),
        ("empty-items.yaml", "empty-items.yaml: items: a digest needs at least one item"),
        ("digest.toml", "digest.toml: unknown digest file type '.toml'; use one of .md, .markdown"),
    ],
)
def test_bad_files_are_rejected_with_a_precise_message(name: str, message: str) -> None:
    with pytest.raises(InvalidDigest) as caught:
        load_digest(BAD / name)
    assert str(caught.value).startswith(f"{BAD / name}: "), str(caught.value)
    assert message in str(caught.value)
    assert len(caught.value.problems) == 1, caught.value.problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidDigest, match=r"nope\.md: no such file$"):
        load_digest(tmp_path / "nope.md")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidDigest, match="not UTF-8 text"):
        load_digest(path)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://example.com/a", True),
        ("http://example.com", True),
        ("javascript:alert(1)", False),
        ("data:text/html,<b>x</b>", False),
        ("/relative/path", False),
        ("//example.com/a", False),
        ("ftp://example.com/a", False),
        ("https://", False),
        ("https://exa mple.com", False),
        ("https://example.com:99999/", False),
    ],
)
def test_item_url_must_be_absolute_http(url: str, accepted: bool) -> None:
    data = {"title": "T", "date": "2025-01-01", "items": [{"headline": "H", "source": "S", "url": url}]}
    if accepted:
        assert parse_digest(json.dumps(data), "json").items[0].url == url
    else:
        with pytest.raises(InvalidDigest, match=r'item 1 \(headline "H"\): url: must be an absolute http\(s\) URL'):
            parse_digest(json.dumps(data), "json")


def test_image_must_be_https() -> None:
    data = {
        "title": "T",
        "date": "2025-01-01",
        "items": [{"headline": "H", "source": "S", "url": "https://e.com/", "image": "http://e.com/i.png"}],
    }
    with pytest.raises(InvalidDigest, match=r"image: must be an absolute https URL, got 'http://e.com/i.png'"):
        parse_digest(json.dumps(data), "json")


@pytest.mark.parametrize("field", ["headline", "source"])
def test_line_breaks_in_header_bound_fields_are_rejected(field: str) -> None:
    item = {"headline": "H", "source": "S", "url": "https://e.com/"}
    item[field] = "one\r\nBcc: victim@example.com"
    data = {"title": "T", "date": "2025-01-01", "items": [item]}
    with pytest.raises(InvalidDigest, match=rf"{field}: must be a single line"):
        parse_digest(json.dumps(data), "json")


def test_line_break_in_title_is_rejected() -> None:
    data = {"title": "a\nb", "date": "2025-01-01", "items": [{"headline": "H", "source": "S", "url": "https://e.com/"}]}
    with pytest.raises(InvalidDigest, match=r"^title: must be a single line"):
        parse_digest(json.dumps(data), "json")


def test_unknown_field_is_reported() -> None:
    data = {
        "title": "T",
        "date": "2025-01-01",
        "items": [{"headline": "H", "source": "S", "url": "https://e.com/", "sumary": "x"}],
    }
    with pytest.raises(InvalidDigest, match=r'item 1 \(headline "H"\): sumary: unknown field'):
        parse_digest(json.dumps(data), "json")


def test_several_problems_are_all_reported() -> None:
    data = {"date": "someday", "items": [{"headline": "", "source": "S", "url": "https://e.com/"}]}
    with pytest.raises(InvalidDigest) as caught:
        parse_digest(json.dumps(data), "json")
    assert caught.value.problems == (
        "title: is required",
        "date: expected a date like 2025-04-26, got 'someday'",
        "item 1: headline: must not be empty",
    )


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("- just\n- a list\n", "yaml", "expected a mapping with title, date and items at the top level, got a list"),
        ('{"title": "T", "date": "2025-01-01", "items": ["x"]}', "json", "item 1: expected a mapping of fields"),
        ("# Section\n\n## H\n", "md", "line 1: a Markdown digest starts with YAML front matter"),
        ("---\ntitle: T\n", "md", "line 1: front matter opened with '---' is never closed"),
        ("---\ntitle: T\ndate: [\n---\n", "md", "invalid YAML at line 3, column 8"),
        (FRONT + "## H\nSource: S\nNot metadata here\n", "md", "line 8: expected 'Key: value' metadata"),
        (FRONT + "## H\nSorce: S\n", "md", "got 'Sorce: S'; leave a blank line before the summary"),
        (FRONT + "## H\nSource: S · https://e.com/a\nURL: https://e.com/b\n", "md", "line 8: url is given twice"),
        (FRONT + "# Sec\n\nStray words\n", "md", "line 8: text under a '# Sec' section heading belongs to no item"),
        (FRONT + "No items at all.\n", "md", "items: a digest needs at least one item"),
        ("---\nintro: a\n---\nb\n\n## H\nSource: S · https://e.com/\n", "md", "intro is given both"),
    ],
)
def test_malformed_sources(text: str, fmt: str, message: str) -> None:
    with pytest.raises(InvalidDigest) as caught:
        parse_digest(text, fmt)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_invalid_digest_is_a_value_error() -> None:
    assert issubclass(InvalidDigest, ValueError)


ITEM = "  - headline: {headline}\n    source: {source}\n    url: https://example.org/a\n"


@pytest.mark.parametrize(
    ("field", "text", "problem"),
    [
        ("title", f"title: {'T' * 501}\ndate: 2025-04-26\nitems:\n" + ITEM.format(headline="H", source="S"),
         "title: "),
        ("headline", "title: T\ndate: 2025-04-26\nitems:\n" + ITEM.format(headline="H" * 501, source="S"),
         "item 1"),
        ("source", "title: T\ndate: 2025-04-26\nitems:\n" + ITEM.format(headline="H", source="S" * 256),
         "item 1"),
    ],
)  # fmt: skip
def test_lengths_are_the_columns_lengths(field: str, text: str, problem: str) -> None:
    """Issue 11 item 8: a 501-character headline passed validation and then failed in PostgreSQL."""
    with pytest.raises(InvalidDigest, match=rf"{problem}.*at most") as info:
        parse_digest(text, "yaml")
    assert field in str(info.value)
    # One character less is accepted.
    parse_digest(text.replace("T" * 501, "T" * 500).replace("H" * 501, "H" * 500).replace("S" * 256, "S" * 255), "yaml")


@pytest.mark.parametrize("date", ["2025-13-45", "2025-02-30"])
def test_an_impossible_date_is_an_invalid_digest_naming_the_field(date: str) -> None:
    """It was a ValueError from PyYAML's date constructor: a traceback from `digests publish`."""
    yaml_text = f"title: T\ndate: {date}\nitems:\n" + ITEM.format(headline="H", source="S")
    with pytest.raises(InvalidDigest, match=rf"^date: expected a date like 2025-04-26, got '{date}'$"):
        parse_digest(yaml_text, "yaml")
    item_date = "title: T\ndate: 2025-04-26\nitems:\n" + ITEM.format(headline="H", source="S") + f"    date: {date}\n"
    with pytest.raises(InvalidDigest, match=rf"item 1 .*date: expected a date like 2025-04-26, got '{date}'"):
        parse_digest(item_date, "yaml")
    markdown = f"---\ntitle: T\ndate: {date}\n---\n\n## H\nSource: S\nURL: https://example.org/a\n\nSummary.\n"
    with pytest.raises(InvalidDigest, match=rf"date: expected a date like 2025-04-26, got '{date}'"):
        parse_digest(markdown, "md")
    markdown = f"---\ntitle: T\ndate: 2025-04-26\n---\n\n## H\nSource: S\nURL: https://example.org/a\nDate: {date}\n"
    with pytest.raises(InvalidDigest, match=rf"date: expected a date like 2025-04-26, got '{date}'"):
        parse_digest(markdown, "md")
    with pytest.raises(InvalidDigest, match=r"invalid YAML value: (month must be|day is out of range)"):
        parse_digest(f"title: T\ndate: !!timestamp {date}\nitems:\n" + ITEM.format(headline="H", source="S"), "yaml")


def test_nul_in_a_digests_text_is_refused() -> None:
    base = "title: T\ndate: 2025-04-26\nitems:\n" + ITEM.format(headline="H", source="S")
    item = {"headline": "H", "source": "S", "url": "https://example.org/a"}
    with pytest.raises(InvalidDigest, match="summary: contains a NUL"):
        parse_digest(json.dumps({"title": "T", "date": "2025-04-26", "items": [{**item, "summary": "a\x00b"}]}), "json")
    with pytest.raises(InvalidDigest, match="intro: contains a NUL"):
        parse_digest(json.dumps({"title": "T", "date": "2025-04-26", "intro": "\x00", "items": [item]}), "json")
    assert parse_digest(base, "yaml").date == dt.date(2025, 4, 26)
