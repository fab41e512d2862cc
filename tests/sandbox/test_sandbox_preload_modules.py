"""Preloaded modules: the async pool imports common standard-library modules once, before it forks, and
agents importing one run there without paying for the import (docs/sandbox.md, "Preloaded modules"). Each
execution still gets a fresh process: nothing a module holds is shared between executions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT

from tdev_common.sandbox import Limits, Sandbox, SandboxSettings

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

MIB = 1024 * 1024


def _probe(statement: str, module: str) -> str:
    """An agent that says whether ``module`` was loaded before its own ``statement`` imported it."""
    return f"""
import os, sys
HAD = {module!r} in sys.modules
{statement}

class Probe:
    def execute(self, inputs):
        return {{"had": HAD, "pid": os.getpid()}}
"""


RANDOM_AGENT = """
import random, tempfile, uuid

class Draw:
    def execute(self, inputs):
        with tempfile.NamedTemporaryFile() as handle:
            name = handle.name
        return {"random": random.random(), "uuid": str(uuid.uuid4()), "bits": random.getrandbits(64), "temp": name}
"""


def _settings(**changes: object) -> SandboxSettings:
    base: dict[str, object] = {"uid_base": TEST_UID_BASE, "uid_count": TEST_UID_COUNT, "pool_size": 2,
                               "async_pool_size": 2, "timeout_seconds": 5.0, "preload": False}
    return SandboxSettings(**{**base, **changes})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with await Sandbox.start(_settings()) as started:
        yield started


@pytest.mark.parametrize(
    ("statement", "module"),
    [("import dataclasses", "dataclasses"), ("from datetime import date, timedelta", "datetime"),
     ("import statistics as stats", "statistics"), ("import re, hashlib", "hashlib"),
     ("from urllib.parse import urlparse", "urllib.parse"), ("from urllib import parse", "urllib.parse"),
     ("def later():\n    import pathlib\n    return pathlib", "pathlib")],
)
async def test_an_agent_importing_a_preloaded_module_finds_it_loaded(
    sandbox: Sandbox, statement: str, module: str
) -> None:
    outcome = await sandbox.run(_probe(statement, module), {})
    assert outcome.ok, outcome
    assert outcome.output == {"had": True, "pid": outcome.output["pid"]}


async def test_an_agent_importing_none_of_them_runs_in_the_lean_pool(sandbox: Sandbox) -> None:
    outcome = await sandbox.run(_probe("import json", "dataclasses"), {})
    assert outcome.ok and outcome.output is not None and outcome.output["had"] is False


async def test_with_no_preload_modules_every_agent_imports_its_own() -> None:
    async with await Sandbox.start(_settings(preload_modules="")) as sandbox:
        outcome = await sandbox.run(_probe("import dataclasses", "dataclasses"), {})
    assert outcome.ok and outcome.output is not None and outcome.output["had"] is False


async def test_module_state_is_not_shared_between_executions(sandbox: Sandbox) -> None:
    draws = [await sandbox.run(RANDOM_AGENT, {}) for _ in range(6)]
    assert all(d.ok for d in draws), draws
    outputs = [d.output for d in draws if d.output is not None]
    for field in ("random", "uuid", "bits", "temp"):
        assert len({o[field] for o in outputs}) == len(outputs), f"two executions drew the same {field}"


async def test_a_module_that_cannot_be_imported_is_left_to_the_agent() -> None:
    async with await Sandbox.start(_settings(preload_modules="no_such_module_here,dataclasses")) as sandbox:
        loaded = await sandbox.run(_probe("import dataclasses", "dataclasses"), {})
        missing = await sandbox.run(_probe("import no_such_module_here", "no_such_module_here"), {})
    assert loaded.ok and loaded.output is not None and loaded.output["had"] is True
    assert missing.error is not None and missing.error.type == "ModuleNotFoundError", missing


async def test_the_smallest_memory_limit_still_fits_the_preloaded_pool(sandbox: Sandbox) -> None:
    outcome = await sandbox.run(_probe("import dataclasses", "dataclasses"), {}, Limits(memory_bytes=64 * MIB))
    assert outcome.ok, outcome
