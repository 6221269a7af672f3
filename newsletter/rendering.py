"""Render a digest once per campaign into subject, HTML (Jinja2 -> MJML -> HTML) and text with placeholders.

Per-recipient work never runs Jinja2 or MJML: the HTML and text returned by `render_digest` contain the
literal placeholders below, which the message composer replaces for each recipient with plain string
substitution (HTML-escaping the values it puts into the HTML part).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markdown_it.token import Token
from markupsafe import Markup
from mjml import mjml2html

from newsletter import colors, i18n, links, sandbox
from newsletter.digests import Digest, DigestItem
from newsletter.markdown_text import LinkRecorder as _LinkRecorder
from newsletter.markdown_text import link_host as _host
from newsletter.markdown_text import markdown_to_text as _markdown_to_text
from newsletter.markdown_text import parse_markdown as _parse_markdown
from newsletter.markdown_text import render_markdown_html as _render_markdown_html
from newsletter.markdown_text import wrap_lines as _wrap_lines
from newsletter.models import MailingList

# MRML links Google Fonts' stylesheet for any font it knows by name (Roboto is in our stack): every reader's
# mail client would then fetch it from Google when the email is opened. The font stack falls back locally.
NO_WEB_FONTS: dict[str, str] = {}

__all__ = [
    "NAME",
    "PLACEHOLDERS",
    "PREFERENCES_URL",
    "TEMPLATES_DIR",
    "TRACK",
    "UNSUBSCRIBE_URL",
    "ListLook",
    "RenderedEmail",
    "TemplateRejected",
    "Theme",
    "digest_page_context",
    "format_date",
    "render_confirmation",
    "render_digest",
    "render_for_list",
    "render_step",
    "theme_for",
]

# Placeholders substituted per recipient by the composer. None contains a character that HTML escaping,
# URL handling or MJML would change, so they survive rendering byte for byte.
NAME = "%%NAME%%"
UNSUBSCRIBE_URL = "%%UNSUBSCRIBE_URL%%"
PREFERENCES_URL = "%%PREFERENCES_URL%%"
TRACK = "%%TRACK%%"
PLACEHOLDERS = (NAME, UNSUBSCRIBE_URL, PREFERENCES_URL, TRACK)
NAME_FALLBACK = i18n.N_("reader")  # greets a subscriber without a name (translated by the composer's caller)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_ACCENT_COLOR = "#1a5fb4"  # 6.4:1 against white, readable as link colour in both themes

_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")
PREHEADER_CHARS = 140  # what inboxes show of the snippet, at most

TemplateRejected = sandbox.TemplateRejected


@dataclass(frozen=True)
class Theme:
    """A publication's look: its name and logo in the header, accent colour, and footer postal address."""

    publication_name: str
    logo_url: str | None = None
    accent_color: str = DEFAULT_ACCENT_COLOR
    postal_address: str = ""

    def __post_init__(self) -> None:
        if not self.publication_name.strip():
            raise ValueError("publication_name must not be empty")
        if not _COLOR.match(self.accent_color):
            raise ValueError(f"accent_color must be a hex colour like #1a5fb4 or #15b, got {self.accent_color!r}")
        if self.logo_url is not None and urlsplit(self.logo_url).scheme not in ("http", "https"):
            raise ValueError(f"logo_url must be an absolute http(s) URL, got {self.logo_url!r}")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Theme:
        """Build a theme from a list's JSON settings, ignoring keys that are not theme fields."""
        if not settings.get("publication_name"):
            raise ValueError("theme settings need a non-empty 'publication_name'")
        return cls(
            publication_name=str(settings["publication_name"]),
            logo_url=settings.get("logo_url") or None,
            accent_color=str(settings.get("accent_color") or DEFAULT_ACCENT_COLOR),
            postal_address=str(settings.get("postal_address") or ""),
        )


@dataclass(frozen=True)
class RenderedEmail:
    """A campaign's pre-rendered email; `html` and `text` still hold the per-recipient placeholders."""

    subject: str
    html: str
    text: str
    links: tuple[str, ...]


def format_date(date: dt.date, language: str = i18n.DEFAULT) -> str:
    """Format a date as the language writes it (`21 April 2025`), independent of the process locale."""
    return i18n.format_date(date, language)


def render_digest(
    digest: Digest,
    *,
    theme: Theme,
    list_name: str,
    list_description: str = "",
    link_href: Callable[[str], str] | None = None,
    open_pixel_url: str | None = None,
    greeting: bool = True,
    template_source: str | None = None,
    language: str = i18n.DEFAULT,
    archive_url: str | None = None,
    subscribe_url: str | None = None,
) -> RenderedEmail:
    """Render a digest's subject, HTML and text parts once for a whole campaign.

    The fixed text is in `language` (translated here, once per campaign: never per recipient);
    `archive_url` and `subscribe_url` give the "view in your browser" and "subscribe" links.

    `link_href(url)` is called once per distinct http(s) URL (item links and links inside summaries and the
    intro) and returns the href to emit, e.g. a click-tracking URL containing `TRACK`; the URLs it was
    called with are returned as `links`, in order of first appearance.

    `template_source` is an editor's MJML body template used instead of `templates/email/digest/body.mjml`;
    it renders in the sandbox (see `sandbox.py`) with `template_context()`, and a template that fails
    raises `TemplateRejected`. The subject and text part always come from the bundled templates.
    """
    links = _LinkRecorder(link_href)
    context = _build_context(
        digest,
        theme=theme,
        list_name=list_name,
        list_description=list_description,
        links=links,
        open_pixel_url=open_pixel_url,
        greeting=greeting,
        language=language,
    )
    context.update(archive_url=archive_url, subscribe_url=subscribe_url)
    environment = _environment(language)
    subject = " ".join(environment.get_template("email/digest/subject.txt").render(context).split())
    if template_source is None:
        mjml_source = environment.get_template("email/digest/body.mjml").render(context)
    else:
        mjml_source = sandbox.render(template_source, template_context(context))
    try:
        html = mjml2html(mjml_source, disable_comments=True, fonts=NO_WEB_FONTS)
    except Exception as exc:  # mjml-python raises plain exceptions with MRML's message
        raise TemplateRejected(f"the template does not produce valid MJML: {exc}") from None
    text = environment.get_template("email/digest/body.txt").render(context)
    return RenderedEmail(subject=subject, html=html, text=_tidy_text(text), links=links.urls())


def theme_for(mailing_list: MailingList) -> Theme:
    """The list's look: its theme settings over defaults taken from the list itself."""
    values: dict[str, object] = {"publication_name": mailing_list.name, "postal_address": mailing_list.postal_address}
    values.update(mailing_list.theme or {})
    try:
        return Theme.from_dict(values)
    except ValueError:  # lists.check_theme refuses bad themes; one stored earlier must not stop an email or page
        return Theme(publication_name=mailing_list.name, postal_address=mailing_list.postal_address)


@dataclass(frozen=True)
class ListLook:
    """What rendering needs of a mailing list, copied out of the ORM row for work that outlives its session."""

    theme: Theme
    name: str
    description: str
    tracking: bool
    language: str | None = None
    slug: str | None = None  # set for a public list: its archive and subscribe page exist
    public: bool = False

    @classmethod
    def of(cls, mailing_list: MailingList) -> ListLook:
        return cls(
            theme_for(mailing_list),
            mailing_list.name,
            mailing_list.description,
            mailing_list.tracking,
            mailing_list.language,
            mailing_list.slug,
            mailing_list.visibility == "public",
        )


def render_for_list(
    digest: Digest,
    mailing_list: MailingList | ListLook,
    *,
    base_url: str | None = None,
    positions: Mapping[str, int] | None = None,
    template_source: str | None = None,
    site_url: str | None = None,
) -> RenderedEmail:
    """Render a digest as the list's subscribers get it; tracked when `base_url` is given and the list tracks.

    In the digest's language, else the list's. A public list's copy links to the issue's archive page and
    to the subscribe page (for forwarded copies), on `site_url` (default: `base_url`).

    A tracked link is `links.click_url` for the link's position in the campaign: `positions` when the
    campaign registered its links already (a link not among them stays untracked), else numbered in order
    of first appearance, which is the order of the returned `links`: register `enumerate(links, 1)`.
    """
    look = mailing_list if isinstance(mailing_list, ListLook) else ListLook.of(mailing_list)
    link_href = open_pixel_url = None
    if base_url is not None and look.tracking:
        tracked_at = base_url  # bound for the closures below (mypy keeps `base_url` optional in them)
        open_pixel_url = links.open_url(tracked_at, TRACK)
        if positions is None:
            numbered: dict[str, int] = {}

            def link_href(url: str) -> str:
                return links.click_url(tracked_at, TRACK, numbered.setdefault(url, len(numbered) + 1))

        else:
            known = positions

            def link_href(url: str) -> str:
                return links.click_url(tracked_at, TRACK, known[url]) if url in known else url

    site = site_url or base_url
    public = site is not None and look.public and look.slug is not None and digest.slug is not None
    return render_digest(
        digest,
        theme=look.theme,
        list_name=look.name,
        list_description=look.description,
        link_href=link_href,
        open_pixel_url=open_pixel_url,
        template_source=template_source,
        language=i18n.email_language(digest.language, look.language),
        archive_url=links.archive_url(site, digest.slug) if public and site and digest.slug else None,
        subscribe_url=f"{site}{links.SUBSCRIBE}{look.slug}" if public and site else None,
    )


# --- Template context ----------------------------------------------------------------------------------


def _build_context(
    digest: Digest,
    *,
    theme: Theme,
    list_name: str,
    list_description: str,
    links: _LinkRecorder,
    open_pixel_url: str | None,
    greeting: bool,
    language: str,
) -> dict[str, Any]:
    intro_tokens, sections = _content(digest, links, language)
    intro_text = _markdown_to_text(intro_tokens)
    return {
        "digest": digest,
        "lang": language,
        "dir": i18n.text_direction(language),
        "colors": colors.palette(theme.accent_color),
        "date_label": format_date(digest.date, language),
        "preheader": digest.preheader or preheader(intro_text, sections),
        "intro_html": _render_markdown_html(intro_tokens),
        "intro_text": intro_text,
        "sections": sections,
        "show_toc": len(sections) > 1 or sections[0]["name"] is not None,
        "theme": theme,
        "postal_address": ", ".join(line.strip() for line in theme.postal_address.splitlines() if line.strip()),
        "list_name": list_name,
        "list_description": list_description,
        "greeting": greeting,
        "name": NAME,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "preferences_url": PREFERENCES_URL,
        "open_pixel_url": open_pixel_url,
    }


def preheader(intro_text: str, sections: Sequence[Mapping[str, Any]]) -> str:
    """The inbox snippet of a digest without its own `preheader`: the intro's first words, else the first
    headlines, cut at a word near 140 chars."""
    text = " ".join(intro_text.split()) or " · ".join(
        item["headline"] for section in sections for item in section["items"]
    )
    return text if len(text) <= PREHEADER_CHARS else text[:PREHEADER_CHARS].rsplit(" ", 1)[0] + "…"


def _build_item(item: DigestItem, links: _LinkRecorder, language: str) -> dict[str, Any]:
    href = links(item.url)
    tokens = _parse_markdown(item.summary, links)
    byline = item.source if item.date is None else f"{item.source} · {format_date(item.date, language)}"
    return {
        "headline": item.headline,
        "source": item.source,
        "byline": byline,
        "href": href,
        # A tracked link says nothing of where it leads: the text part names the destination's host.
        "shown_host": _host(item.url) if href != item.url else None,
        "summary_html": _render_markdown_html(tokens),
        "summary_text": _markdown_to_text(tokens),
        "image": item.image,
        # Screen readers need something for a linked image; the headline describes where it leads.
        "image_alt": item.image_alt or item.headline,
    }


def template_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context of the bundled body template as plain JSON data, for editor templates in the sandbox.

    Same names as `body.mjml` sees, so an editor can start from a copy of it. HTML that the renderer built
    (and escaped) sits under keys ending in `_html`; the sandbox marks exactly those as safe.
    """
    digest: Digest = context["digest"]
    theme: Theme = context["theme"]
    plain = {
        key: str(value) if isinstance(value, Markup) else value
        for key, value in context.items()
        if key not in ("digest", "theme", "sections", "colors")
    }
    plain["digest"] = digest.model_dump(mode="json")
    plain["theme"] = asdict(theme)
    plain["colors"] = asdict(context["colors"])
    plain["sections"] = [
        {
            "name": section["name"],
            "items": [
                {key: str(value) if isinstance(value, Markup) else value for key, value in item.items()}
                for item in section["items"]
            ],
        }
        for section in context["sections"]
    ]
    return plain


# --- Templates -----------------------------------------------------------------------------------------


def _wrap_filter(text: str, prefix: str = "") -> str:
    return _wrap_lines(str(text), prefix, prefix)


def _tidy_text(text: str) -> str:
    """Drop trailing spaces and runs of blank lines that template conditionals leave behind."""
    # "-- " keeps its trailing space: it is the signature separator mail clients recognise.
    lines = [line if line == "-- " else line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def _strong(text: str) -> Markup:
    return Markup("<strong>%s</strong>") % text


@cache
def _environment(language: str) -> Environment:
    """The email templates with one language's catalog installed (one environment per language, built once)."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "mjml"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    environment.filters["wrap"] = _wrap_filter
    environment.globals["strong"] = _strong
    return environment


# --- Confirmation email and web pages --------------------------------------------------------------------


def render_confirmation(
    *,
    theme: Theme,
    list_name: str,
    list_description: str = "",
    confirm_url: str,
    name: str = "",
    language: str = i18n.DEFAULT,
) -> RenderedEmail:
    """Render the double opt-in email (`templates/email/confirm/`) for one person; it is sent rarely."""
    context = {
        "lang": language,
        "dir": i18n.text_direction(language),
        "colors": colors.palette(theme.accent_color),
        "theme": theme,
        "list_name": list_name,
        "list_description": list_description,
        "confirm_url": confirm_url,
        "name": name,
        "postal_address": ", ".join(line.strip() for line in theme.postal_address.splitlines() if line.strip()),
    }
    environment = _environment(language)
    subject = " ".join(environment.get_template("email/confirm/subject.txt").render(context).split())
    html = mjml2html(
        environment.get_template("email/confirm/body.mjml").render(context), disable_comments=True, fonts=NO_WEB_FONTS
    )
    text = environment.get_template("email/confirm/body.txt").render(context)
    return RenderedEmail(subject=subject, html=html, text=_tidy_text(text), links=(confirm_url,))


def _content(digest: Digest, links: _LinkRecorder, language: str) -> tuple[list[Token], list[dict[str, Any]]]:
    """The intro's Markdown tokens and the sections with their built items."""
    # Links are resolved here, in document order, so `links` is deterministic whatever the templates do.
    intro_tokens = _parse_markdown(digest.intro or "", links)
    sections = [
        {"name": name, "items": [_build_item(item, links, language) for item in items]}
        for name, items in digest.sections()
    ]
    return intro_tokens, sections


def digest_page_context(digest: Digest, language: str = i18n.DEFAULT) -> dict[str, Any]:
    """The digest's content for a web page (the archive): what the email shows, without personal links."""
    intro_tokens, sections = _content(digest, _LinkRecorder(None), language)
    return {
        "digest": digest,
        "date_label": format_date(digest.date, language),
        "intro_text": _markdown_to_text(intro_tokens),
        "intro_html": _render_markdown_html(intro_tokens),
        "sections": sections,
        "show_toc": len(sections) > 1 or sections[0]["name"] is not None,
    }


# --- Sequence steps (welcome and follow-up emails) -------------------------------------------------------


def render_step(
    subject: str,
    body: str,
    mailing_list: MailingList | ListLook,
    *,
    base_url: str | None = None,
    positions: Mapping[str, int] | None = None,
    template_source: str | None = None,
) -> RenderedEmail:
    """Render a sequence step (`templates/email/sequence/`, or an editor's MJML in the sandbox) once for
    all its recipients: its Markdown body, the list's theme and footer, tracked links as `render_for_list`
    does them (`positions`: the step's registered links; a URL not among them is numbered after them)."""
    look = mailing_list if isinstance(mailing_list, ListLook) else ListLook.of(mailing_list)
    open_pixel_url = None
    known = dict(positions or {})
    link_href: Callable[[str], str] | None = None
    if base_url is not None and look.tracking:
        tracked_at = base_url
        open_pixel_url = links.open_url(tracked_at, TRACK)

        def link_href(url: str) -> str:
            return links.click_url(tracked_at, TRACK, known.setdefault(url, max(known.values(), default=0) + 1))

    recorder = _LinkRecorder(link_href)
    tokens = _parse_markdown(body, recorder)
    context: dict[str, Any] = {
        "subject": subject,
        "body_html": _render_markdown_html(tokens),
        "body_text": _markdown_to_text(tokens),
        "theme": look.theme,
        "postal_address": ", ".join(line.strip() for line in look.theme.postal_address.splitlines() if line.strip()),
        "list_name": look.name,
        "list_description": look.description,
        "name": NAME,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "preferences_url": PREFERENCES_URL,
        "open_pixel_url": open_pixel_url,
    }
    environment = _environment(i18n.email_language(None, look.language))  # a step is in its list's language
    if template_source is None:
        mjml_source = environment.get_template("email/sequence/body.mjml").render(context)
    else:
        plain = {key: str(value) if isinstance(value, Markup) else value for key, value in context.items()}
        mjml_source = sandbox.render(template_source, plain | {"theme": asdict(look.theme)})
    try:
        html = mjml2html(mjml_source, disable_comments=True, fonts=NO_WEB_FONTS)
    except Exception as exc:  # mjml-python raises plain exceptions with MRML's message
        raise TemplateRejected(f"the template does not produce valid MJML: {exc}") from None
    text = environment.get_template("email/sequence/body.txt").render(context)
    return RenderedEmail(subject=subject, html=html, text=_tidy_text(text), links=recorder.urls())


def intro_text(intro: str) -> str:
    """An intro's Markdown as plain text (what an archive entry shows of it)."""
    return _markdown_to_text(_parse_markdown(intro, _LinkRecorder(None)))
