"""Engines and sessions: one async engine per process, SQLite tuned for two processes."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any, TypeVarTuple

from sqlalchemy import Select, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]

_Row = TypeVarTuple("_Row")


def locking(query: Select[*_Row], *, of: Any = None) -> Select[*_Row]:
    """The query, taking the rows it reads for a write, as every writer here does (no-op on
    SQLite, whose writers take turns on the file): FOR NO KEY UPDATE on PostgreSQL, since
    no transaction changes a key. A foreign-key check (an insert that names the row) takes
    KEY SHARE, which FOR UPDATE would make wait: a send inserting its message waited for
    the candidate an unsubscribe had locked, while the unsubscribe waited for the enrolment
    the send had locked, and PostgreSQL broke the deadlock by failing one of them."""
    return query.with_for_update(of=of, key_share=True)


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


class _Turns:
    """A lock whose urgent waiters go first: a send past its last check holds an SMTP
    session open and a message `sending`, and should not queue behind sends that are only
    starting."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: tuple[list[asyncio.Future[None]], list[asyncio.Future[None]]] = ([], [])

    @contextlib.asynccontextmanager
    async def turn(self, *, urgent: bool) -> AsyncIterator[None]:
        if self._held or any(self._waiting):
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[0 if urgent else 1].append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed the turn as it was cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):  # already passed over
                        self._waiting[0 if urgent else 1].remove(waiter)
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in self._waiting:
            while queue:
                waiter = queue.pop(0)
                if not waiter.done():
                    waiter.set_result(None)  # the turn passes to it, still held
                    return
        self._held = False


# One per SQLite engine (so per process and per file): see `transaction`.
_WRITERS: weakref.WeakKeyDictionary[AsyncEngine, _Turns] = weakref.WeakKeyDictionary()


_CLOSING: set[asyncio.Task[None]] = set()


@contextlib.asynccontextmanager
async def transaction(
    sessions: SessionFactory, *, urgent: bool = False, close_later: bool = False
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that writes. On SQLite these take turns within the
    process: the file has one writer at a time anyway, and a hundred sends waiting here in
    line go many times faster than a hundred sleeping and retrying in SQLite's busy handler
    (between processes, the busy timeout still decides). `urgent` ones go first.

    `close_later`: the commit is the last thing awaited; the session is closed (its
    connection handed back, a round trip on PostgreSQL) in the background, so that what
    the caller does right after the commit happens right after it."""
    engine = sessions.kw.get("bind")
    turns = None
    if isinstance(engine, AsyncEngine) and engine.dialect.name == "sqlite":
        turns = _WRITERS.setdefault(engine, _Turns())
    async with turns.turn(urgent=urgent) if turns else contextlib.nullcontext():
        session = sessions()
        try:
            async with session.begin():
                if turns is not None:
                    # The write lock first, so that what the transaction reads is what the
                    # other processes' writers (the API, other workers) leave it: pysqlite
                    # would only begin at the first write, after the reads.
                    await session.execute(text("BEGIN IMMEDIATE"))
                yield session
        finally:
            if close_later:
                closing = asyncio.create_task(session.close())
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)
            else:
                await session.close()
