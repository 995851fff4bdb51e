"""Engines and sessions: one async engine per process, SQLite tuned for two processes."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]


def sync_url(database_url: str) -> URL:
    """The URL for synchronous tools (Alembic): pysqlite, or psycopg 3."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite")
    return url


def async_url(database_url: str) -> URL:
    """The URL for the service: aiosqlite, or psycopg 3 in its async mode."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # The API and the worker write the same file: WAL lets readers go on while one writes,
    # and the busy timeout makes a writer wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, **kwargs)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


# One lock per SQLite engine (so per process and per file): see `transaction`.
_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def transaction(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that writes. On SQLite these take turns within the
    process: the file has one writer at a time anyway, and a hundred sends waiting here in
    line go many times faster than a hundred sleeping and retrying in SQLite's busy handler
    (between processes, the busy timeout still decides)."""
    engine = sessions.kw.get("bind")
    lock = None
    if isinstance(engine, AsyncEngine) and engine.dialect.name == "sqlite":
        lock = _WRITERS.setdefault(engine, asyncio.Lock())
    async with lock or contextlib.nullcontext(), sessions() as session, session.begin():
        yield session
