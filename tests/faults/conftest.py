"""Fault suite: figures measured by the tests are printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.servers import PostgresServer, RedisServer, private_postgres, private_redis

_FIGURES: list[tuple[str, float, str]] = []


@pytest.fixture
def figure() -> Callable[[str, float, str], None]:
    """Records one measured figure (name, value, unit) for the end-of-run fault report."""

    def record(name: str, value: float, unit: str) -> None:
        _FIGURES.append((name, value, unit))

    return record


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own that it may kill or pause."""
    with private_redis() as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A Postgres cluster of this test's own that it may stop and restart."""
    with private_postgres() as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for name, value, unit in _FIGURES:
        terminalreporter.write_line(f"{name:<70} {value:10.3f} {unit}")
