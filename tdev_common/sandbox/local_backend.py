"""Backends that run a zygote runtime on this host (shared by the namespace and weak backends)."""

from __future__ import annotations

import abc
import asyncio
import compileall
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import structlog

from . import seccomp, wire
from .backend import Job, JobMode, Probe, SandboxBackend
from .child_job import ChildJob
from .child_session import ChildSession
from .errors import SandboxClosedError, SandboxError
from .outcome import Outcome, OutcomeKind
from .runtime import framing
from .runtime_process import MAX_PRELOAD_FRAME, ChildHandle, RuntimeDiedError, RuntimeProcess
from .settings import SandboxSettings

log = structlog.get_logger(__name__)

SANDBOX_DIR = Path(__file__).resolve().parent
RUNTIME_DIR = SANDBOX_DIR / "runtime"
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from runtime import nsinit; nsinit.main(sys.argv[2])"
EXEC_UID_OFFSET = 1000
# Code whose execution ended this way loaded fine and in time; only such code is loaded ahead.
_PRELOADABLE = frozenset({OutcomeKind.OK, OutcomeKind.ERROR, OutcomeKind.INVALID_OUTPUT})
_PRELOAD_MAX_SECONDS = 1.0


def compile_runtime() -> None:
    """Write the runtime's bytecode next to it if it is missing or stale (best effort: the directory may be
    read-only). The runtime runs with ``-B`` and never writes it itself; without it, every runtime start
    compiles its modules, and the compiler's garbage stays in the zygote's memory: about 1.2 MB more in every
    forker and execution process, which each fork copies the page tables of and each exit tears down."""
    with contextlib.suppress(OSError):
        compileall.compile_dir(RUNTIME_DIR, quiet=2, workers=1)


def python_executable(settings: SandboxSettings) -> str:
    """The real interpreter binary (a venv's python is a symlink to it; the runtime needs no site-packages)."""
    return os.path.realpath(settings.python_executable or sys.executable)


class LocalBackend(SandboxBackend, abc.ABC):
    """Runs jobs on execution processes of a runtime started from this process; restarts it if it dies."""

    def __init__(self, settings: SandboxSettings) -> None:
        super().__init__(settings)
        self._process: RuntimeProcess | None = None
        self._preloaded_modules = settings.preloaded_modules
        self._lock = asyncio.Lock()
        self._closed = False

    @abc.abstractmethod
    def runtime_config(self) -> dict[str, Any]:
        """The JSON configuration handed to the runtime's ``nsinit.main`` (see :meth:`seccomp_config`)."""

    def seccomp_config(self) -> dict[str, Any]:
        """The filter part of the runtime configuration: mode, the compiled program or why there is none."""
        mode = self.settings.seccomp
        if mode == "off":
            return {"seccomp_mode": "off"}
        try:
            program = seccomp.compile_filter()
        except seccomp.SeccompUnavailableError as exc:
            return {"seccomp_mode": mode, "seccomp_error": str(exc)}
        return {"seccomp_mode": mode, "seccomp_bpf": program.bpf.hex(), "seccomp_late_bpf": program.late_bpf.hex()}

    def seccomp_status(self) -> str:
        """``on (...)``, ``off`` or ``unavailable: reason``, as the running runtime reported it (before it
        runs: what the service could compile)."""
        if self._process is not None and self._process.info.get("seccomp"):
            status = str(self._process.info["seccomp"])
        elif self.settings.seccomp == "off":
            status = "off"
        else:
            try:
                seccomp.compile_filter()
                status = "on"
            except seccomp.SeccompUnavailableError as exc:
                status = f"unavailable: {exc}"
        return f"on ({seccomp.compile_filter().summary})" if status == "on" else status

    def argv(self, config: dict[str, Any]) -> list[str]:
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
        await asyncio.to_thread(compile_runtime)
        config = {**self.runtime_config(), "bytecode": self.settings.bytecode,
                  "preload_modules": sorted(self._preloaded_modules)}
        process = RuntimeProcess(self.argv, config, start_timeout=self.settings.start_timeout_seconds)
        info = await process.start()
        log.info("sandbox.runtime_started", backend=self.name, launcher_pid=process.pid, **info)
        if str(info.get("seccomp", "")).startswith("unavailable"):
            log.warning("sandbox.seccomp_unavailable", reason=info["seccomp"], message="no syscall filter")
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

    def _flavor(self, job: Job) -> str:
        return wire.flavor(job, self._preloaded_modules) if self.settings.async_pool_size > 0 else "sync"

    async def _take_child(self, job: Job, key: Hashable | None = None) -> tuple[RuntimeProcess, ChildHandle]:
        flavor = self._flavor(job)
        for attempt in range(2):
            process = await self._ensure_process()
            ready = process.try_take_child(flavor, key)
            if ready is not None:
                return process, ready
            try:
                handle = await asyncio.wait_for(process.take_child(flavor, key), self.settings.start_timeout_seconds)
                return process, handle
            except TimeoutError:
                log.error("sandbox.runtime_unresponsive", backend=self.name, launcher_pid=process.pid)
                process.kill()
            except RuntimeDiedError:
                pass
            if attempt:
                break
        raise SandboxError("the sandbox runtime could not provide an execution process")

    async def execute(self, job: Job) -> list[Outcome]:
        key = wire.preload_key(job) if self.settings.preload and job.mode is JobMode.RUN else None
        process, handle = await self._take_child(job, key)
        outcomes = await ChildJob(process, handle, job, self.settings.grace_seconds).run()
        if key is not None and outcomes[0].duration_seconds <= _PRELOAD_MAX_SECONDS and all(
            o.kind in _PRELOADABLE for o in outcomes
        ):
            flavor = self._flavor(job)
            pool = self.settings.pool_size if flavor == "sync" else self.settings.async_pool_size
            process.ran(flavor, key, lambda: _preload_frame(process, job), cap=pool - 1)
        return outcomes

    async def open_session(self, job: Job, *, idle_seconds: float, max_inputs: int) -> ChildSession | None:
        process, handle = await self._take_child(job)
        return ChildSession(process, handle, job, grace=self.settings.grace_seconds, idle_seconds=idle_seconds,
                            max_inputs=max_inputs)

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            if self._process is not None:
                await self._process.close()
                self._process = None


def _preload_frame(process: RuntimeProcess, job: Job) -> bytes:
    """With the bytecode while that fits the size a preload may have, else with the source alone."""
    bytecode = process.compiled(job.code)
    frame = wire.preload_frame(job, bytecode)
    return wire.preload_frame(job) if bytecode is not None and len(frame) > MAX_PRELOAD_FRAME else frame


def probe_runtime(backend: LocalBackend) -> Probe:
    """Start the runtime with a pool of one and report whether it came up and could make an isolated
    execution process (blocking; about 100 ms)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    config = {**backend.runtime_config(), "pool_size": 1, "async_pool_size": 0, "control_fd": theirs.fileno()}
    try:
        proc = subprocess.Popen(
            backend.argv(config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={},
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
    except OSError as exc:
        return Probe(False, f"{type(exc).__name__}: {exc}")
    finally:
        theirs.close()
    header: dict[str, Any] = {}
    try:
        ours.settimeout(15)
        for _ in range(2):  # "ready", then the first idle child (or its death)
            message, fds, _, _ = socket.recv_fds(ours, 65536, 2)
            for fd in fds:
                os.close(fd)
            header = framing.FrameBuffer(len(message) or 1).feed(message)[0][0] if message else {}
            if header.get("op") != "ready":
                break
    except (OSError, framing.FrameError, IndexError):
        header = {}
    finally:
        ours.close()
    try:
        _, stderr = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    if header.get("op") == "child":
        return Probe(True)
    if header.get("op") == "fatal":
        return Probe(False, str(header.get("error")))
    if header.get("op") == "exit":
        return Probe(False, f"an isolated execution process failed to start (wait status {header.get('status')})")
    return Probe(False, stderr.decode(errors="replace").strip()[:500] or f"exit status {proc.returncode}")
