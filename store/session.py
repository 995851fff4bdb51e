"""Engines and sessions: one async engine per process, SQLite tuned for two processes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVarTuple

import aiosqlite
from sqlalchemy import Select, event
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
    cursor.execute("PRAGMA busy_timeout=30000")  # first: the others may need a lock
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class _SqliteOnTheLoop(aiosqlite.Connection):
    """aiosqlite's connection, whose calls that cannot wait run on the event loop instead of
    in its thread: a trip to the thread and back costs more CPU than our statements do, and
    a send makes some forty of them.

    A call can wait only in SQLite's busy handler, for a lock that another connection
    holds (up to the busy timeout); on the loop, that would stall every coroutine of the
    process, the lock's holder among them. So on the loop run only: the statements of a
    transaction that already holds the write lock (it began with BEGIN IMMEDIATE, on the
    thread), its commit or rollback, a commit or rollback with no transaction (nothing to
    do), making a cursor, and fetching from or closing one (stepping what already runs: in
    WAL mode a read never waits for a writer). Everything else goes to the thread: BEGIN
    IMMEDIATE itself, a write that begins its own transaction, a read outside one,
    PRAGMAs, closing the connection."""

    _holds_write_lock = False

    def _cannot_wait(self, connection: sqlite3.Connection, call: Any) -> bool:
        if not connection.in_transaction:
            self._holds_write_lock = False
        owner, name = getattr(call, "__self__", None), getattr(call, "__name__", "")
        if isinstance(owner, sqlite3.Cursor):
            if name in ("execute", "executemany"):
                return self._holds_write_lock
            return name in ("fetchone", "fetchmany", "fetchall", "close")
        if owner is connection:
            if name in ("commit", "rollback"):
                return self._holds_write_lock or not connection.in_transaction
            return name == "cursor"
        return False

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        connection = self._connection
        if connection is not None and self._running and self._cannot_wait(connection, fn):
            return fn(*args, **kwargs)
        result = await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        if getattr(fn, "__name__", "") == "execute" and args and args[0] == BEGIN_IMMEDIATE:
            self._holds_write_lock = True
        return result


BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"


def _sqlite_on_the_loop(database: str) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    async def connect() -> aiosqlite.Connection:
        # Used from the loop and from its own thread, one call at a time (SQLAlchemy awaits
        # each): the check for the thread that made it does not apply.
        connection = _SqliteOnTheLoop(
            lambda: sqlite3.connect(database, check_same_thread=False), iter_chunk_size=64
        )
        connection._thread.daemon = True  # as SQLAlchemy's dialect does: exit never waits
        return await connection

    return connect


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.query:
            kwargs.setdefault("async_creator", _sqlite_on_the_loop(url.database))
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
                    await (await session.connection()).exec_driver_sql(BEGIN_IMMEDIATE)
                yield session
        finally:
            if close_later:
                closing = asyncio.create_task(session.close())
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)
            else:
                await session.close()


class _RolledBack(Exception):
    pass


@contextlib.asynccontextmanager
async def dry_run(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A transaction that writes and is always rolled back: what a write would do (a
    move's preview), decided by the same code, with nothing kept."""
    try:
        async with transaction(sessions) as session:
            yield session
            raise _RolledBack
    except _RolledBack:
        pass
