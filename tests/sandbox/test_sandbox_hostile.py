"""The hostile-agent corpus: every attack is contained with the right typed outcome, the service process
is unharmed, a normal agent runs right after, and no process is left behind."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sandbox_helpers import (
    NORMAL_AGENT,
    TEST_UID_BASE,
    TEST_UID_COUNT,
    descendants,
    host_processes,
    hostile,
    job_processes,
    wait_for,
)

from tdev_common.sandbox import Limits, Outcome, OutcomeKind, Sandbox, SandboxSettings

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

MIB = 1024 * 1024
SECRET_VAR = "TDEV_TEST_SANDBOX_SECRET"


@dataclass
class Host:
    """What the test planted on the host side for the attacks to look for."""

    secret: str
    canary_path: Path
    canary: str
    outside_path: Path
    listener: socket.socket

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def inputs(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "path": str(self.canary_path),
            "service_pid": os.getpid(),
        }

    def no_connection_arrived(self) -> bool:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return True
        conn.close()
        return False


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("host")
    canary = "canary-" + secrets.token_hex(16)
    canary_path = base / "canary.txt"
    canary_path.write_text(canary)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    secret = "secret-" + secrets.token_hex(16)
    os.environ[SECRET_VAR] = secret  # planted before the sandbox starts: nothing may inherit it
    try:
        yield Host(secret, canary_path, canary, base / "written-from-sandbox.txt", listener)
    finally:
        del os.environ[SECRET_VAR]
        listener.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(host: Host) -> AsyncIterator[Sandbox]:
    settings = SandboxSettings(
        uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, pool_size=2, work_dir_bytes=16 * MIB
    )
    before = descendants(os.getpid())
    sandbox = await Sandbox.start(settings)
    try:
        yield sandbox
    finally:
        await sandbox.close()
        assert await wait_for(lambda: not host_processes()), f"left behind: {host_processes()}"
        assert await wait_for(lambda: descendants(os.getpid()) <= before)


@dataclass
class Case:
    agent: str
    kind: OutcomeKind
    error_type: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Outcome, Host], Awaitable[None] | None] | None = None
    id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)


def _output(outcome: Outcome) -> dict[str, Any]:
    assert outcome.output is not None
    return outcome.output


def check_os_system(o: Outcome, h: Host) -> None:
    assert _output(o)["rc"] != 0
    assert _output(o)["created"] is False


def check_cpu_limit(o: Outcome, h: Host) -> None:
    assert "CPU" in o.detail


def check_segfault(o: Outcome, h: Host) -> None:
    assert o.signal == signal.SIGSEGV


def check_flood(o: Outcome, h: Host) -> None:
    assert o.stdout_truncated and o.stderr_truncated
    assert 0 < len(o.stdout) <= 64 * 1024 and 0 < len(o.stderr) <= 64 * 1024
    assert _output(o) == {"done": True}


def check_no_connection(o: Outcome, h: Host) -> None:
    assert h.no_connection_arrived()


def check_environment(o: Outcome, h: Host) -> None:
    assert set(_output(o)["environ"]) <= {"HOME", "TMPDIR", "LANG", "PATH"}
    assert SECRET_VAR not in json.dumps(_output(o))


def check_parent_environ(o: Outcome, h: Host) -> None:
    out = _output(o)
    assert out["leaked"] == {}
    assert out["visible_pids"] == [out["me"]]  # hidepid=2: nothing but itself is visible


def check_nothing_written(o: Outcome, h: Host) -> None:
    assert _output(o)["written"] == []
    assert not h.outside_path.exists()
    assert not Path("/pwned").exists()


def check_efbig(o: Outcome, h: Host) -> None:
    assert o.error is not None and "too large" in o.error.message.lower()


def check_emfile(o: Outcome, h: Host) -> None:
    assert o.error is not None and "Too many open files" in o.error.message


def check_kill_parent(o: Outcome, h: Host) -> None:
    assert "sent" not in _output(o)["results"].values()


async def check_no_process_left(o: Outcome, h: Host) -> None:
    """Nothing of the execution's uid (it reports its uid) outlives its answer: what it forked, or itself."""
    uid = TEST_UID_BASE + _output(o)["uid"]
    # the sweep runs in other processes: give it a moment (with the event loop running)
    assert await wait_for(lambda: not [p for p in host_processes() if p.uid == uid], timeout=2.0)


def check_not_forged(o: Outcome, h: Host) -> None:
    assert o.output is None, o


def check_not_finite(o: Outcome, h: Host) -> None:
    assert o.output is None and ("finite" in o.detail or "out of range" in o.detail), o


def check_unstorable(o: Outcome, h: Host) -> None:
    assert o.output is None and o.detail.startswith(("output", "a key of output", "execute returned")), o


def check_no_escalation(o: Outcome, h: Host) -> None:
    out = _output(o)
    assert "succeeded" not in out["results"].values(), out
    assert out["uid"] >= 1000
    assert out["cap_eff"] == "0000000000000000"
    assert out["no_new_privs"] == "1"


CASES = [
    Case("fork_bomb", OutcomeKind.ERROR, "BlockingIOError"),
    Case("fork_bomb_allowed", OutcomeKind.TIMEOUT, limits={"max_processes": 16, "timeout_seconds": 1.0}),
    Case("os_system", OutcomeKind.OK, check=check_os_system),
    Case("subprocess_shell", OutcomeKind.ERROR, "BlockingIOError"),
    Case("subprocess_shell", OutcomeKind.ERROR, "FileNotFoundError", {"max_processes": 8}, id="no_shell_in_view"),
    Case("memory_bomb", OutcomeKind.MEMORY_EXCEEDED, limits={"memory_bytes": 256 * MIB}),
    Case("memory_creep", OutcomeKind.MEMORY_EXCEEDED, limits={"memory_bytes": 256 * MIB}),
    Case("cpu_loop", OutcomeKind.TIMEOUT, limits={"timeout_seconds": 1.0}),
    Case("cpu_loop", OutcomeKind.TIMEOUT, None, {"cpu_seconds": 1, "timeout_seconds": 20}, check_cpu_limit, "cpu"),
    Case("sleep_past_deadline", OutcomeKind.TIMEOUT, limits={"timeout_seconds": 0.5}),
    Case("deep_recursion", OutcomeKind.ERROR, "RecursionError"),
    Case("segfault", OutcomeKind.KILLED, check=check_segfault),
    Case("stdout_flood", OutcomeKind.OK, check=check_flood),
    Case("huge_return", OutcomeKind.OUTPUT_TOO_LARGE),
    Case("non_json_return", OutcomeKind.INVALID_OUTPUT),
    Case("non_dict_return", OutcomeKind.INVALID_OUTPUT),
    Case("tcp_connect", OutcomeKind.ERROR, "OSError", check=check_no_connection),
    Case("dns_lookup", OutcomeKind.ERROR, "socket.gaierror"),
    Case("env_secret", OutcomeKind.OK, check=check_environment),
    Case("parent_environ", OutcomeKind.OK, check=check_parent_environ),
    Case("canary_read", OutcomeKind.ERROR, "FileNotFoundError"),
    Case("write_outside", OutcomeKind.OK, check=check_nothing_written),
    Case("fill_disk", OutcomeKind.ERROR, "OSError", {"max_file_bytes": 64 * MIB}),
    Case("big_file", OutcomeKind.ERROR, "OSError", {"max_file_bytes": 8 * MIB}, check_efbig),
    Case("fd_exhaust", OutcomeKind.ERROR, "OSError", check=check_emfile),
    Case("kill_parent", OutcomeKind.OK, check=check_kill_parent),
    Case("setsid_double_fork", OutcomeKind.OK, None, {"max_processes": 8}, check_no_process_left),
    Case("setsid_outlive_deadline", OutcomeKind.TIMEOUT, limits={"max_processes": 8, "timeout_seconds": 1.0}),
    Case("ignore_sigterm", OutcomeKind.TIMEOUT, limits={"timeout_seconds": 0.5}),
    Case("thread_bomb", OutcomeKind.ERROR, "RuntimeError"),
    Case("forged_frames", OutcomeKind.INVALID_OUTPUT),
    Case("forged_huge_frame", OutcomeKind.OUTPUT_TOO_LARGE),
    Case("hard_exit", OutcomeKind.ERROR, "ProcessExit"),
    Case("escalate", OutcomeKind.OK, check=check_no_escalation),
    Case("forged_success_then_raise", OutcomeKind.INVALID_OUTPUT, check=check_not_forged),
    Case("forged_two_frames", OutcomeKind.INVALID_OUTPUT, check=check_not_forged),
    Case("forged_wrong_index", OutcomeKind.INVALID_OUTPUT, check=check_not_forged, inputs={"forge_index": 1}),
    Case("forged_then_hide_pipe", OutcomeKind.ERROR, "ProcessExit", check=check_not_forged),
    Case("forged_then_exit_nonzero", OutcomeKind.ERROR, "ProcessExit", check=check_not_forged),
    Case("forged_done_then_spin", OutcomeKind.OK, check=check_no_process_left),
    *(
        Case("forged_nan_frame", OutcomeKind.INVALID_OUTPUT, None, {}, check_not_finite, f"forged_{v}", {"value": v})
        for v in ("nan", "inf", "overflow", "bigint")
    ),
    *(
        Case("forged_unstorable_frame", OutcomeKind.INVALID_OUTPUT, check=check_unstorable, id=v, inputs={"variant": v})
        for v in ("nul_value", "nul_key", "surrogate", "deep", "list")
    ),
    *(
        Case("nan_return", OutcomeKind.INVALID_OUTPUT, check=check_not_forged, id=f"return_{v}", inputs={"value": v})
        for v in ("nan", "inf", "-inf")
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id or c.agent for c in CASES])
async def test_hostile_agent_is_contained(sandbox: Sandbox, host: Host, case: Case) -> None:
    limits = Limits(**{"timeout_seconds": 5.0, **case.limits})

    outcome = await sandbox.run(hostile(case.agent), {**host.inputs(), **case.inputs}, limits)

    assert outcome.kind is case.kind, outcome
    if case.error_type is not None:
        assert outcome.error is not None and outcome.error.type == case.error_type, outcome
    if case.check is not None:
        checked = case.check(outcome, host)
        if checked is not None:
            await checked
    dumped = repr(outcome)
    assert host.secret not in dumped and host.canary not in dumped
    assert await wait_for(lambda: not job_processes()), f"left behind: {job_processes()}"
    follow_up = await sandbox.run(NORMAL_AGENT, {"x": 21})
    assert follow_up.kind is OutcomeKind.OK and follow_up.output == {"doubled": 42}


async def test_fill_disk_leaves_the_next_execution_an_empty_work_dir(sandbox: Sandbox) -> None:
    filled = await sandbox.run(hostile("fill_disk"), {}, Limits(max_file_bytes=64 * MIB))
    looker = """
import os
class Looker:
    def execute(self, inputs):
        return {"cwd": os.getcwd(), "files": os.listdir("."), "tmp": os.listdir("/tmp")}
    def get_capabilities(self):
        return {}
"""
    seen = await sandbox.run(looker, {})

    assert filled.kind is OutcomeKind.ERROR and filled.error is not None and "space" in filled.error.message
    assert seen.output == {"cwd": "/tmp", "files": [], "tmp": []}


async def test_forged_result_for_another_input_of_a_batch_is_invalid_and_the_rest_still_run(sandbox: Sandbox) -> None:
    code = hostile("forged_wrong_index")

    outcomes = await sandbox.run_batch(code, [{"x": 1}, {"x": 2, "forge_index": 2}, {"x": 3}, {"x": 4}])

    assert [o.kind for o in outcomes] == [OutcomeKind.OK, OutcomeKind.INVALID_OUTPUT, OutcomeKind.OK, OutcomeKind.OK]
    assert [o.output for o in outcomes] == [{"real": 1}, None, {"real": 3}, {"real": 4}]
    assert "input 2" in outcomes[1].detail and "input 1" in outcomes[1].detail


async def test_a_result_forged_for_an_earlier_input_of_a_batch_voids_that_input_too(sandbox: Sandbox) -> None:
    # Input 0 got two results (its own, then the forged one): neither can be trusted. Input 1 reruns alone
    # in a fresh process, where its forged result for "input 0" is a second result for itself.
    outcomes = await sandbox.run_batch(hostile("forged_wrong_index"), [{"x": 1}, {"x": 2, "forge_index": 0}])

    assert [o.kind for o in outcomes] == [OutcomeKind.INVALID_OUTPUT, OutcomeKind.INVALID_OUTPUT]
    assert outcomes[0].output is None and outcomes[1].output is None


async def test_forged_success_then_raise_in_a_batch_is_never_reported_as_success(sandbox: Sandbox) -> None:
    outcomes = await sandbox.run_batch(hostile("forged_success_then_raise"), [{}, {}])

    assert [o.kind for o in outcomes] == [OutcomeKind.INVALID_OUTPUT] * 2
    assert all(o.output is None for o in outcomes)
