"""How the admin API fails: one JSON error body for every error, domain errors mapped to status codes."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from newsletter import errors


class ErrorBody(BaseModel):
    """Every 4xx answer of the API: a sentence for people and, for invalid input, the offending fields."""

    error: str = Field(description="What went wrong and, where possible, how to fix it.")
    detail: list[dict[str, Any]] | dict[str, Any] | None = Field(
        None, description="Field-level problems (validation) or the rejected rows (import)."
    )


def described(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: described("No bearer token, or an unknown or revoked one."),
    403: described("The token's role may not do this (editors: digests, campaigns, reading lists)."),
    422: described("The request is not valid; `detail` names the fields."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: described("No such object.")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: described("The object's current state does not allow this.")}

# Most specific first: a class may refine two families (none does today), and the first match wins.
STATUS_FOR: list[tuple[type[Exception], int]] = [
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Invalid, 422),
    (errors.Unavailable, 502),
]


def error_response(
    status: int,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
    *,
    challenge: str | None = "Bearer",
) -> Response:
    """The JSON error; a 401 carries `challenge` as its WWW-Authenticate (unless `headers` name one)."""
    body = ErrorBody(error=message, detail=detail).model_dump(mode="json")
    if status == 401 and challenge:
        headers = {"WWW-Authenticate": challenge, **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in exc.errors()
    ]


class ApiRoute(APIRoute):
    """Turns domain errors, HTTP errors and validation errors into ErrorBody, rolling back the unit of work.

    Done per route (not with app-wide exception handlers) so the public pages keep their HTML errors.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = _to_response(exc)
                if response is None:
                    raise
                session = getattr(request.state, "db", None)
                if session is not None:
                    session.rollback()
                return response

        return handle


def _to_response(exc: Exception) -> Response | None:
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    if isinstance(exc, RequestValidationError):
        return error_response(422, "the request is not valid: see detail", _validation_detail(exc))
    for kind, status in STATUS_FOR:
        if isinstance(exc, kind):
            challenge = exc.challenge if isinstance(exc, errors.Unauthenticated) else None
            return error_response(status, str(exc), getattr(exc, "detail", None), challenge=challenge)
    return None
