"""The syscall filter of execution processes: denied syscalls fail with EPERM, everything else works,
the status is reported, and strict mode refuses to run without it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pyseccomp
import pytest
import pytest_asyncio
from sandbox_helpers import NORMAL_AGENT, TEST_UID_BASE, TEST_UID_COUNT, hostile

from tdev_common.sandbox import (
    IsolationUnavailableError,
    Limits,
    OutcomeKind,
    Sandbox,
    SandboxSettings,
    SandboxStartError,
    WeakIsolationRefusedError,
    seccomp,
)

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

SETTINGS = {"uid_base": TEST_UID_BASE, "uid_count": TEST_UID_COUNT, "pool_size": 1, "async_pool_size": 0}


def _numbers() -> dict[str, object]:
    native = pyseccomp.Arch.NATIVE
    syscalls = {name: pyseccomp.resolve_syscall(native, name) for name in seccomp.DENIED_SYSCALLS}
    return {
        "syscalls": {name: nr for name, nr in syscalls.items() if nr >= 0},
        "clone": pyseccomp.resolve_syscall(native, "clone"),
        "clone3": pyseccomp.resolve_syscall(native, "clone3"),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    started = await Sandbox.start(SandboxSettings(**SETTINGS, seccomp="strict"))  # type: ignore[arg-type]
    try:
        yield started
    finally:
        await started.close()


async def test_every_denied_syscall_fails_with_eperm(sandbox: Sandbox) -> None:
    numbers = _numbers()

    outcome = await sandbox.run(hostile("denied_syscalls"), numbers)

    assert outcome.kind is OutcomeKind.OK, outcome
    assert outcome.output is not None
    results = outcome.output["results"]
    denied: dict[str, int] = numbers["syscalls"]  # type: ignore[assignment]
    assert {name: results[name] for name in denied} == dict.fromkeys(denied, "EPERM")
    assert results["clone(CLONE_NEWUSER)"] == "EPERM"
    assert results["clone3"] == "ENOSYS"  # so that glibc falls back to clone(2), whose flags are checked
    assert len(denied) >= 45


async def test_ptrace_and_unshare_from_python_raise_permission_errors(sandbox: Sandbox) -> None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Agent:
    def execute(self, inputs):
        traced = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME: allowed to anyone without a filter
        unshared = libc.unshare(0)  # a no-op without a filter
        mounted = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
        return {"errors": [os.strerror(ctypes.get_errno()), traced, unshared, mounted]}
    def get_capabilities(self):
        return {}
"""
    outcome = await sandbox.run(code, {})

    assert outcome.output == {"errors": ["Operation not permitted", -1, -1, -1]}, outcome


async def test_fork_and_threads_still_work_under_the_filter(sandbox: Sandbox) -> None:
    code = """
import os, threading
class Agent:
    def execute(self, inputs):
        box = []
        thread = threading.Thread(target=lambda: box.append(threading.get_ident()))
        thread.start()
        thread.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        return {"thread_ran": len(box) == 1, "child_status": os.waitstatus_to_exitcode(status)}
    def get_capabilities(self):
        return {}
"""
    outcome = await sandbox.run(code, {}, Limits(max_processes=8))

    assert outcome.output == {"thread_ran": True, "child_status": 7}, outcome


async def test_normal_agents_run_and_the_status_is_reported(sandbox: Sandbox) -> None:
    outcome = await sandbox.run(NORMAL_AGENT, {"x": 21})

    assert outcome.output == {"doubled": 42}
    assert sandbox.isolation["seccomp"].startswith("on (")
    assert "seccomp on" in str(sandbox.isolation)


async def test_strict_mode_refuses_to_start_without_a_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> seccomp.SeccompProgram:
        raise seccomp.SeccompUnavailableError("no seccomp binding: test")

    monkeypatch.setattr(seccomp, "compile_filter", unavailable)
    settings = SandboxSettings(**SETTINGS, seccomp="strict", allow_weak_isolation=True)  # type: ignore[arg-type]

    with pytest.raises((SandboxStartError, IsolationUnavailableError, WeakIsolationRefusedError)) as raised:
        await Sandbox.start(settings)

    assert "seccomp is required" in str(raised.value)


async def test_auto_mode_runs_without_a_filter_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> seccomp.SeccompProgram:
        raise seccomp.SeccompUnavailableError("no seccomp binding: test")

    monkeypatch.setattr(seccomp, "compile_filter", unavailable)
    started = await Sandbox.start(SandboxSettings(**SETTINGS, seccomp="auto"))  # type: ignore[arg-type]
    try:
        outcome = await started.run(NORMAL_AGENT, {"x": 1})
        status = started.isolation["seccomp"]
    finally:
        await started.close()

    assert outcome.output == {"doubled": 2}
    assert status == "unavailable: no seccomp binding: test"


async def test_the_filter_is_compiled_once_per_process() -> None:
    seccomp.compile_filter.cache_clear()
    first = seccomp.compile_filter()

    assert seccomp.compile_filter() is first
    assert len(first.bpf) % 8 == 0
