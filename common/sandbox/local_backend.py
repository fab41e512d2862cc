"""Backends that run a zygote runtime on this host (shared by the namespace and weak backends)."""

from __future__ import annotations

import abc
import asyncio
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import structlog

from . import wire
from .backend import Job, Probe, SandboxBackend
from .errors import SandboxClosedError
from .outcome import Outcome, OutcomeKind
from .runtime import framing
from .runtime_process import PendingJob, RuntimeProcess
from .settings import SandboxSettings

log = structlog.get_logger(__name__)

SANDBOX_DIR = Path(__file__).resolve().parent
RUNTIME_DIR = SANDBOX_DIR / "runtime"
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from runtime import nsinit; nsinit.main(sys.argv[2])"
EXEC_UID_OFFSET = 1000


def python_executable(settings: SandboxSettings) -> str:
    """The real interpreter binary (a venv's python is a symlink to it; the runtime needs no site-packages)."""
    return os.path.realpath(settings.python_executable or sys.executable)


class LocalBackend(SandboxBackend, abc.ABC):
    """Runs jobs through a zygote started from this process; restarts it if it dies."""

    def __init__(self, settings: SandboxSettings) -> None:
        super().__init__(settings)
        self._process: RuntimeProcess | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    @abc.abstractmethod
    def runtime_config(self) -> dict[str, Any]:
        """The JSON configuration handed to the runtime's ``nsinit.main``."""

    def argv(self, config: dict[str, Any] | None = None) -> list[str]:
        config = self.runtime_config() if config is None else config
        exe = python_executable(self.settings)
        return [exe, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOT, str(SANDBOX_DIR), json.dumps(config)]

    @property
    def runtime_pid(self) -> int | None:
        """Host pid of the runtime launcher, or None when not running."""
        return self._process.pid if self._process is not None and self._process.alive else None

    async def start(self) -> None:
        async with self._lock:
            self._process = await self._spawn()

    async def _spawn(self) -> RuntimeProcess:
        process = RuntimeProcess(self.argv(), start_timeout=self.settings.start_timeout_seconds)
        info = await process.start()
        log.info("sandbox.runtime_started", backend=self.name, launcher_pid=process.pid, **info)
        return process

    async def _ensure_process(self) -> RuntimeProcess:
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")
        process = self._process
        if process is not None and process.alive:
            return process
        async with self._lock:
            if self._closed:
                raise SandboxClosedError("the sandbox is closed")
            if self._process is None or not self._process.alive:
                if self._process is not None:
                    log.warning("sandbox.runtime_restarting", backend=self.name, reason="runtime exited")
                    await self._process.close(timeout=0.5)
                self._process = await self._spawn()
            return self._process

    async def execute(self, job: Job) -> list[Outcome]:
        process = await self._ensure_process()
        job_id = next(self._ids)
        frame = wire.job_frame(job_id, job)
        pending: PendingJob | None = None
        try:
            pending = await process.submit(job_id, frame)
            await self._wait(process, pending, job)
        except BaseException:
            process.cancel(job_id)
            raise
        return self._collect(pending, job)

    async def _wait(self, process: RuntimeProcess, pending: PendingJob, job: Job) -> None:
        """Wait for the job; the zygote enforces deadlines, this is only a backstop if it stops answering."""
        backstop = job.limits.timeout_seconds + self.settings.grace_seconds
        while not pending.done.done():
            pending.progress.clear()
            try:
                await asyncio.wait_for(pending.progress.wait(), backstop)
            except TimeoutError:
                log.error("sandbox.runtime_unresponsive", backend=self.name, launcher_pid=process.pid)
                process.kill()
                pending.runtime_died = True
                return

    def _collect(self, pending: PendingJob, job: Job) -> list[Outcome]:
        outcomes = pending.outcomes[: len(job.inputs)]
        if len(outcomes) < len(job.inputs) and (pending.runtime_died or not outcomes):
            outcomes.append(
                Outcome(kind=OutcomeKind.KILLED, detail="the sandbox runtime exited during the execution")
            )
        return outcomes

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            if self._process is not None:
                await self._process.close()
                self._process = None


def probe_runtime(backend: LocalBackend) -> Probe:
    """Start the runtime with an empty pool and no work, and report whether it came up (blocking)."""
    config = {**backend.runtime_config(), "pool_size": 0, "async_pool_size": 0}
    try:
        done = subprocess.run(backend.argv(config), input=b"", capture_output=True, env={}, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"{type(exc).__name__}: {exc}")
    buffer = framing.FrameBuffer(1 << 20)
    try:
        frames = buffer.feed(done.stdout)
    except framing.FrameError:
        frames = []
    if frames and frames[0][0].get("op") == "ready":
        return Probe(True)
    if frames and frames[0][0].get("op") == "fatal":
        return Probe(False, str(frames[0][0].get("error")))
    return Probe(False, done.stderr.decode(errors="replace").strip()[:500] or f"exit status {done.returncode}")
