"""Markdown as the emails carry it: an editor's Markdown (no raw HTML, no images) parsed once, written as
HTML with every http(s) link passed through a recorder (the tracked-link rewriting), and as the text part's
plain text with each link's destination shown."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

TEXT_WIDTH = 76
_MARKDOWN_SCHEMES = ("http", "https", "mailto")


def link_host(url: str) -> str:
    """A link's host as the text part shows it beside a tracked link (without "www.")."""
    found = urlsplit(url).hostname or ""
    return found.removeprefix("www.")


class LinkRecorder:
    """Calls `link_href` once per distinct http(s) URL and remembers them in order."""

    def __init__(self, link_href: Callable[[str], str] | None) -> None:
        self._link_href = link_href or (lambda url: url)
        self._hrefs: dict[str, str] = {}

    def __call__(self, url: str) -> str:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return url
        if url not in self._hrefs:
            self._hrefs[url] = self._link_href(url)
        return self._hrefs[url]

    def urls(self) -> tuple[str, ...]:
        return tuple(self._hrefs)


# Raw HTML off: an editor's summary must not inject markup. Images off: item images have their own field.
_markdown = MarkdownIt("commonmark", {"html": False}).disable("image")


def parse_markdown(text: str, links: LinkRecorder) -> list[Token]:
    """Parse Markdown and rewrite its links: http(s) through `links`, mailto kept, anything else unlinked."""
    tokens = _markdown.parse(text)
    for token in tokens:
        if token.children:
            token.children = _rewrite_links(token.children, links)
    return tokens


def render_markdown_html(tokens: Sequence[Token]) -> Markup:
    # Safe to mark: raw HTML is disabled, so markdown-it escapes every character of the editor's text.
    return Markup(_markdown.renderer.render(tokens, _markdown.options, {}))  # noqa: S704


def _rewrite_links(children: list[Token], links: LinkRecorder) -> list[Token]:
    kept: list[Token] = []
    dropping = False  # CommonMark links never nest, so the next link_close closes a dropped link_open
    for token in children:
        if token.type == "link_open":
            url = str(token.attrGet("href") or "")
            if urlsplit(url).scheme.lower() not in _MARKDOWN_SCHEMES:
                dropping = True
                continue
            token.meta["url"] = url
            token.attrSet("href", links(url))
        elif token.type == "link_close" and dropping:
            dropping = False
            continue
        kept.append(token)
    return kept


def markdown_to_text(tokens: Sequence[Token]) -> str:
    """Render parsed Markdown as wrapped plain text: paragraphs, bullets, and links as `text (url)`."""
    blocks: list[tuple[str, bool]] = []  # (wrapped text, belongs to a tight list)
    indents: list[str] = []
    lists: list[str] = []
    marker: str | None = None
    tight = False
    for token in tokens:
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            lists.append(token.markup)
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            marker = f"{token.info}{token.markup} " if token.info else "- "
            indents.append(" " * len(marker))
        elif kind == "blockquote_open":
            indents.append("> ")
        elif kind in ("list_item_close", "blockquote_close"):
            indents.pop()
        elif kind == "paragraph_open":
            tight = token.hidden
        elif kind == "inline":
            rest = "".join(indents)
            first = "".join(indents[:-1]) + marker if marker else rest
            blocks.append((wrap_lines(_inline_to_text(token.children or []), first, rest), tight))
            marker, tight = None, False
        elif kind in ("fence", "code_block"):
            code = textwrap.indent(token.content.rstrip("\n"), "".join(indents) + "    ")
            blocks.append((code, False))
        elif kind == "hr":
            blocks.append(("".join(indents) + "-" * 20, False))
    text = ""
    for index, (block, in_tight_list) in enumerate(blocks):
        if index:
            text += "\n" if in_tight_list and blocks[index - 1][1] else "\n\n"
        text += block
    return text


def _inline_to_text(children: Sequence[Token]) -> str:
    parts: list[str] = []
    link_start: int | None = None
    link: Token | None = None
    for token in children:
        if token.type in ("text", "code_inline"):
            parts.append(token.content)
        elif token.type == "softbreak":
            parts.append(" ")
        elif token.type == "hardbreak":
            parts.append("\n")
        elif token.type == "link_open":
            link_start, link = len(parts), token
        elif token.type == "link_close" and link is not None:
            label = "".join(parts[link_start:])
            href = str(link.attrGet("href") or "")
            shown = href.removeprefix("mailto:") if href.startswith("mailto:") else href
            original = link.meta.get("url")
            host = link_host(original) if original and original != href and not href.startswith("mailto:") else None
            if label.strip() not in (href, shown, original):
                parts.append(f" ({shown})")
            if host:
                parts.append(f" [{host}]")
            link = None
    return "".join(parts)


def wrap_lines(text: str, first_prefix: str, rest_prefix: str) -> str:
    """Wrap each hard line at TEXT_WIDTH without ever breaking a URL or a hyphenated word."""
    wrapped: list[str] = []
    for number, line in enumerate(text.split("\n")):
        wrapped.append(
            textwrap.fill(
                line,
                width=TEXT_WIDTH,
                initial_indent=first_prefix if number == 0 else rest_prefix,
                subsequent_indent=rest_prefix,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or (first_prefix if number == 0 else rest_prefix).rstrip()
        )
    return "\n".join(wrapped)
