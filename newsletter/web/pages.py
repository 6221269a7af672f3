"""HTML pages for people: the Jinja2 environment over templates/web/ and the headers every page carries."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any

from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

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


class Pages:
    def __init__(self) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(WEB_TEMPLATES),
            autoescape=select_autoescape(["html", "xml"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.globals["stylesheet"] = f"/static/style.css?v={self.stylesheet_version}"

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
