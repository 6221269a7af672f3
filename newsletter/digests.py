"""Digest source formats (Markdown with front matter, YAML, JSON) parsed into one validated `Digest`.

The Markdown form, for editors who type digests by hand::

    ---
    title: Foreign media on Kazakhstan
    date: 2025-04-26
    slug: foreign-media-2025-04-26      # optional; derived from date + title when missing
    intro: One paragraph of Markdown.   # optional; or write it as text before the first heading
    preheader: One line for the inbox.  # optional; the snippet after the subject (else the intro's start)
    ---

    Intro paragraphs may also go here, before the first heading.

    # Investment

    ## Kazakhstan plans $500 million railway investment
    Source: Ariana News · 2025-04-21 · https://example.com/article
    Image: https://example.com/photo.jpg | Freight train at a border station

    Summary paragraph(s) in Markdown, up to the next `#` or `##` heading.

Rules:

- `# Name` starts a section: the items below it belong to it until the next `# Name`.
- `## Headline` starts an item. The non-blank lines right under it are its metadata, each `Key: value`
  with a key among Source, URL (or Link), Date, Section, Image, Image-Alt (case-insensitive). A blank line
  ends the metadata; everything after it up to the next `#`/`##` heading is the summary (`###` and deeper
  headings stay inside the summary, as does anything in a fenced code block).
- The Source line may carry the date and the URL too, separated by `·` or ` | `:
  `Source: Ariana News · 2025-04-21 · https://example.com/a`. Parts are told apart by their shape (an ISO
  date, an http(s) URL); giving the same field twice, here and on its own line, is an error.
- The Image line may carry the alt text after ` | `: `Image: https://example.com/a.jpg | alt text`.
- `Section:` on an item overrides the enclosing `# Section` heading (`Section: ""` means none).
- A metadata value in double quotes is a JSON string, taken literally: `Source: "2025 · Review"` is a
  source named that, not a source and a date.

`to_markdown` writes a digest in this form (what the admin editor's Markdown tab shows); reading it back
gives the same digest.

A stored digest is a draft: `update` replaces its content until a campaign uses it; from then on it is
frozen (what was sent can always be shown again) and `duplicate` makes an editable copy under a new slug.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import models
from newsletter.digest_sources import (
    InvalidDigest,
    Unrepresentable,
    read_json,
    read_markdown,
    read_yaml,
    type_name,
    write_markdown,
)
from newsletter.errors import Conflict, NotFound

__all__ = [
    "Digest",
    "DigestConflict",
    "DigestFormat",
    "DigestFrozen",
    "DigestItem",
    "InvalidDigest",
    "Unrepresentable",
    "campaigns_using",
    "check_fields",
    "duplicate",
    "load_digest",
    "parse_digest",
    "publish",
    "slugify",
    "to_markdown",
    "update",
]

DigestFormat = Literal["md", "yaml", "json"]

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
SLUG_MAX_LENGTH = 100
# BCP 47 in the shape people write it: a language subtag, then region/script/variant subtags.
LANGUAGE_PATTERN = re.compile(r"^[a-zA-Z]{2,8}(-[a-zA-Z0-9]{1,8})*$")

_SUFFIX_FORMATS: dict[str, DigestFormat] = {
    ".md": "md",
    ".markdown": "md",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
}

# Control characters (CR and LF above all) in a single-line field could end up inside a mail header.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_single_line(value: str | None) -> str | None:
    if value is not None and _CONTROL_CHARS.search(value):
        raise ValueError("must be a single line of text (no line breaks or control characters)")
    return value


def _check_no_nul(value: str | None) -> str | None:
    # Multi-line text may hold any character but NUL, which PostgreSQL cannot store.
    if value is not None and "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def _check_web_url(value: str, *, schemes: tuple[str, ...]) -> str:
    wanted = "an absolute https URL" if schemes == ("https",) else "an absolute http(s) URL"
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValueError(f"must be {wanted} without spaces, got {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"must be {wanted}, got {value!r}") from None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise ValueError(f"must be {wanted}, got {value!r}")
    return value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


class DigestItem(BaseModel):
    """One curated article: where it was published, a link to it and a short Markdown summary."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)

    # Lengths are the columns', so that what passes here is never refused by the database.
    headline: str = Field(min_length=1, max_length=models.column_length(models.DigestItem.headline))
    source: str = Field(min_length=1, max_length=models.column_length(models.DigestItem.source))
    url: str
    date: dt.date | None = None
    section: str | None = Field(None, max_length=models.column_length(models.DigestItem.section))
    summary: str = ""
    image: str | None = None
    image_alt: str | None = Field(None, max_length=models.column_length(models.DigestItem.image_alt))

    @field_validator("headline", "source", "section", "image_alt")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        return _check_single_line(value)

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        return _check_web_url(value, schemes=("http", "https"))

    @field_validator("image")
    @classmethod
    def _image_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_web_url(value, schemes=("https",))

    @field_validator("section", "image", "image_alt", "date", mode="before")
    @classmethod
    def _optional(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("summary", mode="before")
    @classmethod
    def _summary_default(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("url", "summary", "image")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return _check_no_nul(value)


class Digest(BaseModel):
    """A dated issue: title, optional intro and at least one item; immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True)

    title: str = Field(min_length=1, max_length=models.column_length(models.Digest.title))
    date: dt.date
    slug: str | None = None
    language: str | None = Field(None, max_length=models.column_length(models.Digest.language))
    intro: str | None = None
    # The inbox snippet, plain text; None: made from the intro (else the first headlines) when rendered.
    preheader: str | None = Field(None, max_length=models.column_length(models.Digest.preheader))
    items: tuple[DigestItem, ...] = Field(min_length=1)

    @field_validator("title", "preheader")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        _check_single_line(value)
        return value

    @field_validator("slug", "intro", "language", "preheader", mode="before")
    @classmethod
    def _optional(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("intro")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return _check_no_nul(value)

    @field_validator("slug")
    @classmethod
    def _slug_shape(cls, value: str | None) -> str | None:
        if value is not None and not SLUG_PATTERN.match(value):
            raise ValueError(
                f"must be 1-100 lowercase letters, digits and hyphens, starting with a letter or digit, got {value!r}"
            )
        return value

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str | None) -> str | None:
        if value is not None and not LANGUAGE_PATTERN.match(value):
            raise ValueError(f"must be a language tag such as en, ru, kk or pt-BR, got {value!r}")
        return value

    @model_validator(mode="after")
    def _derive_slug(self) -> Digest:
        if self.slug is None:
            # The model is frozen; setting the derived value once during validation is the intended escape.
            object.__setattr__(self, "slug", slugify(self.title, self.date))
        return self

    def sections(self) -> list[tuple[str | None, list[DigestItem]]]:
        """Group the items by section, sections in order of first appearance, items in digest order."""
        groups: dict[str | None, list[DigestItem]] = {}
        for item in self.items:
            groups.setdefault(item.section, []).append(item)
        return list(groups.items())

    def canonical_json(self) -> str:
        """Serialise the validated content deterministically, so equal content gives equal text."""
        data = self.model_dump(mode="json")
        for key in ("language", "preheader"):
            if data[key] is None:
                del data[key]  # digests stored before the field existed keep their hash
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def content_hash(self) -> str:
        """Return the sha256 hex digest of `canonical_json()`, to tell a re-publish from a changed digest."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def slugify(title: str, date: dt.date) -> str:
    """Build the default slug `YYYY-MM-DD-words-of-the-title`, ASCII only and at most 100 characters."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    words = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    slug = f"{date.isoformat()}-{words}" if words else date.isoformat()
    return slug[:SLUG_MAX_LENGTH].rstrip("-")


def load_digest(path: Path) -> Digest:
    """Read and validate a digest file; the format follows the suffix (.md, .markdown, .yaml, .yml, .json)."""
    path = Path(path)
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(_SUFFIX_FORMATS)
        raise InvalidDigest(f"{path}: unknown digest file type {path.suffix or '(none)'!r}; use one of {known}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidDigest(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidDigest(f"{path}: is a directory, not a digest file") from None
    except UnicodeDecodeError as exc:
        raise InvalidDigest(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return parse_digest(text, fmt)
    except InvalidDigest as exc:
        raise InvalidDigest([f"{path}: {problem}" for problem in exc.problems]) from None


def parse_digest(text: str, fmt: DigestFormat) -> Digest:
    """Parse digest source text in the given format and validate it, or raise `InvalidDigest`."""
    item_lines: list[int] = []
    if fmt == "md":
        data, item_lines = read_markdown(text)
    elif fmt == "yaml":
        data = read_yaml(text)
    elif fmt == "json":
        data = read_json(text)
    else:
        raise InvalidDigest(f"unknown digest format {fmt!r}; use 'md', 'yaml' or 'json'")
    return _validate(data, item_lines)


# --- Validation and error messages ---------------------------------------------------------------------


def _validate(data: Any, item_lines: list[int]) -> Digest:
    if not isinstance(data, dict):
        raise InvalidDigest(f"expected a mapping with title, date and items at the top level, got {type_name(data)}")
    items = data.get("items")
    if isinstance(items, list):
        for number, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise InvalidDigest(f"item {number}: expected a mapping of fields, got {type_name(item)}")
    try:
        return Digest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        if any(error["loc"][:1] == ("items",) and len(error["loc"]) > 1 for error in errors):
            # Pydantic also reports "too short" when items exist but failed; that would only mislead.
            errors = [error for error in errors if error["loc"] != ("items",) or error["type"] != "too_short"]
        raise InvalidDigest([_describe_error(error, data, item_lines) for error in errors]) from None


def _describe_error(error: Mapping[str, Any], data: Mapping[str, Any], item_lines: list[int]) -> str:
    loc = tuple(error["loc"])
    message = _describe_problem(error, loc[-1] if loc else "")
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        return f"{_describe_item(loc[1], data, item_lines)}: {_dotted(loc[2:])}{message}"
    return f"{_dotted(loc)}{message}"


def _describe_item(index: int, data: Mapping[str, Any], item_lines: list[int]) -> str:
    label = f"item {index + 1}"
    if index < len(item_lines):
        label += f" at line {item_lines[index]}"
    item = data["items"][index]
    headline = item.get("headline") if isinstance(item, dict) else None
    if isinstance(headline, str) and headline.strip():
        shown = headline.strip() if len(headline) <= 60 else headline.strip()[:57] + "..."
        label += f' (headline "{shown}")'
    return label


def _dotted(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) + ": " if loc else ""


def _describe_problem(error: Mapping[str, Any], field: Any) -> str:
    kind = error["type"]
    given = error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling)"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short" and field == "items":
        return "a digest needs at least one item"
    if kind.startswith("date") or kind.startswith("datetime"):
        return f"expected a date like 2025-04-26, got {given!r}"
    if kind == "string_type":
        return f"expected text, got {type_name(given)}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


def check_fields(data: Mapping[str, Any]) -> tuple[Digest | None, dict[str, str]]:
    """Validate a digest's data field by field, for a form: the digest, or the problems keyed by field path
    (`title`, `items`, `items.2.url`: item indices from 0), each in words that say how to fix it."""
    try:
        return Digest.model_validate(data), {}
    except ValidationError as exc:
        problems: dict[str, str] = {}
        item_errors = any(len(error["loc"]) > 1 and error["loc"][0] == "items" for error in exc.errors())
        for error in exc.errors():
            loc = tuple(error["loc"])
            if loc == ("items",) and error["type"] == "too_short" and item_errors:
                continue  # "too short" only because items failed: their own errors say why
            key = ".".join(str(part) for part in loc) or "digest"
            problems.setdefault(key, _describe_problem(error, loc[-1] if loc else ""))
        return None, problems


class DigestConflict(Conflict):
    """The slug is taken by a stored digest with different content."""


class DigestFrozen(Conflict):
    """The digest is used by a campaign, so it can no longer change; its copy can."""

    def __init__(self, slug: str, campaign_ids: Sequence[int]) -> None:
        used_by = (
            f"campaign {campaign_ids[0]}"
            if len(campaign_ids) == 1
            else "campaigns " + ", ".join(str(number) for number in campaign_ids)
        )
        super().__init__(f"digest {slug!r} is used by {used_by}; duplicate it to edit")


class DigestNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        super().__init__(f"no digest with slug {slug!r}")


def publish(session: Session, digest: Digest) -> tuple[models.Digest, bool]:
    """Store a validated digest as a new draft; storing identical content again is a no-op, different content
    under a taken slug is refused (edit that draft with `update` instead).

    Returns the stored row and whether it was created now.
    """
    existing = session.scalar(select(models.Digest).where(models.Digest.slug == digest.slug))
    if existing is not None:
        if existing.content_hash != digest.content_hash():
            raise DigestConflict(
                f"slug {digest.slug!r} is already taken by a digest with different content: edit that draft "
                f"(`newsletter digests update {digest.slug} FILE`) or give this one another slug"
            )
        return existing, False
    stored = models.Digest(slug=digest.slug)
    _fill(stored, digest)
    session.add(stored)
    session.flush()
    return stored, True


def update(session: Session, slug: str, digest: Digest) -> models.Digest:
    """Replace a draft's content (title, date, language, intro, items); its slug stays.

    Raises DigestNotFound, DigestFrozen when a campaign uses it, and InvalidDigest when `digest` names
    another slug explicitly (a sent link must never change meaning: duplicate under the new slug instead).
    """
    # FOR UPDATE conflicts with the KEY SHARE lock a new campaign's foreign key takes on this row, so an edit
    # and a campaign of this digest on PostgreSQL are one after the other: the edit either finishes before the
    # campaign exists or sees it below and is refused.
    stored = session.scalar(select(models.Digest).where(models.Digest.slug == slug).with_for_update())
    if stored is None:
        raise DigestNotFound(slug)
    if "slug" in digest.model_fields_set and digest.slug != slug:
        raise InvalidDigest(
            f"slug: an edit keeps the slug {slug!r}, got {digest.slug!r}; "
            "leave the slug out, or duplicate the digest under the new slug"
        )
    used = campaigns_using(session, stored)
    if used:
        raise DigestFrozen(slug, [campaign.id for campaign in used])
    content = digest.model_copy(update={"slug": slug})
    if stored.content_hash == content.content_hash():
        return stored  # saved as it is (the editor saves as you go): updated_at tells when it last changed
    # Old rows go first: the new ones reuse their (digest_id, position) pairs.
    stored.items.clear()
    session.flush()
    _fill(stored, content)
    session.flush()
    return stored


def duplicate(session: Session, slug: str, new_slug: str | None = None) -> models.Digest:
    """A new draft with the same content as `slug` (frozen or not) under `new_slug`, by default `SLUG-copy`
    (then `SLUG-copy-2`, ...)."""
    original = get_published(session, slug)
    if new_slug is None:
        new_slug = _free_slug(session, slug)
    content = from_stored(original).model_copy(update={"slug": new_slug})
    checked = _validate(content.model_dump(mode="json"), [])  # the new slug's shape, as for any digest
    if session.scalar(select(models.Digest.id).where(models.Digest.slug == new_slug)) is not None:
        raise DigestConflict(f"slug {new_slug!r} is already taken; choose another one for the copy")
    stored = models.Digest(slug=new_slug)
    _fill(stored, checked)
    session.add(stored)
    session.flush()
    return stored


def _free_slug(session: Session, slug: str) -> str:
    number = 1
    while True:
        suffix = "-copy" if number == 1 else f"-copy-{number}"
        candidate = slug[: SLUG_MAX_LENGTH - len(suffix)].rstrip("-") + suffix
        if session.scalar(select(models.Digest.id).where(models.Digest.slug == candidate)) is None:
            return candidate
        number += 1


def _fill(stored: models.Digest, digest: Digest) -> None:
    stored.title = digest.title
    stored.date = digest.date
    stored.language = digest.language
    stored.intro = digest.intro
    stored.preheader = digest.preheader
    stored.content_hash = digest.content_hash()
    stored.items = [
        models.DigestItem(
            position=position,
            headline=item.headline,
            source=item.source,
            url=item.url,
            date=item.date,
            section=item.section,
            summary=item.summary,
            image=item.image,
            image_alt=item.image_alt,
        )
        for position, item in enumerate(digest.items, start=1)
    ]


def campaigns_using(session: Session, digest: models.Digest) -> list[models.Campaign]:
    """The campaigns of this digest, oldest first; any one of them freezes it."""
    return list(
        session.scalars(
            select(models.Campaign).where(models.Campaign.digest_id == digest.id).order_by(models.Campaign.id)
        )
    )


def get_published(session: Session, slug: str) -> models.Digest:
    """The stored digest (draft or frozen) with this slug, or DigestNotFound."""
    digest = session.scalar(select(models.Digest).where(models.Digest.slug == slug))
    if digest is None:
        raise DigestNotFound(slug)
    return digest


def to_markdown(digest: Digest) -> str:
    """The digest as Markdown with front matter; `parse_digest(to_markdown(d), "md") == d`.

    Raises Unrepresentable for the rare summary the Markdown form cannot hold (a `# ` line outside a code block).
    """
    return write_markdown(digest.model_dump(mode="json"))


def from_stored(digest: models.Digest) -> Digest:
    """The stored digest back as the validated model rendering takes."""
    return Digest.model_validate(
        {
            "title": digest.title,
            "date": digest.date,
            "slug": digest.slug,
            "language": digest.language,
            "intro": digest.intro,
            "preheader": digest.preheader,
            "items": [
                {
                    "headline": item.headline,
                    "source": item.source,
                    "url": item.url,
                    "date": item.date,
                    "section": item.section,
                    "summary": item.summary,
                    "image": item.image,
                    "image_alt": item.image_alt,
                }
                for item in digest.items
            ],
        }
    )
