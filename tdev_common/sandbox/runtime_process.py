"""Service-side handle on one running sandbox runtime: spawn it, keep its idle children, notice its death.

The runtime hands over each idle execution process as two pipe ends (SCM_RIGHTS on the control socket);
jobs are then written to and read from that process directly (see child_job.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import agent_bytecode
from .errors import SandboxError, SandboxStartError
from .runtime import framing

log = structlog.get_logger(__name__)

_STDERR_LINES = 200
_PF_EXITING = 0x4
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)
RUNTIME_DIED = -1  # exit status given to children whose runtime died before reporting theirs
_PRELOAD_STREAK = 2  # jobs in a row of the same code before idle processes load it ahead
# Jobs in a row of one code after which idle processes holding other code give way to it, one per job: a long
# run of one agent takes the pool.
_TAKEOVER_STREAK = 8
# Preloading is a bet: a process that loaded code no job then came for is dropped, a fork wasted, while a
# process used only moved its load earlier. A pool stops preloading while more than a quarter of its latest
# preloads were dropped unused (several agents in short runs), and starts again after a streak of this many
# jobs of one code.
_PRELOAD_RECORD = 16
_RETRY_STREAK = 6
MAX_PRELOAD_FRAME = 60 * 1024  # fits an empty pipe: the write never blocks and is never partial


class RuntimeDiedError(SandboxError):
    """The runtime exited; the caller may retry on a fresh one."""


@dataclass
class ChildHandle:
    """One idle (then running) execution process: our ends of its job and result pipes."""

    cid: int
    flavor: str
    job_w: int
    res_r: int
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    preloaded: Hashable | None = None  # the key of the job it loaded ahead (docs/sandbox.md, "Preloading")

    def close(self) -> None:
        for fd in (self.job_w, self.res_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def _dying(pid: int) -> bool:
    """True if ``pid`` is gone, a zombie, exiting, or has a SIGKILL pending (a fatal signal is queued on
    every thread at once, so the per-task pending set in /proc/<pid>/stat shows it)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
        finally:
            os.close(fd)
    except (OSError, IndexError):
        return True
    return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & _PF_EXITING) or bool(int(fields[28]) & _SIGKILL_BIT)


class RuntimeProcess:
    """One launcher + zygote process tree, its control socket, and the idle children it handed over."""

    def __init__(
        self, argv: Callable[[dict[str, Any]], Sequence[str]], config: dict[str, Any], *, start_timeout: float
    ) -> None:
        self._argv = argv
        self._config = config
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._alive = False
        self._zygote_pid: int | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._idle: dict[str, collections.deque[ChildHandle]] = collections.defaultdict(collections.deque)
        self._running: dict[int, ChildHandle] = {}
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = collections.defaultdict(
            collections.deque
        )
        self._outbox = bytearray()
        self._hot: dict[str, _Hot] = {}
        self._preload_record: dict[str, collections.deque[bool]] = collections.defaultdict(
            lambda: collections.deque(maxlen=_PRELOAD_RECORD)
        )
        self._flush_scheduled = False
        self._closing = False
        self._stderr_task: asyncio.Task[None] | None = None
        self.info: dict[str, Any] = {}

    def compiled(self, code: str) -> str | None:
        """``code`` compiled for this runtime's interpreter, or None: the execution process compiles it
        (bytecode is off, or the runtime runs another Python version)."""
        if not self._config.get("bytecode") or self.info.get("bytecode_magic") != agent_bytecode.MAGIC:
            return None
        return agent_bytecode.compiled(code)

    # -- start and stop --------------------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Spawn the runtime and wait for its ``ready`` message.

        Raises:
            SandboxStartError: it reported a fatal error, exited, or did not answer in time.
        """
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = self._argv({**self._config, "control_fd": theirs.fileno()})
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={},
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_control)
        self._stderr_task = asyncio.create_task(self._log_stderr(), name="sandbox-stderr")
        try:
            self.info = await asyncio.wait_for(asyncio.shield(self._ready), self._start_timeout)
        except (TimeoutError, SandboxStartError) as exc:
            await self.close()
            if isinstance(exc, SandboxStartError):
                raise
            raise SandboxStartError("sandbox runtime did not answer in time") from exc
        self._zygote_pid = self._find_zygote()
        self._alive = True
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

    async def close(self, timeout: float = 2.0) -> None:
        """Close the control socket (the zygote kills every child and exits), then make sure it is gone."""
        self._closing = True
        self._on_death()
        proc = self._proc
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                self.kill()
                await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task

    def kill(self) -> None:
        """Kill the runtime at once. The zygote has PR_SET_PDEATHSIG(SIGKILL): killing the launcher takes
        down the whole pid namespace."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)
        self._on_death()

    @property
    def alive(self) -> bool:
        """Whether the runtime is up. Also looks at the zygote itself: a zygote that was just killed may not
        have closed its socket yet, and a job given to one of its children now would be lost."""
        if self._alive and self._zygote_pid is not None and _dying(self._zygote_pid):
            self._on_death()
        return self._alive

    @property
    def pid(self) -> int | None:
        """Host pid of the launcher (the zygote is its only child)."""
        return self._proc.pid if self._proc is not None else None

    def _on_death(self) -> None:
        """Forget the runtime: close the socket and idle children, fail waiters, settle running jobs."""
        was_alive, self._alive = self._alive, False
        if self._sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
                asyncio.get_running_loop().remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for queue in self._idle.values():
            while queue:
                queue.popleft().close()
        for waiters in self._waiters.values():
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
        for handle in self._running.values():
            if not handle.exited.done():
                handle.exited.set_result(RUNTIME_DIED)
        self._running.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(SandboxStartError("sandbox runtime exited during start-up"))
        if was_alive and not self._closing:
            log.warning("sandbox.runtime_exited", launcher_pid=self.pid)

    # -- control socket --------------------------------------------------------------------------------
    def _on_control(self) -> None:
        assert self._sock is not None
        while self._sock is not None:
            try:
                message, fds, _, _ = socket.recv_fds(self._sock, 65536, 2)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:
                self._on_death()
                return
            try:
                ((header, _),) = framing.FrameBuffer(len(message)).feed(message)
            except (framing.FrameError, ValueError):
                for fd in fds:
                    os.close(fd)
                continue
            self._on_message(header, fds)

    def _on_message(self, header: dict[str, Any], fds: list[int]) -> None:
        op = header.get("op")
        if op == "child" and len(fds) == 2:
            for fd in fds:
                os.set_blocking(fd, False)
            handle = ChildHandle(cid=header["cid"], flavor=header["flavor"], job_w=fds[0], res_r=fds[1])
            self._idle[handle.flavor].append(handle)
            self._running[handle.cid] = handle  # known: its exit status must reach it
            self._assign_preloads(handle.flavor)
            waiters = self._waiters[handle.flavor]
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
        elif op == "exit":
            exited = self._running.pop(int(header["cid"]), None)
            if exited is not None:
                if not exited.exited.done():
                    exited.exited.set_result(int(header["status"]))
                with contextlib.suppress(ValueError):
                    self._idle[exited.flavor].remove(exited)
                    exited.close()
        elif op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(header.get("info", {}))
        elif op == "fatal" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(SandboxStartError(f"sandbox runtime failed to start: {header.get('error')}"))
        for fd in fds if op != "child" else ():
            os.close(fd)

    def send(self, header: dict[str, Any]) -> None:
        """Queue a control message; it leaves at the end of this event-loop iteration, after the caller's
        own work (waking the zygote earlier would only take the CPU from the job or from the answer)."""
        if self._sock is None:
            return
        self._outbox += framing.encode(header)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._outbox and self._sock is not None:
            head_len, payload_len = framing.lengths(bytes(self._outbox[: framing.PREFIX_SIZE]))
            size = framing.PREFIX_SIZE + head_len + payload_len
            try:
                self._sock.send(self._outbox[:size])
            except BlockingIOError:
                asyncio.get_running_loop().add_writer(self._sock.fileno(), self._flush)
                return
            except OSError:
                self._on_death()
                return
            del self._outbox[:size]
        if self._sock is not None:
            asyncio.get_running_loop().remove_writer(self._sock.fileno())

    # -- children --------------------------------------------------------------------------------------
    def try_take_child(self, flavor: str, key: Hashable | None = None) -> ChildHandle | None:
        """An idle execution process of ``flavor`` if one is ready now: one that preloaded ``key`` if there
        is one, else one that loaded nothing yet."""
        if not self._alive:
            return None
        queue = self._idle[flavor]
        chosen = next((h for h in queue if h.preloaded == key), None) if key is not None else None
        if chosen is not None:
            self._preload_record[flavor].append(True)
        else:
            chosen = next((h for h in queue if h.preloaded is None), None)
        if chosen is not None:
            queue.remove(chosen)
        return chosen

    async def take_child(self, flavor: str, key: Hashable | None = None) -> ChildHandle:
        """The next idle execution process of ``flavor`` (see :meth:`try_take_child`; waits for the pool to
        refill if it has none, and makes room by dropping one that preloaded other code).

        Raises:
            RuntimeDiedError: the runtime exited.
        """
        while True:
            if not self._alive:
                raise RuntimeDiedError("the sandbox runtime exited")
            chosen = self.try_take_child(flavor, key)
            if chosen is not None:
                return chosen
            stale = next((h for h in self._idle[flavor] if h.preloaded is not None), None)
            if stale is not None:
                self._drop_idle(stale)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[flavor].append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters[flavor].remove(waiter)

    # -- preloading (docs/sandbox.md, "Preloading") ----------------------------------------------------
    def ran(self, flavor: str, key: Hashable, frame: Callable[[], bytes], cap: int) -> None:
        """A job of ``key`` ran to its answers. After a streak of such jobs, idle processes of ``flavor``
        load its code before their job comes: at most ``cap`` of them hold code (of any job), and one always
        holds nothing. Those holding other code stay for a job of theirs, until a long streak of one code
        replaces them one per job (the pool refills with fresh ones)."""
        hot = self._hot.get(flavor)
        if hot is not None and hot.key == key:
            hot.streak += 1
        else:
            hot = self._hot[flavor] = _Hot(key)
        if hot.streak < _PRELOAD_STREAK:
            return
        record = self._preload_record[flavor]
        if hot.streak >= _RETRY_STREAK and not _paying(record):
            record.clear()
        if not _paying(record):
            return
        if hot.frame is None:
            hot.frame, hot.cap = frame(), cap
        if hot.streak >= _TAKEOVER_STREAK:
            stale = next((h for h in self._idle[flavor] if h.preloaded not in (None, key)), None)
            if stale is not None:
                self._drop_idle(stale)
        self._assign_preloads(flavor)

    def _assign_preloads(self, flavor: str) -> None:
        hot = self._hot.get(flavor)
        if hot is None or hot.frame is None or len(hot.frame) > MAX_PRELOAD_FRAME:
            return
        if not _paying(self._preload_record[flavor]):
            return
        queue = self._idle[flavor]
        plain = [h for h in queue if h.preloaded is None]
        loaded = len(queue) - len(plain)
        while len(plain) > 1 and loaded < hot.cap:
            handle = plain.pop()
            try:
                written = os.write(handle.job_w, hot.frame)
            except OSError:
                written = -1
            if written != len(hot.frame):
                self._drop_idle(handle)
                continue
            handle.preloaded = hot.key
            loaded += 1

    def _drop_idle(self, handle: ChildHandle) -> None:
        if handle.preloaded is not None:
            self._preload_record[handle.flavor].append(False)
        with contextlib.suppress(ValueError):
            self._idle[handle.flavor].remove(handle)
        self.release(handle, kill=True, sweep=False)

    def release(self, handle: ChildHandle, *, kill: bool, sweep: bool) -> None:
        """Done with ``handle``: close our pipe ends and, with ``kill``, have the zygote kill the process
        (and, with ``sweep``, everything of its uid); no exit report follows a kill."""
        self._running.pop(handle.cid, None)
        handle.close()
        if kill:
            self.send({"op": "kill", "cid": handle.cid, "sweep": sweep})

    async def _log_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for _ in range(_STDERR_LINES):
            line = await self._proc.stderr.readline()
            if not line:
                return
            log.warning("sandbox.runtime_stderr", line=line.decode(errors="replace").rstrip()[:500])
        await self._proc.stderr.read()


def _paying(record: collections.deque[bool]) -> bool:
    """Whether preloading pays in a pool, from its latest preloads: used (True) or dropped unused (False)."""
    return len(record) < 4 or 4 * (len(record) - sum(record)) <= len(record)


@dataclass
class _Hot:
    """The code of the latest jobs of one pool: how many ran in a row, and its preload frame once loaded ahead."""

    key: Hashable
    streak: int = 1
    frame: bytes | None = None
    cap: int = 0
