"""Migrations: each service creates only its own schema, and a second run changes nothing."""

from __future__ import annotations

import importlib

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tdev_cli.mesh import SERVICES
from tdev_common.db import create_engine, migrate

pytestmark = pytest.mark.integration  # real databases, Redis or moto

SYSTEM_SCHEMAS = {"information_schema", "public", "pg_toast"}


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[str, str]]]:
    """Schemas -> (table, column) pairs: enough to see any change a migration makes."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.text(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                "WHERE table_schema NOT LIKE 'pg_%' AND table_schema <> 'information_schema' "
                "ORDER BY 1, 2, 3"
            )
        )
        schemas = await connection.execute(
            sa.text(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name NOT LIKE 'pg_%' AND schema_name <> 'information_schema'"
            )
        )
        result: dict[str, list[tuple[str, str]]] = {name: [] for (name,) in schemas}
        for schema, table, column in rows:
            result.setdefault(schema, []).append((table, column))
    return result


async def test_each_service_creates_only_its_own_schema_and_reruns_change_nothing(postgres_url: str) -> None:
    seen: set[str] = set()
    for service in SERVICES:
        config = importlib.import_module(f"{service.module}.config")
        server = importlib.import_module(f"{service.module}.server")
        schema = config.SCHEMA
        engine = create_engine(postgres_url, schema)
        try:
            before = await snapshot(engine)
            revision = await migrate(engine, server.MIGRATIONS, schema)
            after = await snapshot(engine)
            new_schemas = set(after) - set(before)
            assert new_schemas == {schema}, f"{service.name} created {new_schemas}"
            assert ("alembic_version", "version_num") in after[schema]
            for other in seen:
                assert after[other] == before[other], f"{service.name} touched schema {other}"
            assert after.get("public", []) == before.get("public", [])

            again = await migrate(engine, server.MIGRATIONS, schema)
            assert again == revision
            assert await snapshot(engine) == after
        finally:
            await engine.dispose()
        seen.add(schema)
    assert seen == {"registry", "workflow", "builder", "evolution"}


async def test_sqlite_migration_is_idempotent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for service in SERVICES:
        config = importlib.import_module(f"{service.module}.config")
        server = importlib.import_module(f"{service.module}.server")
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / service.name}.sqlite", config.SCHEMA)
        try:
            first = await migrate(engine, server.MIGRATIONS, config.SCHEMA)
            second = await migrate(engine, server.MIGRATIONS, config.SCHEMA)
            assert first == second and first is not None
        finally:
            await engine.dispose()
