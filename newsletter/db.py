"""Database plumbing: engines, sessions, the declarative Base and the column types the models share."""

from __future__ import annotations

import datetime as dt
import enum
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Executable,
    MetaData,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from newsletter.config import Settings


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; timestamps must be timezone-aware")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# BIGINT on PostgreSQL, but INTEGER on SQLite so that it stays an auto-incrementing rowid alias.
BigID = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
# The largest id either backend can hold (bigint, SQLite's INTEGER): a larger one names no row, and binding it
# is an error of the driver (SQLite: OverflowError), so the API and the CLI refuse it as a bad value first.
MAX_ID = 2**63 - 1
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")

intpk = Annotated[int, mapped_column(BigID, primary_key=True, autoincrement=True)]
timestamp = Annotated[dt.datetime, mapped_column(UTCDateTime())]
created_at = Annotated[dt.datetime, mapped_column(UTCDateTime(), default=utcnow, nullable=False)]
updated_at = Annotated[dt.datetime, mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite's lower() folds ASCII letters only ("Алматы" stays as it is); this one is Python's str.lower(),
# registered on every connection, like PostgreSQL's lower() under a UTF-8 locale.
UNICODE_LOWER = "unicode_lower"


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function(UNICODE_LOWER, 1, _unicode_lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a worker writes; busy_timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # pysqlite's own transaction handling defers BEGIN until the first write, so a SAVEPOINT issued
    # first becomes the outermost transaction and releasing it commits. Let SQLAlchemy emit BEGIN itself
    # (the recipe in SQLAlchemy's SQLite dialect docs): savepoints and rollbacks then mean what they say.
    dbapi_connection.isolation_level = None


def _begin_sqlite(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class EngineCache:
    """The process's engines, kept among the `size` most recently used; an engine pushed out is disposed at
    once, so its pooled connections are closed now, not whenever the garbage collector finds them."""

    def __init__(self, size: int) -> None:
        self._engines: OrderedDict[Hashable, Engine] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Engine]) -> Engine:
        with self._lock:
            engine = self._engines.pop(key, None) or build()
            self._engines[key] = engine
            while len(self._engines) > self._size:
                _, evicted = self._engines.popitem(last=False)
                evicted.dispose()
        return engine


_ENGINES = EngineCache(4)


def get_engine(settings: Settings) -> Engine:
    """The process's engine for this database, kept among the four most recently used."""
    url = settings.database_url
    return _ENGINES.get(url, lambda: make_engine(url))


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


def session_scope(settings: Settings) -> AbstractContextManager[Session]:
    return unit_of_work(session_factory(settings))


@contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


def analyze(session: Session, *tables: str) -> None:
    """Refresh PostgreSQL's statistics of tables a bulk change just filled (an import, a planned campaign).

    The statements that follow (the claim, the record-and-claim) were planned three times slower on a table
    never analysed, and autovacuum may be off or a minute late. SKIP_LOCKED: never wait on an ANALYZE or
    VACUUM already running, whose statistics will do. Inside the caller's transaction its own new rows count.
    """
    if tables and is_postgres(session):
        session.execute(text(f"ANALYZE (SKIP_LOCKED) {', '.join(tables)}"))


class PostgresSQL(NamedTuple):
    """A Core statement compiled once for psycopg, to run on a bare (async) psycopg connection."""

    sql: str
    defaults: dict[str, Any]  # the values of its literals; the named bind parameters are None here

    def params(self, **values: Any) -> dict[str, Any]:
        # Values go to psycopg as they are, without SQLAlchemy's bind processing: give plain ints and
        # strings, and timezone-aware UTC datetimes (what UTCDateTime would send).
        return {**self.defaults, **values}


def postgres_sql(statement: Executable) -> PostgresSQL:
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())  # type: ignore[attr-defined]
    # Enums are stored by value (models._enum); psycopg on its own would send a Python enum's name.
    defaults = {k: v.value if isinstance(v, enum.Enum) else v for k, v in compiled.params.items()}
    return PostgresSQL(str(compiled), defaults)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://...`) as the connection string psycopg itself takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
