"""SQLite: writers of one process take turns, those past their last check first; what
cannot wait for a lock runs on the event loop, what can runs in the connection's thread."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from store.models import Company
from store.session import _Turns, create_engine, create_session_factory, transaction


async def test_urgent_writers_go_first_and_a_cancelled_waiter_wedges_nobody() -> None:
    turns, order = _Turns(), []

    async def write(name: str, *, urgent: bool) -> None:
        async with turns.turn(urgent=urgent):
            order.append(name)
            await asyncio.sleep(0)

    async with turns.turn(urgent=False):
        starting = asyncio.create_task(write("starting", urgent=False))
        gone = asyncio.create_task(write("cancelled", urgent=True))
        finishing = asyncio.create_task(write("finishing", urgent=True))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(starting, finishing), 1)
    assert order == ["finishing", "starting"]
    async with asyncio.timeout(1), turns.turn(urgent=False):
        pass  # free again


@pytest.fixture
async def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    path = tmp_path / "nurture.db"
    shutil.copy(sqlite_template, path)
    engine = create_engine(f"sqlite:///{path}")

    def thread_function(connection: Any, _record: Any) -> None:
        # SQLite calls it where the statement runs: which thread ran it, seen from inside.
        connection.create_function("running_thread", 0, threading.get_ident)

    event.listen(engine.sync_engine, "connect", thread_function)
    yield engine
    await engine.dispose()


async def test_a_write_transaction_runs_its_statements_on_the_loop_and_its_begin_in_the_thread(
    sqlite_engine: AsyncEngine,
) -> None:
    sessions = create_session_factory(sqlite_engine)
    loop_thread = threading.get_ident()
    async with transaction(sessions) as session:
        inside = await session.scalar(text("SELECT running_thread()"))
    async with sessions() as session:
        outside = await session.scalar(text("SELECT running_thread()"))
    assert inside == loop_thread
    assert outside != loop_thread  # a read outside a write transaction: the thread's


async def test_a_writer_waiting_for_another_process_lock_leaves_the_loop_running(
    sqlite_engine: AsyncEngine,
) -> None:
    sessions = create_session_factory(sqlite_engine)
    database = sqlite_engine.url.database
    assert database is not None
    async with sessions() as session:  # connected: the file is in WAL mode from now on
        await session.execute(text("SELECT 1"))
    other = sqlite3.connect(database, isolation_level=None)  # the API's process, say
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE companies SET name = name")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def write() -> int:
        async with transaction(sessions) as session:
            session.add(Company(name="Acme", time_zone="Europe/Paris"))
        async with sessions() as session:
            return await session.scalar(select(func.count()).select_from(Company)) or 0

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(write())
    try:
        await asyncio.sleep(0.5)
        assert not writing.done()  # it waits for the lock...
        assert ticks >= 20  # ...in its thread, while the loop goes on
        async with asyncio.timeout(2), sessions() as session:  # and readers are not held
            assert await session.scalar(select(func.count()).select_from(Company)) == 0
        other.commit()
        assert await asyncio.wait_for(writing, 5) == 1
    finally:
        ticking.cancel()
        other.close()
