"""Public pages and endpoints, one module per page family; this assembles them into one router.

subscribe (form and embeddable JSON), confirm, unsubscribe (page, button, RFC 8058 one-click, undo),
preferences, tracking (open pixel, click redirect), archive (issues and the Atom feed).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from newsletter import links
from newsletter.web.pages import pages
from newsletter.web.public import archive, confirm, preferences, subscribe, tracking, unsubscribe

# No JSON by default: each page documents its own media types (public/schema.py), not FastAPI's guess.
router = APIRouter(tags=["public"], default_response_class=Response)
for module in (subscribe, confirm, unsubscribe, preferences, tracking, archive):
    router.include_router(module.router)


@router.get(links.STYLESHEET, include_in_schema=False)
def stylesheet(request: Request) -> Response:
    return pages(request).stylesheet_response()
