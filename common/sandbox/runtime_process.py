"""Service-side handle on one running sandbox runtime: spawn it, exchange frames, notice its death."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import wire
from .errors import SandboxStartError
from .outcome import Outcome
from .runtime import framing

log = structlog.get_logger(__name__)

_STDERR_LINES = 200


_PF_EXITING = 0x4
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _dying(pid: int) -> bool:
    """True if ``pid`` is gone, a zombie, exiting, or has a SIGKILL pending."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        return True
    if fields[0] in (b"Z", b"X") or int(fields[6]) & _PF_EXITING:
        return True
    for key in (b"ShdPnd:", b"SigPnd:"):
        start = status.find(key)
        if start >= 0 and int(status[start + len(key) :].split(None, 1)[0], 16) & _SIGKILL_BIT:
            return True
    return False


@dataclass
class PendingJob:
    """Results of one job as they arrive; ``done`` resolves when the zygote finished it or died."""

    outcomes: list[Outcome] = field(default_factory=list)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    runtime_died: bool = False


class RuntimeProcess:
    """One launcher + zygote process tree and the framed pipes to it."""

    def __init__(self, argv: Sequence[str], *, start_timeout: float) -> None:
        self._argv = list(argv)
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, PendingJob] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._alive = False
        self._zygote_pid: int | None = None
        self.info: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        """Whether the runtime is up. Also looks at the zygote itself: a zygote that was just killed may not
        have closed its pipe yet, and a job sent to it now would be lost."""
        if self._alive and self._zygote_pid is not None and _dying(self._zygote_pid):
            self._alive = False
        return self._alive

    @property
    def pid(self) -> int | None:
        """Host pid of the launcher (the zygote is its only child)."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> dict[str, Any]:
        """Spawn the runtime and wait for its ``ready`` message.

        Raises:
            SandboxStartError: it reported a fatal error, exited, or did not answer in time.
        """
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            start_new_session=True,
        )
        try:
            header, _ = await asyncio.wait_for(self._read_frame(), self._start_timeout)
        except (asyncio.IncompleteReadError, TimeoutError) as exc:
            stderr = await self._drain_stderr_quickly()
            await self.close()
            raise SandboxStartError(f"sandbox runtime did not start: {stderr or type(exc).__name__}") from exc
        if header.get("op") != "ready":
            await self.close()
            raise SandboxStartError(f"sandbox runtime failed to start: {header.get('error', header)}")
        self.info = header.get("info", {})
        self._zygote_pid = self._find_zygote()
        self._alive = True
        self._tasks = [
            asyncio.create_task(self._read_results(), name="sandbox-results"),
            asyncio.create_task(self._log_stderr(), name="sandbox-stderr"),
        ]
        return self.info

    def _find_zygote(self) -> int | None:
        """Host pid of the zygote: the launcher's only child in namespace mode, the launcher itself if weak."""
        assert self._proc is not None
        launcher = self._proc.pid
        try:
            with open(f"/proc/{launcher}/task/{launcher}/children") as f:
                children = f.read().split()
        except OSError:
            return None
        return int(children[0]) if len(children) == 1 else launcher

    async def _drain_stderr_quickly(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(self._proc.stderr.read(4096), 0.5)
            return data.decode(errors="replace").strip()
        return ""

    async def _read_frame(self) -> tuple[dict[str, Any], bytes]:
        assert self._proc is not None and self._proc.stdout is not None
        prefix = await self._proc.stdout.readexactly(framing.PREFIX_SIZE)
        head_len, payload_len = framing.lengths(prefix)
        data = await self._proc.stdout.readexactly(head_len + payload_len)
        buffer = framing.FrameBuffer(len(prefix) + len(data))
        ((header, payload),) = buffer.feed(prefix + data)
        return header, payload

    async def _read_results(self) -> None:
        try:
            while True:
                header, payload = await self._read_frame()
                pending = self._pending.get(header.get("id", -1))
                if pending is None:
                    continue
                if header.get("op") == "result":
                    pending.outcomes.append(wire.outcome_from_frame(header, payload))
                    pending.progress.set()
                    if header.get("done"):
                        self._finish(header["id"])
        except (asyncio.IncompleteReadError, ConnectionError, framing.FrameError, ValueError, KeyError):
            pass
        finally:
            self._alive = False
            for job_id, pending in list(self._pending.items()):
                pending.runtime_died = True
                self._finish(job_id)
            if self._proc is not None and self._proc.returncode is None:
                self._kill()

    def _finish(self, job_id: int) -> None:
        pending = self._pending.pop(job_id, None)
        if pending is not None and not pending.done.done():
            pending.done.set_result(None)
            pending.progress.set()

    async def _log_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for _ in range(_STDERR_LINES):
            line = await self._proc.stderr.readline()
            if not line:
                return
            log.warning("sandbox.runtime_stderr", line=line.decode(errors="replace").rstrip()[:500])
        await self._proc.stderr.read()

    async def submit(self, job_id: int, frame: bytes) -> PendingJob:
        """Send a job frame; the caller must :meth:`cancel` it if it stops waiting."""
        assert self._proc is not None and self._proc.stdin is not None
        pending = PendingJob()
        self._pending[job_id] = pending
        if not self._alive:
            pending.runtime_died = True
            self._finish(job_id)
            return pending
        self._proc.stdin.write(frame)
        with contextlib.suppress(ConnectionError):
            await self._proc.stdin.drain()
        return pending

    def cancel(self, job_id: int) -> None:
        """Tell the zygote to kill the job's processes now (synchronous: safe inside cancellation)."""
        if self._pending.pop(job_id, None) is None or not self._alive:
            return
        assert self._proc is not None and self._proc.stdin is not None
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._proc.stdin.write(wire.cancel_frame(job_id))

    def _kill(self) -> None:
        # The zygote has PR_SET_PDEATHSIG(SIGKILL): killing the launcher takes down the whole pid namespace.
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)

    def kill(self) -> None:
        """Kill the runtime at once (used when it stops answering)."""
        self._alive = False
        self._kill()

    async def close(self, timeout: float = 2.0) -> None:
        """Close the control pipe (the zygote kills every child and exits), then make sure it is gone."""
        self._alive = False
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            self._kill()
            await proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
