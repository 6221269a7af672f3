"""NUL in a request's path or query string refused at the edge, before any route sees it.

PostgreSQL refuses NUL in text ("A string literal cannot contain NUL"), so a `%00` in a slug, a token or a
filter that reached a query was a 500 (issue 11, item 8); no name, slug, token or filter of ours can
contain one. A path with one names nothing (404); a public page's query parameter with one is not valid
(422).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            query: bytes = scope.get("query_string", b"")
            api = path.startswith("/api/")
            if "\x00" in path:
                response = (
                    JSONResponse({"error": "not found", "detail": None}, 404)
                    if api
                    else PlainTextResponse("Not found.\n", 404)
                )
                await response(scope, receive, send)
                return
            if not api and (b"\x00" in query or b"%00" in query):
                # (the API checks its own filters: a NUL there finds nothing, or is a 422 naming the field)
                response = PlainTextResponse("A query parameter contains a NUL character.\n", 422)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
