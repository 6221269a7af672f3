"""Application factory: settings, database sessions and routers wired together."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from newsletter.config import Settings, get_settings
from newsletter.db import session_factory
from newsletter.subscriptions import Tokens


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="newsletter", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.sessions = session_factory(settings)
    app.state.tokens = Tokens(settings.secret_key)

    from newsletter.web import public

    app.include_router(public.router)
    from newsletter.web import api

    app.include_router(api.router)

    @app.get("/healthz", tags=["public"])
    def healthz(session: Session = Depends(get_session)) -> JSONResponse:
        checks = {"database": _check(lambda: session.execute(text("SELECT 1")))}
        if settings.broker_url:
            checks["broker"] = _check(lambda: _ping_broker(settings.broker_url or ""))
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", **checks}, 200 if healthy else 503)

    return app


def _check(probe: object) -> str:
    try:
        probe()  # type: ignore[operator]
    except Exception as exc:  # a health check reports every failure rather than raising
        return f"error: {type(exc).__name__}: {exc}"[:200]
    return "ok"


def _ping_broker(url: str) -> None:
    from kombu import Connection

    with Connection(url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: committed when the handler returns, rolled back on error."""
    session: Session = request.app.state.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_tokens(request: Request) -> Tokens:
    return request.app.state.tokens  # type: ignore[no-any-return]


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]
