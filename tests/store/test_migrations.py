"""The Alembic migrations build the schema the models describe, and can be undone."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from store.migrate import downgrade, upgrade
from store.models import Base


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda c: inspect(c).get_table_names())
    return set(names) - {"alembic_version"}


async def test_the_migrations_match_the_models_and_go_down_and_up_again(
    database_url: str, engine: AsyncEngine
) -> None:
    assert await _tables(engine) == set(Base.metadata.tables)
    async with engine.connect() as connection:
        columns = await connection.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("enrolments")}
        )
    assert columns == {col.name for col in Base.metadata.tables["enrolments"].columns}
    downgrade(database_url, "base")
    assert await _tables(engine) == set()
    upgrade(database_url)
    assert await _tables(engine) == set(Base.metadata.tables)


async def test_on_sqlite_every_table_keeps_autoincrement_through_the_migrations(
    database_url: str, engine: AsyncEngine
) -> None:
    """SQLite's batch mode rebuilds tables from reflection, which loses AUTOINCREMENT: then
    the id of a deleted last row could be handed out again."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        )
        tables = {name: sql for name, sql in rows}
    missing = [n for n in Base.metadata.tables if "AUTOINCREMENT" not in tables[n]]
    assert missing == []
