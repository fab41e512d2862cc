"""Transient Postgres conditions (shutdown, start-up, too many clients, ...) reach callers as UNAVAILABLE."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tdev_common.errors import Unavailable, translate
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, _admin_execute, require_service
from tests.support.servers import private_postgres

pytestmark = pytest.mark.mesh  # real servers or subprocesses


async def _error_of(url: str, statement: str = "SELECT 1") -> BaseException:
    engine = create_async_engine(url, pool_pre_ping=False)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    except BaseException as error:
        return error
    finally:
        await engine.dispose()
    raise AssertionError(f"{statement!r} did not fail")


def _sqlstate(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(error, "sqlstate", None)


async def test_admin_shutdown_of_the_session_is_unavailable() -> None:
    require_service("Postgres", POSTGRES_HOST, POSTGRES_PORT)
    url = f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            sleeping = asyncio.create_task(connection.execute(text("SELECT pg_sleep(30)")))
            await asyncio.sleep(0.3)
            # What a Postgres restart does to every session: FATAL 57P01 terminating connection.
            await asyncio.to_thread(_admin_execute, f"SELECT pg_terminate_backend({pid})")
            with pytest.raises(sa_exc.DBAPIError) as caught:
                await sleeping
    finally:
        await engine.dispose()
    # asyncpg reports the FATAL 57P01 as the connection closing mid-operation (08003) or as 57P01 itself.
    assert _sqlstate(caught.value) in ("57P01", "08003", "08006")
    mapped = translate(caught.value)
    assert isinstance(mapped, Unavailable)
    assert mapped.code == grpc.StatusCode.UNAVAILABLE
    assert mapped.reason == "DATABASE_UNAVAILABLE"


async def test_too_many_clients_is_unavailable() -> None:
    require_service("Postgres", POSTGRES_HOST, POSTGRES_PORT)
    role = f"tdev_limited_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_admin_execute, f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        error = await _error_of(f"postgresql+asyncpg://{role}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres")
    finally:
        await asyncio.to_thread(_admin_execute, f'DROP ROLE IF EXISTS "{role}"')
    assert _sqlstate(error) == "53300"
    assert isinstance(translate(error), Unavailable)


async def test_a_shutting_down_database_is_unavailable() -> None:
    with private_postgres() as server:
        holder = create_async_engine(server.dsn())
        async with holder.connect() as held:
            await held.execute(text("SELECT 1"))
            # A smart shutdown waits for the open session; meanwhile new connections get 57P03.
            await asyncio.to_thread(server.stop, "smart", False)
            await asyncio.sleep(0.3)
            error = await _error_of(server.dsn())
        await holder.dispose()
    assert _sqlstate(error) == "57P03"
    mapped = translate(error)
    assert isinstance(mapped, Unavailable)
    assert "retry" in mapped.message


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "55P03", "57014", "25006", "08006", "53100", "58030"])
def test_every_transient_sqlstate_is_unavailable(sqlstate: str) -> None:
    class DriverError(Exception):
        sqlstate = ""

    orig = DriverError("transient")
    orig.sqlstate = sqlstate
    assert isinstance(translate(sa_exc.DBAPIError("SELECT 1", {}, orig)), Unavailable)


def test_a_constraint_violation_is_not_unavailable() -> None:
    class DriverError(Exception):
        sqlstate = "23505"

    assert translate(sa_exc.IntegrityError("INSERT", {}, DriverError("duplicate key"))) is None
