"""SQLite writers of one process take turns, those past their last check first."""

from __future__ import annotations

import asyncio

from store.session import _Turns


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
