"""Preloading: after a streak of jobs of one agent, idle processes load its code before their inputs come
(docs/sandbox.md, "Preloading"). Each execution still gets a fresh process of its own, under its limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT

from tdev_common.sandbox import Limits, Outcome, OutcomeKind, Sandbox, SandboxSettings
from tdev_common.sandbox.runtime_process import ChildHandle, RuntimeProcess

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

# Reports when and where its module body ran, and how often execute ran in this process.
PROBE_AGENT = """
import os, time

LOADED_AT = time.monotonic()
LOADED_PID = os.getpid()
CALLS = []

class Probe:
    def execute(self, inputs):
        CALLS.append(1)
        if inputs.get("burn"):
            while True:
                pass
        if inputs.get("hoard"):
            hoard = bytearray(inputs["hoard"])
        return {"loaded_at": LOADED_AT, "loaded_pid": LOADED_PID, "pid": os.getpid(), "calls": len(CALLS)}

    def get_capabilities(self):
        return {}
"""

OTHER_AGENT = """
import os

class Other:
    def execute(self, inputs):
        return {"pid": os.getpid(), "n": inputs.get("n")}

    def get_capabilities(self):
        return {}
"""

# Fails to load, saying when: preloaded or not, the failure must read the same.
FAILING_LOAD_AGENT = """
import time

LOADED_AT = time.monotonic()
raise ValueError(f"cannot load (loaded at {LOADED_AT})")

class Never:
    def execute(self, inputs):
        return {}
"""

WAIT = 0.4  # long enough for the pool to have refilled and preloaded, however loaded the machine is


def _settings(**changes: object) -> SandboxSettings:
    base: dict[str, object] = {"uid_base": TEST_UID_BASE, "uid_count": TEST_UID_COUNT, "pool_size": 3,
                               "timeout_seconds": 5.0}
    return SandboxSettings(**{**base, **changes})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with await Sandbox.start(_settings()) as started:
        yield started


async def _run_after_wait(sandbox: Sandbox, code: str, inputs: dict[str, object],
                          limits: Limits | None = None) -> tuple[float, Outcome]:
    await asyncio.sleep(WAIT)
    called_at = asyncio.get_running_loop().time()
    return called_at, await sandbox.run(code, inputs, limits)


# Long enough to start preloading even in a pool whose earlier preloads (other tests') went unused (6), and
# for processes still holding other tests' code to give way (8).
STREAK = 9


async def _streak(sandbox: Sandbox, code: str, limits: Limits | None = None, runs: int = STREAK) -> None:
    for _ in range(runs):
        outcome = await sandbox.run(code, {}, limits)
        assert outcome.ok, outcome


async def test_a_streak_of_one_agent_is_loaded_ahead_in_the_process_that_runs_it(sandbox: Sandbox) -> None:
    await _streak(sandbox, PROBE_AGENT)
    pids = set()
    for _ in range(3):
        called_at, outcome = await _run_after_wait(sandbox, PROBE_AGENT, {})
        assert outcome.ok, outcome
        output = outcome.output
        assert output["loaded_at"] < called_at - WAIT / 2, "the module body ran only when the job came"
        assert output["loaded_pid"] == output["pid"], "loaded in one process, run in another"
        assert output["calls"] == 1, "a process ran more than one execution"
        pids.add(output["pid"])
    assert len(pids) == 3


async def test_preloading_can_be_switched_off() -> None:
    async with await Sandbox.start(_settings(preload=False)) as sandbox:
        await _streak(sandbox, PROBE_AGENT)
        called_at, outcome = await _run_after_wait(sandbox, PROBE_AGENT, {})
        assert outcome.ok, outcome
        assert outcome.output["loaded_at"] >= called_at - 0.05


async def test_other_code_runs_while_idle_processes_hold_preloaded_code(sandbox: Sandbox) -> None:
    await _streak(sandbox, PROBE_AGENT)
    await asyncio.sleep(WAIT)
    others = await asyncio.gather(*(sandbox.run(OTHER_AGENT, {"n": n}) for n in range(8)))
    assert [o.output["n"] for o in others if o.ok and o.output] == list(range(8)), others
    # The streak of the other agent takes the pool over; the first agent still runs, in fresh processes.
    _, outcome = await _run_after_wait(sandbox, OTHER_AGENT, {"n": 99})
    assert outcome.ok and outcome.output == {"pid": outcome.output["pid"], "n": 99}
    probe = await sandbox.run(PROBE_AGENT, {})
    assert probe.ok and probe.output is not None and probe.output["calls"] == 1, probe


async def test_a_batch_runs_in_one_preloaded_process(sandbox: Sandbox) -> None:
    await _streak(sandbox, PROBE_AGENT)
    await asyncio.sleep(WAIT)
    outcomes = await sandbox.run_batch(PROBE_AGENT, [{}, {}, {}])
    assert all(o.ok for o in outcomes), outcomes
    outputs = [o.output for o in outcomes if o.output is not None]
    assert [o["calls"] for o in outputs] == [1, 2, 3]
    assert len({o["pid"] for o in outputs}) == 1


async def test_the_job_limits_hold_in_a_preloaded_process(sandbox: Sandbox) -> None:
    limits = Limits(timeout_seconds=5.0, cpu_seconds=1.0, memory_bytes=256 * 1024 * 1024)
    await _streak(sandbox, PROBE_AGENT, limits)
    _, burnt = await _run_after_wait(sandbox, PROBE_AGENT, {"burn": True}, limits)
    assert burnt.kind is OutcomeKind.TIMEOUT and "CPU" in (burnt.detail or ""), burnt
    await _streak(sandbox, PROBE_AGENT, limits)
    _, hoarded = await _run_after_wait(sandbox, PROBE_AGENT, {"hoard": 512 * 1024 * 1024}, limits)
    assert hoarded.kind is OutcomeKind.MEMORY_EXCEEDED, hoarded


async def test_a_load_failure_in_a_preloaded_process_is_reported_as_without_preloading(sandbox: Sandbox) -> None:
    first = await sandbox.run(FAILING_LOAD_AGENT, {})
    await _streak_of_failures(sandbox)
    called_at, outcome = await _run_after_wait(sandbox, FAILING_LOAD_AGENT, {})
    for failed in (first, outcome):
        assert failed.kind is OutcomeKind.ERROR and failed.error is not None, failed
    error, first_error = outcome.error, first.error
    assert first_error is not None
    assert error.type == first_error.type == "ValueError"
    assert error.message.startswith("cannot load") and "<agent>" in error.traceback
    assert error.traceback.replace(error.message, "") == first_error.traceback.replace(first_error.message, "")
    loaded_at = float(error.message.rsplit(" ", 1)[1].rstrip(")"))
    assert loaded_at < called_at - WAIT / 2, "the failing load was not preloaded"


async def _streak_of_failures(sandbox: Sandbox) -> None:
    for _ in range(STREAK):
        outcome = await sandbox.run(FAILING_LOAD_AGENT, {})
        assert outcome.kind is OutcomeKind.ERROR, outcome


def _agent(n: int) -> str:
    return f"class Agent{n}:\n    def execute(self, inputs):\n        return {{'n': {n}}}\n"


async def test_short_runs_of_several_agents_stop_preloading_before_it_wastes_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs of three jobs of five agents: every preload would be for an agent whose run is ending; the pool
    stops after a few unused ones instead of dropping (and forking again) about two processes in three."""
    dropped: list[int] = []
    drop_idle = RuntimeProcess._drop_idle

    def counting(self: RuntimeProcess, handle: ChildHandle) -> None:
        if handle.preloaded is not None:
            dropped.append(handle.cid)
        drop_idle(self, handle)

    monkeypatch.setattr(RuntimeProcess, "_drop_idle", counting)
    agents = [_agent(n) for n in range(5)]
    async with await Sandbox.start(_settings(pool_size=4)) as sandbox:
        for index in range(90):
            outcome = await sandbox.run(agents[(index // 3) % 5], {})
            assert outcome.ok, outcome
        # Then a long run of one agent: preloading starts again.
        await _streak(sandbox, PROBE_AGENT)
        called_at, outcome = await _run_after_wait(sandbox, PROBE_AGENT, {})
    assert len(dropped) <= 8, f"{len(dropped)} preloaded processes dropped unused in 90 jobs"
    assert outcome.ok and outcome.output is not None, outcome
    assert outcome.output["loaded_at"] < called_at - WAIT / 2, "a long run of one agent was not preloaded"
