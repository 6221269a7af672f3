"""Public pages for people: the Jinja2 environment over templates/web/, the headers every page carries, and
what every public handler shares — the publication a page shows, the 404 page, the form body, the client."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import time
from functools import cache, cached_property
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import colors, i18n, links, rendering
from newsletter.config import Settings
from newsletter.errors import Invalid
from newsletter.models import MailingList, Subscriber, Visibility
from newsletter.rendering import TEMPLATES_DIR

WEB_TEMPLATES = TEMPLATES_DIR / "web"

# Pages carry tokens in their URLs: no Referer may leak them to the sites an archive page links to, no
# other site may frame the one-button unsubscribe page (clickjacking), and no script runs anywhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# The plain-text answers of the endpoints mail clients and providers call (click, one-click unsubscribe).
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
MAX_BODY = 16_384  # a subscribe form or a one-click body is a few dozen bytes
MAX_FIELDS = 256  # a reader of every list of a large publication, each with its sections, stays below


class Pages:
    def __init__(self) -> None:
        self.environment = self.environment_for(i18n.DEFAULT)

    @cache  # noqa: B019 - one Pages per app, one environment per language, kept for the app's life
    def environment_for(self, language: str) -> Environment:
        """The page templates with one language's catalog installed."""
        environment = Environment(
            loader=FileSystemLoader(WEB_TEMPLATES),
            autoescape=select_autoescape(["html", "xml"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        environment.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
        environment.globals["stylesheet"] = f"{links.STYLESHEET}?v={self.stylesheet_version}"
        environment.globals["format_date"] = lambda date: i18n.format_date(date, language)
        environment.globals["format_number"] = lambda number: i18n.format_number(number, language)
        environment.globals["strong"] = lambda text: Markup("<strong>%s</strong>") % text
        return environment

    @cached_property
    def stylesheet(self) -> bytes:
        return (WEB_TEMPLATES / "style.css").read_bytes()

    @cached_property
    def stylesheet_version(self) -> str:
        return hashlib.sha256(self.stylesheet).hexdigest()[:10]

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A page in `context["lang"]`; the list's theme (`theme_css`) is allowed by its hash, not inline."""
        language = context.setdefault("lang", i18n.DEFAULT)
        context.setdefault("dir", i18n.text_direction(language))
        context.setdefault("theme_css", "")
        html = self.environment_for(language).get_template(template).render(**context)
        headers = SECURITY_HEADERS
        if context["theme_css"]:
            digest = base64.b64encode(hashlib.sha256(context["theme_css"].encode()).digest()).decode()
            policy = SECURITY_HEADERS["Content-Security-Policy"].replace(
                "style-src 'self'", f"style-src 'self' 'sha256-{digest}'"
            )
            headers = {**SECURITY_HEADERS, "Content-Security-Policy": policy}
        return HTMLResponse(html, status_code=status_code, headers=headers)

    def stylesheet_response(self) -> Response:
        # Versioned URL, so it can be cached for a year.
        return Response(
            self.stylesheet,
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
        )


def pages(request: Request) -> Pages:
    pages_: Pages = request.app.state.pages
    return pages_


def message(
    request: Request,
    title: str,
    *paragraphs: str,
    status_code: int = 200,
    values: dict[str, Any] | None = None,
    **context: Any,
) -> Response:
    """The page that says one thing: done, expired, try later, not found (`templates/web/message.html`).

    `title`, `paragraphs` and a `link`'s label are English msgids (marked with `i18n.N_`), translated here
    into the page's language and filled in with `values`.
    """
    gettext = i18n.translations(context.get("lang", i18n.DEFAULT)).gettext
    fill = values or {}
    link = context.pop("link", None)
    if link is not None:
        link = {**link, "label": gettext(link["label"]) % fill}
    return pages(request).render(
        "message.html",
        status_code=status_code,
        title=gettext(title) % fill,
        paragraphs=[gettext(paragraph) % fill for paragraph in paragraphs],
        link=link,
        **context,
    )


def theme_css(accent: str) -> str:
    """The list's accent as the pages' custom properties, adjusted for contrast on both themes."""
    palette = colors.palette(accent)
    return (
        f":root{{--accent:{palette.light};--accent-fg:{palette.button_text}}}"
        f"@media (prefers-color-scheme: dark){{:root{{--accent:{palette.dark};--accent-fg:#0d1117}}}}"
    )


def list_context(
    mailing_list: MailingList, request: Request | None = None, subscriber: Subscriber | None = None
) -> dict[str, Any]:
    """A list's pages: its name, logo, accent and address, in the subscriber's, list's or browser's language."""
    theme = rendering.theme_for(mailing_list)
    address = ", ".join(line.strip() for line in theme.postal_address.splitlines() if line.strip())
    accept = request.headers.get("accept-language") if request is not None else None
    language = i18n.page_language(subscriber.language if subscriber else None, mailing_list.language, accept)
    return {
        "publication": theme.publication_name,
        "postal_address": address,
        "logo_url": theme.logo_url,
        "theme_css": theme_css(theme.accent_color),
        "home_list": mailing_list.slug if mailing_list.visibility == Visibility.public else None,
        "lang": language,
    }


_SITE_TTL = 60.0


def site_context(request: Request, session: Session) -> dict[str, Any]:
    """The publication shown on pages that belong to no list: the first public list's (cached a minute)."""
    cached = getattr(request.app.state, "site_context", None)
    accept = request.headers.get("accept-language")
    if cached is not None and time.monotonic() - cached[0] < _SITE_TTL:
        return {**cached[1], "lang": i18n.page_language(None, cached[2], accept)}
    first = session.scalar(
        select(MailingList).where(MailingList.visibility == Visibility.public).order_by(MailingList.id).limit(1)
    )
    context: dict[str, Any] = {"publication": "Newsletter", "postal_address": ""}
    if first is not None:
        context = list_context(first)
        context.pop("lang")
        context.pop("home_list")  # pages of no list belong to the whole site
    language = first.language if first is not None else None
    request.app.state.site_context = (time.monotonic(), context, language)
    return {**context, "lang": i18n.page_language(None, language, accept)}


def not_found(request: Request, session: Session, what: str = i18n.N_("This link is not valid")) -> Response:
    return message(
        request,
        what,
        i18n.N_(
            "It may have been copied incompletely from the email, or it belongs to something that no longer "
            "exists. Nothing was changed."
        ),
        status_code=404,
        link={"href": links.ARCHIVE, "label": i18n.N_("Go to the archive")},
        **site_context(request, session),
    )


def masked(email: str) -> str:
    """Enough of the address for its owner to recognise it, little for whoever got the link forwarded."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 3), 8)}@{domain}"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(request: Request) -> str | None:
    """The client's address: the peer's, or, when the peer is one of TRUSTED_PROXIES, the nearest address
    in X-Forwarded-For that is not a trusted proxy. Anyone can send the header: believed from anyone, it
    would let a flood pick a fresh address per request past the subscribe limit, and forge consent IPs."""
    peer = request.client.host if request.client else None
    proxies: tuple[IPNetwork, ...] = request.app.state.trusted_proxies
    if peer is None or not proxies or not _within(peer, proxies):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed(hops):  # each proxy appends the address it got the request from
        if not _within(hop, proxies):
            return hop if _parses(hop) else peer
    return peer


def trusted_networks(settings: Settings) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(network, strict=False) for network in settings.trusted_proxies)


def _within(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _parses(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


class UnreadableForm(Invalid):
    """A body that no form of ours sends: larger than `MAX_BODY`, more than `MAX_FIELDS` fields, not UTF-8."""

    field = "form"


def unreadable_form(
    english: str = "the form's body is too large, has too many fields or is not UTF-8",
) -> UnreadableForm:
    return UnreadableForm.translatable(
        i18n.N_("the form sent more than it holds; please reload the page and try again"), english=english
    )


async def read_body(request: Request) -> bytes:
    """The request body; UnreadableForm when it is larger than any form of ours (`MAX_BODY`)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise unreadable_form()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise unreadable_form()
    return body


def form_fields(body: bytes) -> dict[str, list[str]]:
    """A form-encoded body's fields; UnreadableForm for more than `MAX_FIELDS` of them or bytes not UTF-8."""
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise unreadable_form() from None
