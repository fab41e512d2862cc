"""The sandbox API: run (sync and async agents), inspect, run_batch, limits, outputs and validation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sandbox_helpers import NORMAL_AGENT, hostile

from tdev_common.sandbox import (
    Limits,
    OutcomeKind,
    Sandbox,
    SandboxClosedError,
    SandboxSettings,
    describe_isolation,
)

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

ASYNC_AGENT = """
import asyncio

class Sleeper:
    async def execute(self, inputs):
        await asyncio.sleep(0.01)
        results = await asyncio.gather(*(self.square(n) for n in inputs["numbers"]))
        return {"squares": list(results)}

    async def square(self, n):
        await asyncio.sleep(0)
        return n * n

    def get_capabilities(self):
        return {"name": "sleeper", "async": True}

    def _private(self):
        return None
"""

# Remembers state across inputs of one process, reports its pid, and misbehaves on demand.
BATCH_AGENT = """
import os, time, ctypes

class Counter:
    def __init__(self):
        self.calls = 0

    def execute(self, inputs):
        self.calls += 1
        action = inputs.get("action")
        if action == "raise":
            raise ValueError("bad input " + str(inputs.get("n")))
        if action == "crash":
            ctypes.string_at(8)
        if action == "hang":
            time.sleep(60)
        return {"n": inputs["n"], "pid": os.getpid(), "calls": self.calls}

    def get_capabilities(self):
        return {}
"""

BROKEN_INIT = """
class Broken:
    def __init__(self):
        raise RuntimeError("cannot start")

    def execute(self, inputs):
        return {}

    def get_capabilities(self):
        return {}
"""

HANGING_INIT = """
import time

class Slow:
    def __init__(self):
        time.sleep(60)

    def execute(self, inputs):
        return {}

    def get_capabilities(self):
        return {}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT

    settings = SandboxSettings(uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, pool_size=2)
    async with await Sandbox.start(settings) as sandbox:
        yield sandbox


async def test_run_sync_agent_returns_ok_with_output_duration_and_memory(sandbox: Sandbox) -> None:
    outcome = await sandbox.run(NORMAL_AGENT, {"x": 21})

    assert outcome.kind is OutcomeKind.OK
    assert outcome.output == {"doubled": 42}
    assert 0 < outcome.duration_seconds < 5
    assert outcome.peak_memory_bytes > 1024 * 1024


async def test_run_async_agent_awaits_execute(sandbox: Sandbox) -> None:
    outcome = await sandbox.run(ASYNC_AGENT, {"numbers": [1, 2, 3]})

    assert outcome.kind is OutcomeKind.OK
    assert outcome.output == {"squares": [1, 4, 9]}


async def test_run_captures_stdout_and_stderr(sandbox: Sandbox) -> None:
    code = """
import sys
class Talker:
    def execute(self, inputs):
        print("hello", inputs["name"])
        print("warning", file=sys.stderr)
        return {}
    def get_capabilities(self):
        return {}
"""
    outcome = await sandbox.run(code, {"name": "world"})

    assert outcome.stdout == "hello world\n"
    assert outcome.stderr == "warning\n"
    assert not outcome.stdout_truncated


async def test_run_reports_agent_exception_with_trimmed_traceback(sandbox: Sandbox) -> None:
    outcome = await sandbox.run(NORMAL_AGENT, {"y": 1})

    assert outcome.kind is OutcomeKind.ERROR
    assert outcome.error is not None
    assert outcome.error.type == "KeyError"
    assert outcome.error.message == "'x'"
    assert 'File "<agent>", line 4, in execute' in outcome.error.traceback
    assert "runtime" not in outcome.error.traceback  # only the agent's own frames


async def test_run_reports_syntax_error_as_error(sandbox: Sandbox) -> None:
    outcome = await sandbox.run("class Broken(:\n    pass\n", {})

    assert outcome.kind is OutcomeKind.ERROR
    assert outcome.error is not None and outcome.error.type == "SyntaxError"


async def test_run_without_agent_class_reports_load_error(sandbox: Sandbox) -> None:
    outcome = await sandbox.run("x = 1\n", {})

    assert outcome.kind is OutcomeKind.ERROR
    assert outcome.error is not None and outcome.error.type == "AgentLoadError"
    assert "exactly one class" in outcome.error.message


async def test_run_rejects_non_object_inputs(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="JSON objects"):
        await sandbox.run(NORMAL_AGENT, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON values"):
        await sandbox.run(NORMAL_AGENT, {"x": object()})


async def test_run_output_is_capped_by_limits(sandbox: Sandbox) -> None:
    code = """
class Big:
    def execute(self, inputs):
        return {"data": "x" * inputs["n"]}
    def get_capabilities(self):
        return {}
"""
    limits = Limits(max_output_bytes=10_000)

    small = await sandbox.run(code, {"n": 5_000}, limits)
    large = await sandbox.run(code, {"n": 20_000}, limits)

    assert small.kind is OutcomeKind.OK
    assert large.kind is OutcomeKind.OUTPUT_TOO_LARGE


async def test_run_nan_output_is_invalid(sandbox: Sandbox) -> None:
    code = """
class NotANumber:
    def execute(self, inputs):
        return {"value": float("nan")}
    def get_capabilities(self):
        return {}
"""
    outcome = await sandbox.run(code, {})

    assert outcome.kind is OutcomeKind.INVALID_OUTPUT


async def test_inspect_reports_class_capabilities_and_methods(sandbox: Sandbox) -> None:
    result = await sandbox.inspect(ASYNC_AGENT)

    assert result.ok
    assert result.class_name == "Sleeper"
    assert result.capabilities == {"name": "sleeper", "async": True}
    assert result.methods == ("execute", "get_capabilities", "square")
    assert result.async_execute is True


async def test_inspect_sync_agent(sandbox: Sandbox) -> None:
    result = await sandbox.inspect(NORMAL_AGENT)

    assert result.ok and result.class_name == "Doubler" and result.async_execute is False


async def test_inspect_non_dict_capabilities_is_invalid_output(sandbox: Sandbox) -> None:
    code = """
class Odd:
    def execute(self, inputs):
        return {}
    def get_capabilities(self):
        return ["not", "a", "dict"]
"""
    result = await sandbox.inspect(code)

    assert not result.ok
    assert result.outcome.kind is OutcomeKind.INVALID_OUTPUT


async def test_inspect_broken_code_reports_error(sandbox: Sandbox) -> None:
    result = await sandbox.inspect(BROKEN_INIT)

    assert result.outcome.kind is OutcomeKind.ERROR
    assert result.outcome.error is not None and result.outcome.error.message == "cannot start"


async def test_inspect_hostile_code_is_contained(sandbox: Sandbox) -> None:
    result = await sandbox.inspect(hostile("segfault").replace("def execute", "def get_capabilities_x"))

    assert result.outcome.kind is OutcomeKind.ERROR  # no execute(): not an agent


async def test_run_batch_runs_every_input_in_one_process(sandbox: Sandbox) -> None:
    outcomes = await sandbox.run_batch(BATCH_AGENT, [{"n": i} for i in range(5)])

    assert [o.kind for o in outcomes] == [OutcomeKind.OK] * 5
    outputs = [o.output or {} for o in outcomes]
    assert [out["n"] for out in outputs] == [0, 1, 2, 3, 4]
    assert len({out["pid"] for out in outputs}) == 1
    assert [out["calls"] for out in outputs] == [1, 2, 3, 4, 5]


async def test_run_batch_bad_input_in_the_middle_gets_its_own_outcome(sandbox: Sandbox) -> None:
    inputs = [{"n": 0}, {"n": 1, "action": "raise"}, {"n": 2}]

    outcomes = await sandbox.run_batch(BATCH_AGENT, inputs)

    assert [o.kind for o in outcomes] == [OutcomeKind.OK, OutcomeKind.ERROR, OutcomeKind.OK]
    assert outcomes[1].error is not None and outcomes[1].error.message == "bad input 1"
    assert outcomes[0].output is not None and outcomes[2].output is not None
    assert outcomes[0].output["pid"] == outcomes[2].output["pid"]


async def test_run_batch_continues_in_a_fresh_process_after_crash_and_timeout(sandbox: Sandbox) -> None:
    inputs = [
        {"n": 0},
        {"n": 1, "action": "crash"},
        {"n": 2},
        {"n": 3, "action": "hang"},
        {"n": 4},
    ]

    outcomes = await sandbox.run_batch(BATCH_AGENT, inputs, Limits(timeout_seconds=0.5))

    kinds = [o.kind for o in outcomes]
    assert kinds == [OutcomeKind.OK, OutcomeKind.KILLED, OutcomeKind.OK, OutcomeKind.TIMEOUT, OutcomeKind.OK]
    pids = [o.output["pid"] for o in outcomes if o.output is not None]
    assert len(set(pids)) == 3  # a fresh process after the crash and after the timeout
    assert [o.output["calls"] for o in outcomes if o.output is not None] == [1, 1, 1]


async def test_run_batch_load_failure_answers_every_input(sandbox: Sandbox) -> None:
    outcomes = await sandbox.run_batch(BROKEN_INIT, [{}, {}, {}])

    assert [o.kind for o in outcomes] == [OutcomeKind.ERROR] * 3


async def test_run_batch_load_timeout_answers_every_input_once(sandbox: Sandbox) -> None:
    outcomes = await sandbox.run_batch(HANGING_INIT, [{}, {}, {}], Limits(timeout_seconds=0.3))

    assert [o.kind for o in outcomes] == [OutcomeKind.TIMEOUT] * 3
    assert sum(o.duration_seconds for o in outcomes) < 2  # one deadline, not three


async def test_run_batch_empty_returns_empty(sandbox: Sandbox) -> None:
    assert await sandbox.run_batch(NORMAL_AGENT, []) == []


async def test_crash_of_one_execution_does_not_affect_concurrent_ones(sandbox: Sandbox) -> None:
    import asyncio

    runs = [sandbox.run(hostile("segfault"), {}) for _ in range(3)]
    runs += [sandbox.run(NORMAL_AGENT, {"x": i}) for i in range(6)]

    outcomes = await asyncio.gather(*runs)

    assert [o.kind for o in outcomes[:3]] == [OutcomeKind.KILLED] * 3
    assert [o.output for o in outcomes[3:]] == [{"doubled": 2 * i} for i in range(6)]


async def test_many_concurrent_runs_each_get_their_own_answer(sandbox: Sandbox) -> None:
    import asyncio

    outcomes = await asyncio.gather(*(sandbox.run(NORMAL_AGENT, {"x": i}) for i in range(40)))

    assert [o.output for o in outcomes] == [{"doubled": 2 * i} for i in range(40)]


async def test_limits_reject_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="timeout_seconds"):
        Limits(timeout_seconds=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=1024)


async def test_settings_read_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDEV_SANDBOX_POOL_SIZE", "7")
    monkeypatch.setenv("TDEV_SANDBOX_TIMEOUT_SECONDS", "2.5")

    settings = SandboxSettings()

    assert settings.pool_size == 7 and settings.timeout_seconds == 2.5
    assert Limits.from_settings(settings).timeout_seconds == 2.5
    assert SandboxSettings.for_embedded().allow_weak_isolation is True
    assert SandboxSettings().allow_weak_isolation is False


async def test_describe_isolation_reports_namespaces(sandbox: Sandbox) -> None:
    description = describe_isolation()

    assert description["level"] == "namespaces"
    assert "network" in description and str(description).startswith("namespaces:")
    assert sandbox.isolation["backend"] == "namespaces"


async def test_execution_runs_unprivileged_in_an_empty_work_dir(sandbox: Sandbox) -> None:
    code = """
import os, socket
class Who:
    def execute(self, inputs):
        return {
            "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "files": os.listdir("."),
            "hostname": socket.gethostname(), "root": sorted(os.listdir("/")),
            "writable_root": os.access("/", os.W_OK), "ppid": os.getppid(),
        }
    def get_capabilities(self):
        return {}
"""
    outcome = await sandbox.run(code, {})

    out = outcome.output or {}
    assert out["uid"] >= 1000 and out["gid"] == out["uid"]
    assert out["cwd"] == "/tmp" and out["files"] == []
    assert out["hostname"] == "sandbox"
    assert out["writable_root"] is False
    assert out["root"] == sorted(["dev", "lib", "lib64", "opt", "proc", "root", "tmp", "usr"])
    assert os.getpid() != out["ppid"]


async def test_closed_sandbox_refuses_work() -> None:
    from sandbox_helpers import TEST_UID_BASE

    sandbox = await Sandbox.start(SandboxSettings(uid_base=TEST_UID_BASE, pool_size=1))
    await sandbox.close()
    await sandbox.close()  # idempotent

    with pytest.raises(SandboxClosedError):
        await sandbox.run(NORMAL_AGENT, {"x": 1})
