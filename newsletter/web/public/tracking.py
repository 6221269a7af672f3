"""Tracking: the open pixel and the click redirect, two of the hot endpoints (see `deps.hot_statement`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from newsletter import links, tracking
from newsletter.tokens import UnknownToken
from newsletter.web.deps import hot_statement
from newsletter.web.pages import NO_STORE
from newsletter.web.public import schema

router = APIRouter()
_PIXEL_HEADERS = {"Cache-Control": "no-store, private", "Expires": "0"}


_OPEN_ANSWERS = schema.page(
    {
        200: schema.answer("The 1x1 transparent GIF", "image/gif"),
        404: schema.answer("Not a delivery's token (an empty body), or a NUL character in the path", schema.TEXT),
    }
)
_CLICK_ANSWERS = schema.page(
    {
        404: schema.answer("Not a tracked link of a delivery", schema.TEXT),
    }
)


@router.get(f"{links.OPEN}{{token}}", response_model=None, responses=_OPEN_ANSWERS)
async def open_pixel(token: str, request: Request) -> Response:
    try:
        await hot_statement(request, "tracking", tracking.record_open_async, tracking.record_open, token)
    except UnknownToken:
        return Response(status_code=404, media_type="text/plain", headers=_PIXEL_HEADERS)  # empty, but typed
    return Response(tracking.PIXEL, media_type="image/gif", headers=_PIXEL_HEADERS)


@router.get(f"{links.CLICK}{{token}}", response_model=None, status_code=302, responses=_CLICK_ANSWERS)
async def click(token: str, request: Request) -> Response:
    """302 to the campaign's registered URL, never to anything taken from the request."""
    try:
        url = await hot_statement(request, "tracking", tracking.record_click_async, tracking.record_click, token)
    except UnknownToken:
        return PlainTextResponse("This link is not valid.\n", 404, headers=NO_STORE)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)
