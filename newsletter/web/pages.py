"""Public pages for people: the Jinja2 environment over templates/web/, the headers every page carries, and
what every public handler shares — the publication a page shows, the 404 page, the form body, the client."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import links, rendering
from newsletter.config import Settings
from newsletter.models import MailingList, Visibility
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


class Pages:
    def __init__(self) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(WEB_TEMPLATES),
            autoescape=select_autoescape(["html", "xml"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.globals["stylesheet"] = f"{links.STYLESHEET}?v={self.stylesheet_version}"

    @cached_property
    def stylesheet(self) -> bytes:
        return (WEB_TEMPLATES / "style.css").read_bytes()

    @cached_property
    def stylesheet_version(self) -> str:
        return hashlib.sha256(self.stylesheet).hexdigest()[:10]

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.environment.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

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


def message(request: Request, title: str, *paragraphs: str, status_code: int = 200, **context: Any) -> Response:
    """The page that says one thing: done, expired, try later, not found (`templates/web/message.html`)."""
    return pages(request).render(
        "message.html", status_code=status_code, title=title, paragraphs=list(paragraphs), **context
    )


def list_context(mailing_list: MailingList) -> dict[str, Any]:
    theme = rendering.theme_for(mailing_list)
    address = ", ".join(line.strip() for line in theme.postal_address.splitlines() if line.strip())
    return {"publication": theme.publication_name, "postal_address": address}


_SITE_TTL = 60.0


def site_context(request: Request, session: Session) -> dict[str, Any]:
    """The publication shown on pages that belong to no list: the first public list's (cached a minute)."""
    cached = getattr(request.app.state, "site_context", None)
    if cached is not None and time.monotonic() - cached[0] < _SITE_TTL:
        return dict(cached[1])
    first = session.scalar(
        select(MailingList).where(MailingList.visibility == Visibility.public).order_by(MailingList.id).limit(1)
    )
    context = list_context(first) if first is not None else {"publication": "Newsletter", "postal_address": ""}
    request.app.state.site_context = (time.monotonic(), context)
    return dict(context)


def not_found(request: Request, session: Session, what: str = "This link is not valid") -> Response:
    return message(
        request,
        what,
        "It may have been copied incompletely from the email, or it belongs to something that no longer exists. "
        "Nothing was changed.",
        status_code=404,
        link={"href": links.ARCHIVE, "label": "Go to the archive"},
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


async def read_body(request: Request) -> bytes:
    """The request body, or nothing at all when it is larger than any form of ours (`MAX_BODY`)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return b""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return b""
    return body


def form_fields(body: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return {}
