"""Helpers for the remote-tier tests: real sandbox worker processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT, HostProcess, host_processes, wait_for

from tdev_common.grpc_client import ClientSecurity
from tdev_common.sandbox import Sandbox, SandboxSettings
from tdev_common.sandbox.remote_backend import RemoteBackend
from tests.support.ports import free_port

SERVICE = "tdev.sandbox.v1.SandboxService"
# Each worker on this host gets its own half of the test uid range: two runtimes sharing uids could signal
# each other's executions (and a tree sweep of one would hit the other's).
WORKER_UID_COUNT = TEST_UID_COUNT // 4  # four slots


@dataclass
class WorkerProcess:
    """One ``python -m tdev_common.sandbox.worker`` child with its log file."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    slot: int

    @property
    def uid_range(self) -> tuple[int, int]:
        """Host uids of this worker's runtime and executions."""
        low = TEST_UID_BASE + self.slot * WORKER_UID_COUNT
        return low, low + WORKER_UID_COUNT

    def processes(self) -> list[HostProcess]:
        """Live processes of this worker's sandbox (runtime, idle children, jobs)."""
        return host_processes(*self.uid_range)

    def job_processes(self) -> list[HostProcess]:
        """Processes running a job. By name: a child being forked is briefly neither idle nor named, and
        taking it for a job would kill the worker before the job was even sent."""
        return [p for p in self.processes() if p.comm == "tdev-job"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crashed host would: the worker gets no chance to clean up."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_worker(
    log_dir: Path, slot: int = 0, *, inherit_env: bool = False, extra_env: dict[str, str] | None = None
) -> WorkerProcess:
    """Start a worker in uid slot ``slot`` (0 to 3). Its environment is minimal unless ``inherit_env``."""
    port = free_port()
    base: dict[str, str] = dict(os.environ) if inherit_env else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env = {
        **base,
        "TDEV_SANDBOX_WORKER_PORT": str(port),
        "TDEV_SANDBOX_UID_BASE": str(TEST_UID_BASE + slot * WORKER_UID_COUNT),
        "TDEV_SANDBOX_UID_COUNT": str(WORKER_UID_COUNT),
        "TDEV_SANDBOX_POOL_SIZE": "2",
        "TDEV_SANDBOX_WORKER_GRACE_SECONDS": "2",
        "TDEV_LOG_JSON": "true",
        "TDEV_LOG_LEVEL": "DEBUG",
        **(extra_env or {}),
    }
    env.pop("TDEV_SANDBOX_REMOTE_ADDRESSES", None)
    log_path = log_dir / f"worker-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tdev_common.sandbox.worker"], env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return WorkerProcess(port, process, log_path, slot)


async def wait_serving(worker: WorkerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited {worker.process.returncode}:\n{worker.log_text()[-3000:]}")
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"worker {worker.address} not SERVING:\n{worker.log_text()[-3000:]}")


def remote_settings(*workers: WorkerProcess | str, **overrides: object) -> SandboxSettings:
    addresses = ",".join(w if isinstance(w, str) else w.address for w in workers)
    values: dict[str, object] = {"remote_addresses": addresses, "timeout_seconds": 5.0, **overrides}
    return SandboxSettings(**values)  # type: ignore[arg-type]


async def remote_sandbox(*workers: WorkerProcess | str, **overrides: object) -> Sandbox:
    """A Sandbox over the remote backend only (insecure loopback channels)."""
    settings = remote_settings(*workers, **overrides)

    class LoopbackRemote(RemoteBackend):
        def __init__(self, settings: SandboxSettings) -> None:
            super().__init__(settings, ClientSecurity())

    return await Sandbox.start(settings, backends=[LoopbackRemote])


@contextlib.asynccontextmanager
async def serving_workers(log_dir: Path, slots: Sequence[int],
                          extra_env: dict[str, str] | None = None) -> AsyncIterator[list[WorkerProcess]]:
    """Workers in uid ``slots``, serving; stopped on exit, and none of their processes left."""
    workers = [start_worker(log_dir, slot, extra_env=extra_env) for slot in slots]
    try:
        await asyncio.gather(*(wait_serving(worker) for worker in workers))
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        assert await wait_for(lambda: not any(worker.processes() for worker in workers))


@contextlib.contextmanager
def spare_worker(log_dir: Path, slot: int = 2) -> Iterator[WorkerProcess]:
    """A worker of one test's own, for tests that kill it (not waited for: the test decides when)."""
    worker = start_worker(log_dir, slot)
    try:
        yield worker
    finally:
        if worker.process.poll() is None:
            worker.kill()
