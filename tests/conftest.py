"""Test harness: real PostgreSQL (a fresh database per run), SQLite, Redis and an aiosmtpd SMTP server.

Each test gets a session inside an outer transaction that is rolled back afterwards; code that commits
(the delivery loop, the web app) only releases savepoints. Tests that need data visible to other
processes (a Celery worker, `newsletter` in a subprocess) use `committed_pg`, which truncates afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings, load_settings
from newsletter.db import Base, make_engine
from newsletter.migrate import scratch_database, upgrade

if TYPE_CHECKING:
    from tests.smtpserver import RecordingSMTPServer

pytest_plugins = ["tests.browser", "tests.admin"]  # shared fixtures: `live`, `chromium`, `admin_web`

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
PG_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _redis_url_of_this_worker() -> str:
    # Under pytest-xdist (`make test` runs two workers) each worker flushes its own database: gw0 the
    # configured one, gw1 the next, so one worker's flush never empties the other's queues.
    url = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) + int(worker.removeprefix('gw'))}"


REDIS_URL = _redis_url_of_this_worker()
TEST_SECRET = "test-secret-key-0123456789abcdef"


def fresh_database(prefix: str) -> AbstractContextManager[str]:
    """A new PostgreSQL database on the test server, migrated; dropped on exit."""
    return scratch_database(PG_ADMIN_URL, prefix)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated once, dropped at the end."""
    with fresh_database("newsletter_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'newsletter.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue("pg_engine" if backend == "postgres" else "sqlite_engine")  # type: ignore[no-any-return]


def _rolled_back(engine: Engine) -> Iterator[sessionmaker[Session]]:
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield factory
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory whose commits stay inside one rolled-back transaction (both backends)."""
    yield from _rolled_back(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def pg_sessions(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    yield from _rolled_back(pg_engine)


@pytest.fixture
def pg_session(pg_sessions: sessionmaker[Session]) -> Iterator[Session]:
    with pg_sessions() as session:
        yield session


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": "sqlite:///" + str(tmp_path / "unused.db"),
            "secret_key": TEST_SECRET,
            "base_url": "https://news.example.org",
            "outbox_dir": tmp_path / "outbox",
            "retry_base_seconds": 0.01,
        }
        values.update(overrides)
        return load_settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings], engine: Engine) -> Settings:
    return make_settings(database_url=engine.url.render_as_string(hide_password=False))


@pytest.fixture
def committed_pg(pg_engine: Engine, pg_url: str) -> Iterator[str]:
    """The run's PostgreSQL database with real commits, emptied after the test."""
    yield pg_url
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with pg_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def smtp_server() -> Iterator[RecordingSMTPServer]:
    from tests.smtpserver import RecordingSMTPServer

    with RecordingSMTPServer() as server:
        yield server


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """Where a test leaves files for a person to look at (screenshots, rendered mail)."""
    path = OUTPUT / request.node.module.__name__.rsplit(".", 1)[-1]
    path.mkdir(parents=True, exist_ok=True)
    return path
