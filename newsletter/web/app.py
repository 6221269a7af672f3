"""Application factory: settings, database sessions, the hot pools and the routers wired together."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from newsletter import links
from newsletter.config import Settings, get_settings
from newsletter.db import session_factory
from newsletter.tokens import Tokens
from newsletter.web import api, public
from newsletter.web.bodylimit import BodyLimit
from newsletter.web.deps import HotPools, SessionDep, hot_session_factories
from newsletter.web.pages import Pages
from newsletter.web.public.subscribe import enqueue_confirmation
from newsletter.web.throttle import make_throttle


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="newsletter", version="0.1.0", docs_url="/docs", redoc_url=None, lifespan=_lifespan)
    app.state.settings = settings
    # Tests that hand the app their own (rolled-back) sessions switch the pools off.
    app.state.open_hot_pools = settings.database_url.startswith("postgresql")
    app.state.hot_pools = None  # set by _lifespan while the app runs
    app.state.sessions = session_factory(settings)
    app.state.tracking_sessions, app.state.one_click_sessions = hot_session_factories(settings, app.state.sessions)
    app.state.tokens = Tokens.from_settings(settings)
    app.state.pages = Pages()
    app.state.subscribe_throttle = make_throttle(
        settings.effective_redis_url, settings.subscribe_ip_limit, 3600, "newsletter:subscribe-ip"
    )
    # Replaceable in tests; by default the Celery task, which runs inline in embedded mode.
    app.state.enqueue_confirmation = enqueue_confirmation
    app.add_middleware(BodyLimit, settings=settings)
    app.include_router(public.router)
    app.include_router(api.router)

    @app.get(links.HEALTH, tags=["public"])
    def healthz(session: SessionDep) -> JSONResponse:
        checks = {"database": _check(lambda: session.execute(text("SELECT 1")))}
        if settings.broker_url:
            checks["broker"] = _check(lambda: _ping_broker(settings.broker_url or ""))
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", **checks}, 200 if healthy else 503)

    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if app.state.open_hot_pools:
        # Opened here, in the event loop that serves the requests; until then (or on SQLite) the hot
        # endpoints run their unit of work on `hot_session_factories` in a worker thread.
        app.state.hot_pools = await HotPools.open(settings.database_url)
    try:
        yield
    finally:
        pools: HotPools | None = app.state.hot_pools
        app.state.hot_pools = None
        if pools is not None:
            await pools.close()


def create_served_app() -> FastAPI:
    """The app as `newsletter serve` runs it, one per worker process."""
    app = create_app()
    # Everything built so far (modules, the ORM mappings, routes, templates) lives as long as the process:
    # moved out of the collector's reach, a full collection no longer walks it in the middle of a request.
    gc.collect()
    gc.freeze()
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
