"""Shared fixtures: real Postgres and Redis (fail under CI=true when missing, skip otherwise), settings; test kinds."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tdev_common.config import CommonSettings

POSTGRES_HOST = os.environ.get("TDEV_TEST_PG_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("TDEV_TEST_PG_PORT", "5432"))
POSTGRES_USER = os.environ.get("TDEV_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("TDEV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
KINDS = ("unit", "integration", "mesh")
UNIT_DIR = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is of exactly one kind: tests/unit/ is ``unit`` by directory, any other module says its kind
    in its ``pytestmark`` (see tests/README.md). A module that forgets fails collection instead of silently
    dropping out of ``make test-unit`` or being run by it."""
    unmarked: set[str] = set()
    for item in items:
        if item.path.is_relative_to(UNIT_DIR):
            item.add_marker(pytest.mark.unit)
        kinds = {mark.name for mark in item.iter_markers() if mark.name in KINDS}
        if len(kinds) != 1:
            unmarked.add(f"{item.path.relative_to(config.rootpath)} ({', '.join(sorted(kinds)) or 'no kind'})")
    if unmarked:
        raise pytest.UsageError("each test module needs exactly one of pytest.mark.unit, .integration or .mesh "
                                "in its pytestmark: " + "; ".join(sorted(unmarked)))


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Under CI a missing Postgres/Redis is a failure, never a silent skip."""
    if _answers(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: tests that need it must not be skipped)")
    pytest.skip(message)


def _admin_url() -> str:
    return f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"


def _admin_execute(statement: str) -> None:
    """Runs one admin statement on the ``postgres`` database, off the test's event loop."""
    import asyncio
    import threading

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(_admin_url())
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _postgres_databases() -> Iterator[Callable[[], str]]:
    require_service("Postgres", POSTGRES_HOST, POSTGRES_PORT)
    created: list[str] = []

    def make() -> str:
        name = f"tdev_test_{uuid.uuid4().hex[:12]}"
        _admin_execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"

    yield make
    for name in created:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_postgres_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh, empty Postgres databases (dropped afterwards); returns their DSNs."""
    yield from _postgres_databases()


@pytest.fixture(scope="module")
def make_module_postgres() -> Iterator[Callable[[], str]]:
    """Like ``make_postgres_database``, for databases shared by the tests of one module."""
    yield from _postgres_databases()


@pytest.fixture
def postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """DSN of a fresh, empty Postgres database for this test."""
    return make_postgres_database()


@pytest.fixture
def redis_url() -> str:
    """URL of the real Redis; keys a test writes are namespaced by the code under test."""
    host, port = "127.0.0.1", 6379
    require_service("Redis", host, port)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test once on SQLite and once on a fresh Postgres database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite'}"
    factory: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return factory()


@pytest.fixture
def common_settings(tmp_path: Path) -> CommonSettings:
    """Embedded-mode settings with data under the test's temporary directory."""
    return CommonSettings(data_dir=tmp_path / "data", log_json=True)


@pytest.fixture
def unique() -> str:
    """A short unique token for names and namespaces."""
    return uuid.uuid4().hex[:10]
