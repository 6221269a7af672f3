"""Application factory: settings, database sessions and routers wired together."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings, get_settings
from newsletter.db import libpq_url, make_engine, session_factory, unit_of_work
from newsletter.tokens import Tokens

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool


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

    from newsletter.web import public
    from newsletter.web.pages import Pages
    from newsletter.web.throttle import make_throttle

    app.state.pages = Pages()
    app.state.subscribe_throttle = make_throttle(
        settings.effective_redis_url, settings.subscribe_ip_limit, 3600, "newsletter:subscribe-ip"
    )
    # Replaceable in tests; by default the Celery task, which runs inline in embedded mode.
    app.state.enqueue_confirmation = public.enqueue_confirmation
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


@dataclass(frozen=True)
class HotPools:
    """Async psycopg pools for the hot endpoints on PostgreSQL: tracking hits and one-click unsubscribes.

    Each of those requests is one SQL statement, so it runs on the event loop itself (no worker thread,
    no SQLAlchemy session) on an autocommit connection: one round trip. Tracking does not wait for the WAL
    flush (synchronous_commit=off: a crash may lose the last fraction of a second of opens and clicks);
    one-click does, so its 200 means the unsubscribe is on disk.
    """

    tracking: AsyncConnectionPool[Any]
    one_click: AsyncConnectionPool[Any]

    @classmethod
    async def open(cls, url: str) -> HotPools:
        conninfo = libpq_url(url)
        pools = cls(tracking=_hot_pool(conninfo, "-c synchronous_commit=off"), one_click=_hot_pool(conninfo, ""))
        for pool in (pools.tracking, pools.one_click):
            await pool.open()  # connects in the background: the app starts, as before, with the database down
        return pools

    async def close(self) -> None:
        for pool in (self.tracking, self.one_click):
            await pool.close()


def _hot_pool(conninfo: str, options: str) -> AsyncConnectionPool[Any]:
    from psycopg_pool import AsyncConnectionPool

    # A statement holds a connection for well under a millisecond, so a few per process keep up with
    # thousands of requests a second; more would only add PostgreSQL backends competing for the CPU.
    return AsyncConnectionPool(
        conninfo,
        min_size=2,
        max_size=8,
        timeout=10,  # a request waits this long for a connection, then fails (500) instead of queueing on
        kwargs={"autocommit": True, "options": options} if options else {"autocommit": True},
        open=False,
        name="newsletter-hot",
    )


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


def hot_session_factories(
    settings: Settings, default: sessionmaker[Session]
) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    """Sessions for the open pixel / click redirect and for one-click unsubscribe when `HotPools` is not open.

    Each of those requests is a single SQL statement, atomic by itself, so they run on autocommit
    connections: one round trip instead of BEGIN + statement + COMMIT, and no pre-ping (a connection
    older than `pool_recycle` is replaced instead). Tracking also skips waiting for the WAL flush
    (synchronous_commit=off): a crash may lose the last fraction of a second of opens and clicks, never
    an unsubscribe. The pools are sized for the worker threadpool so connections are reused, not reopened.
    """
    if not settings.database_url.startswith("postgresql"):
        return default, default
    return (
        sessionmaker(bind=_hot_engine(settings.database_url, durable=False), expire_on_commit=False),
        sessionmaker(bind=_hot_engine(settings.database_url, durable=True), expire_on_commit=False),
    )


@lru_cache(maxsize=8)
def _hot_engine(url: str, *, durable: bool) -> Engine:
    # One pool per process and URL, like db.get_engine: apps come and go (tests), connections stay pooled.
    options: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_size": 20,
        "max_overflow": 20,
        "pool_pre_ping": False,
        "pool_recycle": 1800,
    }
    if not durable:
        options["connect_args"] = {"options": "-c synchronous_commit=off"}
    return make_engine(url, **options)


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
    with unit_of_work(request.app.state.sessions) as session:
        yield session


def get_tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
