"""Application factory: settings, database sessions, the hot pools and the routers wired together."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import text
from sqlalchemy.orm import Session

from newsletter import links, logs, users
from newsletter.config import Settings, get_settings
from newsletter.db import session_factory
from newsletter.models import Role
from newsletter.tokens import Tokens
from newsletter.web import admin, api, docs, public, webhooks
from newsletter.web import metrics as web_metrics
from newsletter.web.api.deps import bearer
from newsletter.web.assets import Assets
from newsletter.web.assets import router as static_router
from newsletter.web.bodylimit import BodyLimit
from newsletter.web.deps import HotPools, SessionDep, hot_session_factories
from newsletter.web.nulbytes import RefuseNul
from newsletter.web.pages import Pages, trusted_networks
from newsletter.web.public.subscribe import enqueue_confirmation, enqueue_sequences
from newsletter.web.throttle import make_throttle


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="newsletter", version="0.1.0", docs_url=None, redoc_url=None, lifespan=_lifespan)
    app.state.settings = settings
    # Tests that hand the app their own (rolled-back) sessions switch the pools off.
    app.state.open_hot_pools = settings.database_url.startswith("postgresql")
    app.state.hot_pools = None  # set by _lifespan while the app runs
    app.state.embedded_scheduler = False  # `newsletter serve` without a broker schedules in-process
    app.state.sessions = session_factory(settings)
    app.state.tracking_sessions, app.state.one_click_sessions = hot_session_factories(settings, app.state.sessions)
    app.state.tokens = Tokens.from_settings(settings)
    app.state.pages = Pages()
    app.state.assets = Assets()
    app.state.trusted_proxies = trusted_networks(settings)
    app.state.subscribe_throttle = make_throttle(
        settings.effective_redis_url, settings.subscribe_ip_limit, 3600, "newsletter:subscribe-ip"
    )
    # Replaceable in tests; by default the Celery task, which runs inline in embedded mode.
    app.state.enqueue_confirmation = enqueue_confirmation
    app.state.enqueue_sequences = enqueue_sequences
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RefuseNul)  # added last: runs first
    app.include_router(public.router)
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(static_router)
    app.include_router(docs.router)  # /docs, /redoc and /
    if settings.admin_enabled:
        admin.install(app, app.state.assets)
    web_metrics.install(app, settings)  # /metrics (off by default) and the request timer

    @app.get(links.HEALTH, tags=["public"], responses=public.schema.HEALTH_ANSWERS)
    def healthz(
        session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> JSONResponse:
        """ok (200) or unavailable (503); which part failed, and how, only with an admin token: error texts
        name hosts, ports and drivers, of use to whoever maps the network."""
        checks = {"database": _check(lambda: session.execute(text("SELECT 1")))}
        if settings.broker_url:
            checks["broker"] = _check(lambda: _ping_broker(settings.broker_url or ""))
        healthy = all(value == "ok" for value in checks.values())
        body: dict[str, str] = {"status": "ok" if healthy else "unavailable"}
        if credentials is not None and _is_admin(session, credentials.credentials):
            body |= checks
        return JSONResponse(body, 200 if healthy else 503)

    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if app.state.open_hot_pools:
        # Opened here, in the event loop that serves the requests; until then (or on SQLite) the hot
        # endpoints run their unit of work on `hot_session_factories` in a worker thread.
        app.state.hot_pools = await HotPools.open(settings.database_url)
    # Registers the outbox's after-commit hook: events a request commits are dispatched at once (a Celery
    # task, or the embedded scheduler's webhook thread), not at the next sweep.
    from worker import tasks  # noqa: F401

    scheduler = None
    if app.state.embedded_scheduler and settings.broker_url is None:
        # No broker means no Celery beat: this process (one of them, with --workers) sweeps and starts due
        # scheduled campaigns itself. Imported here, as the enqueuers do: worker.app reads the settings.
        from worker.embedded import EmbeddedScheduler

        scheduler = EmbeddedScheduler(settings).start()
    try:
        yield
    finally:
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        pools: HotPools | None = app.state.hot_pools
        app.state.hot_pools = None
        if pools is not None:
            await pools.close()


def create_served_app() -> FastAPI:
    """The app as `newsletter serve` runs it, one per worker process."""
    logs.configure(get_settings())
    app = create_app()
    app.state.embedded_scheduler = True
    # Everything built so far (modules, the ORM mappings, routes, templates) lives as long as the process:
    # moved out of the collector's reach, a full collection no longer walks it in the middle of a request.
    gc.collect()
    gc.freeze()
    return app


def _is_admin(session: Session, token: str) -> bool:
    try:
        return users.authenticate(session, token).role == Role.admin
    except Exception:  # an unknown token, or a database that is down: the stranger's answer
        return False


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
