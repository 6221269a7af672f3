"""How admin pages fail: domain errors and HTTP errors become the admin's HTML error page, with the unit
of work rolled back, as `ApiRoute` does for the API's JSON."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from newsletter.web.admin.render import render
from newsletter.web.api.errors import STATUS_FOR

TITLES = {
    400: "This request is not valid",
    403: "You cannot do this here",
    404: "There is no such page",
    409: "This cannot be done now",
    413: "That is too large",
    422: "Please check what you entered",
    502: "A service we depend on failed",
}


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    """The admin's error page (templates/admin/error.html): what happened, in words, and a way back."""
    return render(request, "error.html", status_code=status, title=title, message=message, status=status)


class AdminRoute(APIRoute):
    """Admin routes answer with HTML: a NotFound from the domain is the 404 page, an Invalid the 422, ...

    A page that wants to show an error beside a form field catches the error itself and re-renders."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                status, message = _status_of(exc)
                if status is None:
                    raise
                session = getattr(request.state, "db", None)
                if session is not None:
                    session.rollback()
                return error_page(request, status, TITLES.get(status, "Something went wrong"), message)

        return handle


def _status_of(exc: Exception) -> tuple[int | None, str]:
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, RequestValidationError):
        fields = ", ".join(str(error.get("loc", ("?",))[-1]) for error in exc.errors())
        return 422, f"Some fields are missing or too long ({fields}). Go back and check them."
    for kind, status in STATUS_FOR:
        if isinstance(exc, kind):
            return status, str(exc)
    return None, ""
