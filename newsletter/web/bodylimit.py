"""Request bodies capped before anything reads them, and admin API requests authenticated first.

Starlette and FastAPI read a whole body into memory before a handler (or its dependencies) runs, so a
stranger's 8 concurrent 50 MB POSTs would cost 400 MB whatever the route does with them. This ASGI
middleware refuses a declared Content-Length over the route's cap at once, counts the bytes of a body
sent without one (chunked) as they arrive, and answers 401 to an API request with a body whose bearer
token is not valid, without reading a byte of it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import links, users
from newsletter.config import Settings
from newsletter.db import unit_of_work
from newsletter.web.api.errors import error_response

API = "/api/v1/"
ADMIN = "/admin/"
# Streamed uploads (CSV imports, bounce reports): the large cap; their handlers spool them to files.
_UPLOADS = re.compile(
    r"/api/v1/(bounces|suppressions/import|lists/[^/]+/import)/?|/admin/(imports|suppressions/import)"
)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this route accepts ({limit} bytes)")


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit_for(self, path: str) -> int:
        if _UPLOADS.fullmatch(path):
            return self.settings.max_upload_bytes
        if path.startswith(API):
            return self.settings.max_api_body_bytes
        if path.startswith(ADMIN):
            return self.settings.max_admin_body_bytes

        if path.startswith(links.WEBHOOKS):
            return self.settings.max_webhook_body_bytes
        return self.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        declared = headers.get(b"content-length")
        has_body = (declared is not None and declared.strip() not in (b"", b"0")) or b"transfer-encoding" in headers
        if not has_body:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.limit_for(path)
        if path.startswith(API):
            refusal = await run_in_threadpool(self._refusal, headers.get(b"authorization", b""), scope)
            if refusal is not None:
                await _answer(scope, receive, send, error_response(401, refusal))
                return
        if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
            await _answer(scope, receive, send, error_response(413, BodyTooLarge(limit).detail))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    def _refusal(self, authorization: bytes, scope: Scope) -> str | None:
        """Why the request's bearer token does not authenticate it, or None (the handler checks the role)."""
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "missing API token: send the header 'Authorization: Bearer TOKEN'"
        try:
            # the app's session factory, read per request (tests hand the app their own)
            with unit_of_work(scope["app"].state.sessions) as session:
                users.authenticate(session, token.strip())
        except users.AuthenticationFailed as exc:
            return str(exc)
        return None


async def _answer(scope: Scope, receive: Receive, send: Send, response: Any) -> None:
    # "Connection: close": the unread body is not drained, the client is told to stop sending it.
    response.headers["connection"] = "close"
    await response(scope, receive, send)
