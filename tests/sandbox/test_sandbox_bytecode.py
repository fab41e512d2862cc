"""Execution processes run the code object the service compiled (docs/sandbox.md, "Agent bytecode"), and
every outcome reads as it did when each process compiled its agent itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT

from tdev_common.sandbox import InspectResult, Limits, Outcome, Sandbox, SandboxSettings, agent_bytecode, wire

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

SAYS_SOURCE = """
class Says:
    def execute(self, inputs):
        return {"from": "source"}
"""
SAYS_BYTECODE = SAYS_SOURCE.replace('"source"', '"bytecode"')

AGENTS = {
    "ok": ("import json\nclass A:\n    def execute(self, inputs):\n        return {'n': json.dumps(inputs)}\n",
           {"x": 1}),
    "raises": ("def f(x):\n    raise ValueError(f'bad {x}')\n\nclass A:\n    def execute(self, inputs):\n"
               "        return f(inputs['x'])\n", {"x": 2}),
    "asserts": ("class A:\n    def execute(self, inputs):\n        assert inputs['x'] > 5, 'too small'\n"
                "        return {}\n", {"x": 3}),
    "syntax error": ("class A:\n    def execute(self, inputs)\n        return {}\n", {}),
    "warns while compiling": ("class A:\n    def execute(self, inputs):\n        return {'same': 1 is 1}\n", {}),
    "fails to load": ("raise RuntimeError('no')\nclass A:\n    def execute(self, inputs):\n        return {}\n",
                      {}),
    "async": ("import asyncio\nclass A:\n    async def execute(self, inputs):\n        await asyncio.sleep(0)\n"
              "        return {'async': True}\n", {}),
}


def _settings(**changes: object) -> SandboxSettings:
    base: dict[str, object] = {"uid_base": TEST_UID_BASE, "uid_count": TEST_UID_COUNT, "pool_size": 2,
                               "async_pool_size": 1, "timeout_seconds": 5.0, "preload": False}
    return SandboxSettings(**{**base, **changes})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandboxes() -> AsyncIterator[tuple[Sandbox, Sandbox]]:
    async with await Sandbox.start(_settings()) as with_bytecode, await Sandbox.start(
        _settings(bytecode=False)
    ) as compiling:
        yield with_bytecode, compiling


def _comparable(outcome: Outcome) -> tuple[object, ...]:
    error = outcome.error
    return (outcome.kind, outcome.output, error and (error.type, error.message, error.traceback), outcome.stdout,
            outcome.stderr)


@pytest.fixture
def says_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service compiles a different agent than the source it sends: what runs shows which one ran."""
    swapped = agent_bytecode.compiled(SAYS_BYTECODE)
    real = agent_bytecode.compiled

    def compiled(code: str) -> str | None:
        return swapped if code == SAYS_SOURCE else real(code)

    monkeypatch.setattr(agent_bytecode, "compiled", compiled)


@pytest.mark.usefixtures("says_bytecode")
async def test_the_process_runs_the_code_object_the_service_compiled(sandboxes: tuple[Sandbox, Sandbox]) -> None:
    with_bytecode, compiling = sandboxes
    assert (await with_bytecode.run(SAYS_SOURCE, {})).output == {"from": "bytecode"}
    assert (await compiling.run(SAYS_SOURCE, {})).output == {"from": "source"}  # switched off: compiled there
    outcomes = [o async for o in with_bytecode.session(SAYS_SOURCE).stream([{}, {}])]
    assert [o.output for o in outcomes] == [{"from": "bytecode"}] * 2


@pytest.mark.usefixtures("says_bytecode")
async def test_bytecode_for_another_interpreter_version_is_not_run(
    sandboxes: tuple[Sandbox, Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MAGIC", "0d0d0a0a")
    assert (await sandboxes[0].run(SAYS_SOURCE, {})).output == {"from": "source"}


async def test_a_preloaded_process_runs_the_bytecode_too(monkeypatch: pytest.MonkeyPatch) -> None:
    swapped = agent_bytecode.compiled(SAYS_BYTECODE)
    monkeypatch.setattr(agent_bytecode, "compiled", lambda code: swapped)
    async with await Sandbox.start(_settings(preload=True)) as sandbox:
        outputs = [(await sandbox.run(SAYS_SOURCE, {})).output for _ in range(6)]
    assert outputs == [{"from": "bytecode"}] * 6


@pytest.mark.parametrize("name", sorted(AGENTS))
async def test_outcomes_read_the_same_as_when_the_process_compiles(
    name: str, sandboxes: tuple[Sandbox, Sandbox]
) -> None:
    code, inputs = AGENTS[name]
    with_bytecode, compiling = sandboxes
    limits = Limits(timeout_seconds=5.0)
    ours, theirs = await with_bytecode.run(code, inputs, limits), await compiling.run(code, inputs, limits)
    assert _comparable(ours) == _comparable(theirs)
    inspected, inspected_compiling = await with_bytecode.inspect(code), await compiling.inspect(code)
    assert _inspection(inspected) == _inspection(inspected_compiling)


def _inspection(result: InspectResult) -> tuple[object, ...]:
    return (_comparable(result.outcome), result.class_name, result.capabilities, result.methods,
            result.async_execute)


async def test_code_whose_bytecode_would_not_fit_a_preload_is_preloaded_as_source() -> None:
    body = "".join(f"VALUE_{i} = {i} * 3 + {i}\n" for i in range(1200))  # about 30 KB of source
    code = "import time\nLOADED_AT = time.monotonic()\n" + body + (
        "class Big:\n    def execute(self, inputs):\n        return {'loaded_at': LOADED_AT, 'last': VALUE_1199}\n"
    )
    bytecode = agent_bytecode.compiled(code)
    assert bytecode is not None and len(code) < 60 * 1024 < len(code) + len(bytecode)
    async with await Sandbox.start(_settings(preload=True)) as sandbox:
        for _ in range(3):
            assert (await sandbox.run(code, {})).ok
        await asyncio.sleep(0.4)
        called_at = asyncio.get_running_loop().time()
        outcome = await sandbox.run(code, {})
    assert outcome.ok, outcome
    assert outcome.output is not None and outcome.output["last"] == 1199 * 4
    assert outcome.output["loaded_at"] < called_at - 0.2, "not preloaded"
