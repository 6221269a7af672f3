"""Digest source text (Markdown with front matter, YAML, JSON) read into plain data for `digests` to validate,
and a digest's data written back as Markdown (`write_markdown`) so that one draft can be edited either way.

Errors are `InvalidDigest`, each naming the line it was found on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from newsletter.errors import Invalid


class InvalidDigest(Invalid):
    """A digest source that cannot become a `Digest`; `problems` lists each reason for a person to fix."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("; ".join(self.problems))
        self.detail = [{"msg": problem} for problem in self.problems]


class _DigestLoader(yaml.SafeLoader):
    """YAML's safe loader, except that dates stay text: PyYAML turns `2025-02-30` into a ValueError with no
    line or field; as text it reaches validation, which names the field (`item 2: date: ...`)."""


_DigestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str, *, first_line: int = 1) -> Any:
    try:
        return yaml.load(text, Loader=_DigestLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InvalidDigest(_describe_yaml_error(exc, first_line)) from None
    except ValueError as exc:  # an explicitly tagged value that cannot be built, e.g. `!!timestamp 2025-13-45`
        raise InvalidDigest(f"invalid YAML value: {exc}") from None


def _describe_yaml_error(exc: yaml.YAMLError, first_line: int) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + first_line}, column {mark.column + 1}: {problem}"


def read_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidDigest(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


_FRONT_MATTER_FENCE = re.compile(r"^---\s*$")


_HEADING = re.compile(r"^(#{1,2})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")


_CODE_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


_METADATA_LINE = re.compile(r"^([A-Za-z][A-Za-z_-]*)[ \t]*:[ \t]*(.*)$")


_PART_SEPARATOR = re.compile(r"[ \t]*·[ \t]*|[ \t]+\|[ \t]+")


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# Anything shaped like "scheme:rest" without spaces is taken as the URL, so that validation can reject
# `javascript:` and friends by name instead of silently folding them into the source's name.
_URL_LIKE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")


_METADATA_KEYS = {
    "source": "source",
    "url": "url",
    "link": "url",
    "date": "date",
    "section": "section",
    "image": "image",
    "image-alt": "image_alt",
    "image_alt": "image_alt",
    "alt": "image_alt",
}


def read_markdown(text: str) -> tuple[dict[str, Any], list[int]]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    data, body_start = _read_front_matter(lines)
    items: list[dict[str, Any]] = []
    item_lines: list[int] = []
    intro: list[str] = []
    section: str | None = None
    block: list[str] = []  # lines of the item being read
    block_line = 0
    in_fence = False
    problems: list[str] = []

    def finish_block() -> None:
        if block_line:
            try:
                items.append(_read_markdown_item(block, block_line, section))
                item_lines.append(block_line)
            except InvalidDigest as exc:
                problems.extend(exc.problems)

    for number, line in enumerate(lines[body_start:], start=body_start + 1):
        if _CODE_FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading is None:
            if block_line:
                block.append(line)
            elif section is None:
                intro.append(line)
            elif line.strip():
                problems.append(
                    f"line {number}: text under a '# {section}' section heading belongs to no item; "
                    "start an item with '## Headline' first"
                )
            continue
        finish_block()
        level, title = len(heading.group(1)), (heading.group(2) or "").strip()
        if level == 1:
            if not title:
                problems.append(f"line {number}: empty section heading '#'")
            section, block, block_line = title or None, [], 0
        else:
            block, block_line = [line], number
    finish_block()

    if problems:
        raise InvalidDigest(problems)
    intro_text = "\n".join(intro).strip()
    if intro_text:
        if data.get("intro"):
            raise InvalidDigest(
                "intro is given both in the front matter and as text before the first heading; keep one"
            )
        data["intro"] = intro_text
    data["items"] = items
    return data, item_lines


def _read_front_matter(lines: list[str]) -> tuple[dict[str, Any], int]:
    """Return the front matter mapping and the index of the first body line."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or not _FRONT_MATTER_FENCE.match(lines[first]):
        raise InvalidDigest(
            "line 1: a Markdown digest starts with YAML front matter between '---' lines "
            "(title, date, optional slug, language, intro and preheader)"
        )
    end = next((i for i in range(first + 1, len(lines)) if _FRONT_MATTER_FENCE.match(lines[i])), None)
    if end is None:
        raise InvalidDigest(f"line {first + 1}: front matter opened with '---' is never closed by a '---' line")
    data = read_yaml("\n".join(lines[first + 1 : end]), first_line=first + 2)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidDigest(
            f"line {first + 2}: front matter must be 'key: value' lines (title, date, slug, language, intro, "
            "preheader), "
            f"got {type_name(data)}"
        )
    if "items" in data:
        raise InvalidDigest("front matter: items are written as '## Headline' sections, not in the front matter")
    return dict(data), end + 1


def _read_markdown_item(block: list[str], line: int, section: str | None) -> dict[str, Any]:
    heading = _HEADING.match(block[0])
    headline = (heading.group(2) or "").strip() if heading else ""
    item: dict[str, Any] = {"headline": headline}
    if section is not None:
        item["section"] = section
    label = f'item at line {line} (headline "{headline}")' if headline else f"item at line {line}"
    index = 1
    seen: set[str] = set()
    while index < len(block) and block[index].strip():
        number = line + index
        match = _METADATA_LINE.match(block[index].strip())
        key = _METADATA_KEYS.get(match.group(1).lower()) if match else None
        if match is None or key is None:
            raise InvalidDigest(
                f"{label}: line {number}: expected 'Key: value' metadata (Source, URL, Date, Section, Image, "
                f"Image-Alt) right under the headline, got {block[index].strip()!r}; "
                "leave a blank line before the summary"
            )
        for field, value in _metadata_fields(key, match.group(2).strip()):
            if field in seen:
                raise InvalidDigest(f"{label}: line {number}: {field} is given twice")
            seen.add(field)
            item[field] = value
        index += 1
    item["summary"] = "\n".join(block[index:]).strip()
    return item


def _metadata_fields(key: str, value: str) -> list[tuple[str, str]]:
    """A value in double quotes is a JSON string taken literally (how `write_markdown` writes a source such as
    `2025-04-21` or `a · b`, which the shorthand would split); anything else is read as written."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        try:
            literal = json.loads(value)
        except json.JSONDecodeError:
            literal = None
        if isinstance(literal, str):
            return [(key, literal)]
    return _expand_metadata(key, value)


def _expand_metadata(key: str, value: str) -> list[tuple[str, str]]:
    """Split the shorthand lines `Source: name · date · url` and `Image: url | alt` into fields."""
    if key == "image":
        url, _, alt = value.partition(" | ")
        return [("image", url.strip())] + ([("image_alt", alt.strip())] if alt.strip() else [])
    if key != "source":
        return [(key, value)]
    fields: list[tuple[str, str]] = []
    names: list[str] = []
    for part in _PART_SEPARATOR.split(value):
        if _ISO_DATE.match(part):
            fields.append(("date", part))
        elif _URL_LIKE.match(part):
            fields.append(("url", part))
        elif part:
            names.append(part)
    return [("source", " · ".join(names)), *fields]


def type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", type(None): "nothing", bool: "true/false"}
    return names.get(type(value), type(value).__name__)


# --- writing -------------------------------------------------------------------------------------------


class Unrepresentable(Invalid):
    """A digest whose text the Markdown form cannot hold as it is (edit it as YAML/JSON or in the form)."""


_ITEM_KEYS = (("url", "URL"), ("date", "Date"), ("image", "Image"), ("image_alt", "Image-Alt"))


def write_markdown(data: Mapping[str, Any]) -> str:
    """Write a validated digest's data (`Digest.model_dump(mode="json")`) as Markdown with front matter.

    Reading the result gives the same digest. Raises `Unrepresentable` when a summary holds a line the
    format reads as a heading (`# ` or `## ` outside a code block) or an unclosed code fence.
    """
    front: dict[str, Any] = {"title": data["title"], "date": data["date"]}
    for key in ("slug", "language", "preheader"):
        if data.get(key):
            front[key] = data[key]
    intro = data.get("intro")
    if intro and not _fits_body(intro):
        front["intro"] = intro  # YAML holds any text; the body cannot hold a heading-like line
    out = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=1000).rstrip("\n"), "---", ""]
    if intro and "intro" not in front:
        out += [intro, ""]
    current: str | None = None  # the section the reader is in: the last `# Name` written
    for number, item in enumerate(data["items"], start=1):
        wanted = item.get("section")
        if wanted is not None and wanted != current and _heading_text(f"# {wanted}") == wanted:
            out += [f"# {wanted}", ""]
            current = wanted
        out += _write_item(item, number, current)
    return "\n".join(out).rstrip("\n") + "\n"


def _write_item(item: Mapping[str, Any], number: int, section: str | None) -> list[str]:
    headline = item["headline"]
    line = f"## {headline}" if _heading_text(f"## {headline}") == headline else f"## {headline} ##"
    lines = [line, f"Source: {_metadata_value('source', item['source'])}"]
    lines += [f"{label}: {_metadata_value(key, item[key])}" for key, label in _ITEM_KEYS if item.get(key)]
    if item.get("section") != section:
        lines.append(f"Section: {_metadata_value('section', item.get('section') or '')}")
    summary = item.get("summary") or ""
    if summary and not _fits_body(summary):
        raise Unrepresentable(
            f"item {number} (headline {headline!r}): its summary has a line the Markdown form would read as a "
            "heading ('# ' or '## '), an unclosed code fence or a carriage return; edit it in the form instead"
        )
    return [*lines, "", *([summary, ""] if summary else [])]


def _metadata_value(key: str, value: str) -> str:
    if value and _metadata_fields(key, value) == [(key, value)]:
        return value
    return json.dumps(value, ensure_ascii=False)


def _heading_text(line: str) -> str | None:
    match = _HEADING.match(line)
    return (match.group(2) or "").strip() if match else None


def _fits_body(text: str) -> bool:
    """Whether text reads back as itself in the body: no heading-like line outside a fence, fences closed."""
    if "\r" in text:
        return False
    in_fence = False
    for line in text.split("\n"):
        if _CODE_FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and _HEADING.match(line):
            return False
    return not in_fence
