"""`async with unchanged(sessions):` fails when the block changed any row of the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from store.models import Base
from store.session import SessionFactory


async def snapshot(sessions: SessionFactory) -> dict[str, list[tuple[Any, ...]]]:
    tables = {}
    async with sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = await session.execute(select(table).order_by(*table.primary_key.columns))
            tables[table.name] = [tuple(row) for row in rows]
    return tables


@asynccontextmanager
async def unchanged(sessions: SessionFactory) -> AsyncIterator[None]:
    before = await snapshot(sessions)
    yield
    after = await snapshot(sessions)
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"the store changed: {changed}"
