"""Public pages: what a subscriber touches (unsubscribe, confirm, preferences) and the tracking endpoints."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from sqlalchemy.orm import Session

from newsletter import subscriptions
from newsletter.subscriptions import Tokens, UnknownToken
from newsletter.web.app import get_session, get_tokens

router = APIRouter(tags=["public"])


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><main><h1>{escape(title)}</h1>{body}</main></html>",
        status_code=status_code,
    )


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, tokens: Tokens = Depends(get_tokens)) -> HTMLResponse:
    try:
        tokens.read(subscriptions.TokenPurpose.unsubscribe, token, 2)
    except UnknownToken:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    return _page(
        "Unsubscribe",
        f'<form method="post" action="/unsubscribe/{escape(token)}"><button type="submit">Unsubscribe</button></form>',
    )


@router.post("/unsubscribe/{token}", response_model=None)
async def unsubscribe(
    token: str, request: Request, session: Session = Depends(get_session), tokens: Tokens = Depends(get_tokens)
) -> HTMLResponse | PlainTextResponse:
    """RFC 8058 one-click (body `List-Unsubscribe=One-Click`, no cookies) and the page's button."""
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    try:
        subscriptions.unsubscribe(session, tokens, token=token, source="one-click" if one_click else "page")
    except UnknownToken:
        if one_click:
            return PlainTextResponse("unknown token", status_code=404)
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    if one_click:
        return PlainTextResponse("unsubscribed")
    return _page("You are unsubscribed", "<p>You will not receive this list any more.</p>")
