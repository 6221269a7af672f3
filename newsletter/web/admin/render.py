"""How an admin page answers: the Jinja2 environment over templates/admin/, the headers every page
carries, flash messages, redirects and the navigation.

A handler returns `render(request, "dashboard.html", title=..., **context)`. Every template sees:
`me` (the `SignedIn` of `auth`, or None on the sign-in page), `csrf_token`, `csrf_field()` (the hidden
input every state-changing form contains), `flashes` (messages a redirect left), `nav` (the navigation this
user may see), `static(path)` (the hashed URL of a file in newsletter/web/static/) and `path` (the URL
path, to mark the current navigation entry).

Headers: `ADMIN_CSP` allows only the app's own origin (scripts and styles from files, no inline script or
style, no framing by anyone), plus no-referrer, nosniff and no-store. A page that needs another policy
passes `csp=content_security_policy(...)` with the directives it changes. Mind an `<iframe srcdoc>`: it
inherits the policy of the page that contains it, so an email preview's inline styles are blocked by
`ADMIN_CSP`. Either give the preview page `csp=content_security_policy(style_src="'self' 'unsafe-inline'",
img_src="'self' https: data:")` (the iframe keeps `sandbox` without allow-scripts, so nothing runs), or,
better, serve the email from its own URL through `html_response(html, csp=EMAIL_PREVIEW_CSP)` and point
`<iframe sandbox src=...>` at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup, escape

from newsletter.config import Settings
from newsletter.rendering import TEMPLATES_DIR
from newsletter.web.assets import Assets

ADMIN_TEMPLATES = TEMPLATES_DIR / "admin"
FLASH_COOKIE = "newsletter_flash"

_DIRECTIVES = {
    "default_src": "'none'",
    "script_src": "'self'",
    "style_src": "'self'",
    "img_src": "'self' data:",
    "font_src": "'self'",
    "connect_src": "'self'",
    "frame_src": "'self'",
    "worker_src": None,
    "form_action": "'self'",
    "frame_ancestors": "'none'",
    "base_uri": "'none'",
}


def content_security_policy(**directives: str | None) -> str:
    """The admin's policy with some directives replaced (`style_src="'self' 'unsafe-inline'"`) or removed
    (None); names are the directives' with `_` for `-`."""
    unknown = set(directives) - set(_DIRECTIVES)
    if unknown:
        raise ValueError(f"unknown CSP directives: {sorted(unknown)}")
    merged = {**_DIRECTIVES, **directives}
    return "; ".join(f"{name.replace('_', '-')} {value}" for name, value in merged.items() if value)


ADMIN_CSP = content_security_policy()
# An email shown on its own (the preview iframe's src): its inline styles and remote images, no script.
EMAIL_PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)


def security_headers(csp: str = ADMIN_CSP) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    if "frame-ancestors 'none'" in csp:
        headers["X-Frame-Options"] = "DENY"
    return headers


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    admin_only: bool = False


# The left navigation, in order; editors see the entries that are not admin_only. A new page family adds
# its entry here: first what editors use, then the admins' pages, the account last (above "Sign out").
NAV: list[NavItem] = [
    NavItem("Dashboard", "/admin"),
    NavItem("Digests", "/admin/digests"),
    NavItem("Campaigns", "/admin/campaigns"),
    NavItem("Segments", "/admin/segments"),
    NavItem("Sequences", "/admin/sequences"),
    NavItem("Lists", "/admin/lists", admin_only=True),
    NavItem("Subscribers", "/admin/subscribers", admin_only=True),
    NavItem("Imports", "/admin/imports", admin_only=True),
    NavItem("Suppressions", "/admin/suppressions", admin_only=True),
    NavItem("Templates", "/admin/templates", admin_only=True),
    NavItem("Bounces", "/admin/bounces", admin_only=True),
    NavItem("Webhooks", "/admin/webhooks", admin_only=True),
    NavItem("Users", "/admin/users", admin_only=True),
    NavItem("Settings", "/admin/settings", admin_only=True),
    NavItem("Audit log", "/admin/audit", admin_only=True),
    NavItem("Account", "/admin/account"),
]


@pass_context
def _csrf_field(context: Context) -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(escape(context["csrf_token"]))


class AdminPages:
    """The templates of the admin UI (app.state.admin_pages)."""

    def __init__(self, assets: Assets, settings: Settings) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(ADMIN_TEMPLATES),
            # compiled once per process; in development an edited template is picked up on the next request
            auto_reload=settings.environment == "development",
            autoescape=select_autoescape(["html", "xml"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.globals["static"] = assets.url
        self.environment.globals["csrf_field"] = _csrf_field
        self.flash_serializer = URLSafeSerializer(settings.secret_key, salt="newsletter.admin.flash")
        self.secure_cookies = settings.base_url.startswith("https://")


def admin_pages(request: Request) -> AdminPages:
    pages: AdminPages = request.app.state.admin_pages
    return pages


def html_response(html: str, *, status_code: int = 200, csp: str = ADMIN_CSP) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers=security_headers(csp))


def render(
    request: Request, template: str, *, status_code: int = 200, csp: str = ADMIN_CSP, **context: Any
) -> HTMLResponse:
    """Render `template` (relative to templates/admin/) with the shared context and the admin's headers;
    shows (and clears) the flash messages a redirect left."""
    pages = admin_pages(request)
    me = getattr(request.state, "admin", None)
    flashes = _read_flashes(pages, request)
    shared: dict[str, Any] = {
        "me": me,
        "csrf_token": me.csrf_token if me is not None else context.pop("csrf_token", ""),
        "flashes": flashes,
        "nav": [item for item in NAV if me is not None and (me.is_admin or not item.admin_only)],
        "path": request.url.path,
    }
    html = pages.environment.get_template(template).render(**shared, **context)
    response = html_response(html, status_code=status_code, csp=csp)
    if flashes:
        response.delete_cookie(FLASH_COOKIE, path="/admin", secure=pages.secure_cookies, httponly=True)
    return response


def redirect(request: Request, url: str, *, flash: str | None = None, kind: str = "success") -> Response:
    """A 303 to `url` (after a POST: the browser GETs it), with an optional flash message shown there.

    `kind` is success, error or info (the colour; the message says it in words too)."""
    response = RedirectResponse(url, status_code=303, headers=security_headers())
    if flash is not None:
        pages = admin_pages(request)
        messages = [*_read_flashes(pages, request), {"kind": kind, "text": flash}][-5:]
        response.set_cookie(
            FLASH_COOKIE,
            pages.flash_serializer.dumps(messages),
            path="/admin",
            httponly=True,
            samesite="lax",
            secure=pages.secure_cookies,
        )
    return response


def _read_flashes(pages: AdminPages, request: Request) -> list[dict[str, str]]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or len(raw) > 4096:
        return []
    try:
        messages = pages.flash_serializer.loads(raw)
    except (BadSignature, json.JSONDecodeError):
        return []
    if not isinstance(messages, list):
        return []
    return [
        {"kind": str(m.get("kind", "info")), "text": str(m.get("text", ""))} for m in messages if isinstance(m, dict)
    ]
