"""What request handlers depend on: the request's unit of work, tokens, settings, and the hot path.

Routers import from here, never from `app`: `app` builds the state these read (`app.state.sessions`,
`.tokens`, `.settings`, the hot pools and sessions) and includes the routers, so imports point one way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.db import EngineCache, libpq_url, make_engine, unit_of_work
from newsletter.tokens import Tokens

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

T_co = TypeVar("T_co", covariant=True)


# --- the unit of work, tokens, settings ---------------------------------------------------------------------


def request_unit_of_work(request: Request) -> AbstractContextManager[Session]:
    """The one way a handler opens a unit of work: committed when the block ends, rolled back on error."""
    return unit_of_work(request.app.state.sessions)


def get_session(request: Request) -> Iterator[Session]:
    with request_unit_of_work(request) as session:
        request.state.db = session  # so the API's ApiRoute can roll back when it turns an error into a response
        yield session


# scope="function": the unit of work ends when the handler returns, before the response is sent, so a 200
# (or a "done" page) means the change is committed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


TokensDep = Annotated[Tokens, Depends(get_tokens)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


# --- the hot path -------------------------------------------------------------------------------------------
#
# The three hottest endpoints (every recipient's mail client or mailbox provider calls them) — the open
# pixel, the click redirect and RFC 8058 one-click unsubscribe — are one SQL statement each, with a twin for
# each of the two ways to run it (`tracking.record_open` / `record_open_async`, ...). `hot_statement` picks
# the way: on PostgreSQL, on the event loop over the async pools of `HotPools`; otherwise (SQLite, or before
# the pools are open) in one worker thread on the lean sessions of `hot_session_factories`. Either way the
# change is committed before the response is sent.

# Tracking does not wait for the WAL flush; one-click does (see `HotPools`).
HotKind = Literal["tracking", "one_click"]


class OnConnection(Protocol[T_co]):
    def __call__(self, conn: AsyncConnection[Any], tokens: Tokens, /, *, token: str) -> Awaitable[T_co]: ...


class OnSession(Protocol[T_co]):
    def __call__(self, session: Session, tokens: Tokens, /, *, token: str) -> T_co: ...


async def hot_statement(
    request: Request, kind: HotKind, on_connection: OnConnection[T_co], on_session: OnSession[T_co], token: str
) -> T_co:
    """Run a hot endpoint's statement for `token` the fastest way this app can, committed when it returns."""
    tokens: Tokens = request.app.state.tokens
    pools: HotPools | None = request.app.state.hot_pools
    if pools is not None:
        pool = pools.tracking if kind == "tracking" else pools.one_click
        async with pool.connection() as conn:
            return await on_connection(conn, tokens, token=token)
    # `app.state.tracking_sessions` / `.one_click_sessions` (tests replace them with their own sessions).
    sessions: sessionmaker[Session] = getattr(request.app.state, f"{kind}_sessions")
    return await run_in_threadpool(_on_session, sessions, on_session, tokens, token)


def _on_session(sessions: sessionmaker[Session], on_session: OnSession[T_co], tokens: Tokens, token: str) -> T_co:
    with unit_of_work(sessions) as session:
        return on_session(session, tokens, token=token)


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


_HOT_ENGINES = EngineCache(8)


def _hot_engine(url: str, *, durable: bool) -> Engine:
    # One pool per process and URL, like db.get_engine: apps come and go (tests), connections stay pooled.
    return _HOT_ENGINES.get((url, durable), lambda: _make_hot_engine(url, durable=durable))


def _make_hot_engine(url: str, *, durable: bool) -> Engine:
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
