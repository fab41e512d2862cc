"""Lifecycle: cancellation, runtime death and restart, isolation choice, separation of concurrent runs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import ClassVar

import pytest
import structlog
from sandbox_helpers import (
    NORMAL_AGENT,
    TEST_UID_BASE,
    descendants,
    host_processes,
    hostile,
    job_processes,
    wait_for,
)

from tdev_common.sandbox import (
    IsolationUnavailableError,
    OutcomeKind,
    Probe,
    Sandbox,
    SandboxSettings,
    WeakIsolationRefusedError,
)
from tdev_common.sandbox.local_backend import LocalBackend
from tdev_common.sandbox.namespace_backend import NamespaceBackend
from tdev_common.sandbox.weak_backend import WeakBackend

pytestmark = pytest.mark.mesh  # real servers or subprocesses


class NamespacesUnavailable(NamespaceBackend):
    """Simulates a host where namespaces cannot be created (e.g. ECS Fargate)."""

    name: ClassVar[str] = "namespaces"

    @classmethod
    def probe(cls, settings: SandboxSettings) -> Probe:
        return Probe(False, "simulated: no user namespaces")


def zygote_pid(sandbox: Sandbox) -> int:
    assert isinstance(sandbox.backend, LocalBackend)
    launcher = sandbox.backend.runtime_pid
    assert launcher is not None
    (pid,) = (int(p) for p in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split())
    return pid


async def test_cancelling_a_run_kills_its_process_promptly(settings: SandboxSettings) -> None:
    async with await Sandbox.start(settings) as sandbox:
        task = asyncio.create_task(sandbox.run(hostile("sleep_past_deadline"), {}))
        assert await wait_for(lambda: bool(job_processes()), timeout=5)

        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gone = await wait_for(lambda: not job_processes(), timeout=2)
        elapsed = time.monotonic() - started

        assert gone and elapsed < 0.5, f"still running after {elapsed:.3f}s: {job_processes()}"
        assert (await sandbox.run(NORMAL_AGENT, {"x": 1})).output == {"doubled": 2}


async def test_cancelling_a_batch_kills_its_process_and_forked_children(settings: SandboxSettings) -> None:
    from tdev_common.sandbox import Limits

    async with await Sandbox.start(settings) as sandbox:
        code = hostile("setsid_outlive_deadline")
        task = asyncio.create_task(sandbox.run_batch(code, [{}, {}], Limits(max_processes=8, timeout_seconds=30)))
        assert await wait_for(lambda: len(job_processes()) >= 2, timeout=5)

        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gone = await wait_for(lambda: not job_processes(), timeout=2)

        assert gone and time.monotonic() - started < 0.5, job_processes()


async def test_zygote_death_between_runs_is_repaired_transparently(settings: SandboxSettings) -> None:
    async with await Sandbox.start(settings) as sandbox:
        assert (await sandbox.run(NORMAL_AGENT, {"x": 1})).ok
        os.kill(zygote_pid(sandbox), signal.SIGKILL)
        assert await wait_for(lambda: not [p for p in host_processes() if p.uid != TEST_UID_BASE])

        outcome = await sandbox.run(NORMAL_AGENT, {"x": 2})

        assert outcome.kind is OutcomeKind.OK and outcome.output == {"doubled": 4}


async def test_zygote_death_during_a_run_gives_killed_then_recovers(settings: SandboxSettings) -> None:
    async with await Sandbox.start(settings) as sandbox:
        task = asyncio.create_task(sandbox.run(hostile("sleep_past_deadline"), {}))
        assert await wait_for(lambda: bool(job_processes()), timeout=5)
        os.kill(zygote_pid(sandbox), signal.SIGKILL)

        outcome = await task

        assert outcome.kind is OutcomeKind.KILLED
        assert "runtime" in outcome.detail
        assert (await sandbox.run(NORMAL_AGENT, {"x": 3})).output == {"doubled": 6}


async def test_close_leaves_no_process_behind(settings: SandboxSettings) -> None:
    before = descendants(os.getpid())
    sandbox = await Sandbox.start(settings)
    runs = [sandbox.run(hostile("sleep_past_deadline"), {}) for _ in range(3)]
    tasks = [asyncio.create_task(r) for r in runs]
    assert await wait_for(lambda: len(job_processes()) == 3, timeout=5)

    await sandbox.close()

    assert await wait_for(lambda: not host_processes(), timeout=2), host_processes()
    assert await wait_for(lambda: descendants(os.getpid()) <= before, timeout=2)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(not isinstance(o, BaseException) and o.kind is OutcomeKind.KILLED for o in outcomes), outcomes


async def test_weak_isolation_is_refused_when_namespaces_are_unavailable(settings: SandboxSettings) -> None:
    with pytest.raises(WeakIsolationRefusedError, match="TDEV_SANDBOX_ALLOW_WEAK_ISOLATION") as refused:
        await Sandbox.start(settings, backends=[NamespacesUnavailable, WeakBackend])

    assert "simulated: no user namespaces" in str(refused.value)


async def test_no_backend_at_all_raises_isolation_unavailable(settings: SandboxSettings) -> None:
    with pytest.raises(IsolationUnavailableError):
        await Sandbox.start(settings, backends=[NamespacesUnavailable])


async def test_weak_isolation_runs_with_a_loud_warning_when_allowed() -> None:
    settings = SandboxSettings.for_embedded(uid_base=TEST_UID_BASE, pool_size=1)
    with structlog.testing.capture_logs() as logs:
        sandbox = await Sandbox.start(settings, backends=[NamespacesUnavailable, WeakBackend])
    connect = """
import socket
class Connector:
    def execute(self, inputs):
        socket.socket().connect(("127.0.0.1", inputs["port"]))
        return {}
    def get_capabilities(self):
        return {}
"""
    try:
        network = await sandbox.run(connect, {"port": 9})
        env = await sandbox.run(hostile("env_secret"), {})
        normal = await sandbox.run(NORMAL_AGENT, {"x": 5})
    finally:
        await sandbox.close()

    assert sandbox.isolation["level"] == "weak"
    assert any(entry["log_level"] == "warning" and "WEAK" in entry["event"] for entry in logs)
    assert normal.output == {"doubled": 10}
    assert network.kind is OutcomeKind.ERROR and network.error is not None
    assert network.error.type == "PermissionError"
    assert env.output is not None and set(env.output["environ"]) <= {"HOME", "TMPDIR", "LANG", "PATH"}
    assert await wait_for(lambda: not host_processes(), timeout=2), host_processes()


async def test_concurrent_executions_cannot_see_or_signal_each_other(settings: SandboxSettings) -> None:
    victim = """
import os, time
class Victim:
    def execute(self, inputs):
        with open("secret.txt", "w") as f:
            f.write("victim-secret")
        time.sleep(inputs["seconds"])
        return {"pid": os.getpid(), "uid": os.getuid(), "alive": True}
    def get_capabilities(self):
        return {}
"""
    attacker = """
import os, signal
class Attacker:
    def execute(self, inputs):
        visible = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        signalled, read = [], []
        for pid in range(1, 400):
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                signalled.append(pid)
            except OSError:
                pass
            for name in ("environ", "cmdline", "cwd/secret.txt", "root/tmp/secret.txt"):
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as f:
                        read.append(f.read().decode(errors="replace"))
                except OSError:
                    pass
        return {"visible": visible, "me": os.getpid(), "uid": os.getuid(), "signalled": signalled,
                "read": read, "tmp": os.listdir("/tmp")}
    def get_capabilities(self):
        return {}
"""
    async with await Sandbox.start(settings) as sandbox:
        victim_run = asyncio.create_task(sandbox.run(victim, {"seconds": 1.5}))
        assert await wait_for(lambda: bool(job_processes()), timeout=5)

        attack = await sandbox.run(attacker, {})
        victim_outcome = await victim_run

    out = attack.output or {}
    assert attack.kind is OutcomeKind.OK, attack
    assert out["visible"] == [out["me"]]
    assert out["signalled"] == [] and out["read"] == [] and out["tmp"] == []
    assert victim_outcome.kind is OutcomeKind.OK and victim_outcome.output is not None
    assert victim_outcome.output["uid"] != out["uid"]
    assert "victim-secret" not in repr(attack)


async def test_pool_stays_at_its_configured_size(settings: SandboxSettings) -> None:
    async with await Sandbox.start(settings) as sandbox:
        outcomes = await asyncio.gather(*(sandbox.run(NORMAL_AGENT, {"x": i}) for i in range(30)))
        await sandbox.run(hostile("segfault"), {})
        expected = settings.pool_size + settings.async_pool_size

        def idle() -> int:
            return sum(1 for p in host_processes() if p.comm == "tdev-idle")

        settled = await wait_for(lambda: idle() == expected and not job_processes(), timeout=5)
        await asyncio.sleep(0.2)

        assert all(o.ok for o in outcomes)
        assert settled and idle() == expected, (idle(), expected)
