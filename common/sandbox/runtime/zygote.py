"""The zygote: a small single-threaded dispatcher that hands jobs to pre-forked, isolated children.

It never runs agent code and never forks execution processes itself (the forker does, see forker.py).
It reads jobs from fd 0 and writes results to fd 1 (both framed), gives each job to a fresh idle child,
enforces the wall deadline of every input, kills a job's processes on timeout or cancellation, and reports
how children died. In namespace mode it is pid 1 of the sandbox's pid namespace and reaps orphans.
"""

from __future__ import annotations

import collections
import gc
import os
import select
import signal
import socket
import time
from typing import Any

from . import child, forker, framing, syscalls

FLAVORS = ("sync", "async")

_CONTROL_MAX_FRAME = 1 << 30
_READ_CHUNK = 1 << 16
_PR_SET_CHILD_SUBREAPER = 36


class _Writer:
    """Non-blocking buffered writer registered for EPOLLOUT only while it has pending bytes."""

    def __init__(self, fd: int, poller: select.epoll) -> None:
        self.fd = fd
        self.poller = poller
        self.pending = bytearray()
        self.broken = False
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        if not self.pending:
            try:
                sent = os.write(self.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                return
            data = data[sent:]
            if not data:
                return
            self.poller.register(self.fd, select.EPOLLOUT)
        self.pending += data

    def flush(self) -> None:
        try:
            sent = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError:
            sent = len(self.pending)
            self.broken = True
        del self.pending[:sent]
        if not self.pending:
            self.poller.unregister(self.fd)

    def close(self) -> None:
        if self.pending:
            self.poller.unregister(self.fd)
            self.pending.clear()
        os.close(self.fd)


class _Job:
    def __init__(self, header: dict[str, Any], payload: bytes) -> None:
        self.id: int = header["id"]
        self.n_inputs: int = header["n"]
        self.timeout: float = header["timeout"]
        self.sweep: bool = header["sweep"]
        self.max_frame: int = header["max_frame"]
        self.flavor: str = header.get("flavor", "sync")
        self.payload = payload
        self.answered = 0
        self.loaded = False
        self.finished = False
        self.started = 0.0
        self.deadline = 0.0


class _Child:
    def __init__(self, uid: int, job_w: _Writer, res_r: int) -> None:
        self.pid: int | None = None
        self.uid = uid
        self.job_w = job_w
        self.res_r = res_r
        self.frames = framing.FrameBuffer(1 << 20)
        self.job: _Job | None = None
        self.eof = False
        self.status: int | None = None
        self.kill_requested = False
        self.swept = False
        self.collected = False
        self.forker: _Forker | None = None


class _Forker:
    """One forker process (of one flavor) and the idle children it made for us."""

    def __init__(self, flavor: str, pool_size: int, sock: socket.socket, pid: int) -> None:
        self.flavor = flavor
        self.pool_size = pool_size
        self.sock = sock
        self.pid = pid
        self.idle: collections.deque[_Child] = collections.deque()
        self.starting: dict[int, _Child] = {}  # uid -> child requested, pid not known yet

    def send(self, message: bytes, fds: list[int] | None = None) -> None:
        self.sock.setblocking(True)
        try:
            if fds:
                socket.send_fds(self.sock, [message], fds)
            else:
                self.sock.send(message)
        finally:
            self.sock.setblocking(False)


class Zygote:
    """Event loop over the control pipe, the forker sockets, the children's result pipes and SIGCHLD."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.weak = config["mode"] == "weak"
        self.poller = select.epoll()
        self.control_in = framing.FrameBuffer(_CONTROL_MAX_FRAME)
        self.out = _Writer(1, self.poller)
        self.by_fd: dict[int, _Child] = {}
        self.by_pid: dict[int, _Child] = {}
        self.jobs: dict[int, _Child] = {}
        self.writers: dict[int, _Writer] = {self.out.fd: self.out}
        self.uid_first: int = config["exec_uid_first"]
        self.uid_count: int = config["exec_uid_count"]
        self.next_uid = 0
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.weak:  # orphans of executions come back to us, so they can be found and killed
            syscalls.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        os.set_blocking(0, False)
        self.poller.register(0, select.EPOLLIN)
        self.poller.register(self.wake_r, select.EPOLLIN)
        self.forkers: dict[str, _Forker] = {}
        self.forker_fds: dict[int, _Forker] = {}

    # -- lifecycle -------------------------------------------------------------------------------------
    def start_forkers(self) -> None:
        for flavor in FLAVORS:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = os.fork()
            if pid == 0:
                try:
                    ours.close()
                    forker.serve(self.config, theirs, flavor)
                finally:
                    os._exit(70)
            theirs.close()
            ours.setblocking(False)
            pool_size = self.config["pool_size"] if flavor == "sync" else self.config["async_pool_size"]
            self.forkers[flavor] = _Forker(flavor, pool_size, ours, pid)
            self.forker_fds[ours.fileno()] = self.forkers[flavor]
            self.poller.register(ours.fileno(), select.EPOLLIN)

    def run(self) -> None:
        self._fill_pool()
        self.out.write(framing.encode({"op": "ready", "pid": os.getpid(), "info": child.describe(self.config)}))
        while True:
            for fd, mask in self.poller.poll(self._poll_timeout()):
                if fd == 0:
                    if not self._read_control():
                        self._shutdown()
                elif fd in self.forker_fds:
                    self._read_forker(self.forker_fds[fd])
                elif fd == self.wake_r:
                    self._reap()
                elif fd in self.by_fd and mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self._read_child(self.by_fd[fd])
                elif fd in self.writers and mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                    self.writers[fd].flush()
            self._check_deadlines()
            self._fill_pool()

    def _poll_timeout(self) -> float:
        deadlines = [c.job.deadline for c in self.jobs.values() if c.job is not None and not c.job.finished]
        if not deadlines:
            return -1
        return max(0.0, min(deadlines) - time.monotonic())

    def _shutdown(self) -> None:
        """Kill everything and exit. In namespace mode our exit alone would do: we are the pid namespace's
        init. In weak mode, the forker first works through the sweep requests, then sees EOF and exits."""
        for c in list(self.by_pid.values()):
            self._kill(c, sweep=self.weak)
        for f in self.forkers.values():
            f.sock.shutdown(socket.SHUT_WR)
        if self.weak:
            for f in self.forkers.values():
                if f.pid:
                    os.waitpid(f.pid, 0)
        os._exit(0)

    # -- control messages ------------------------------------------------------------------------------
    def _read_control(self) -> bool:
        try:
            data = os.read(0, _READ_CHUNK)
        except BlockingIOError:
            return True
        if not data:
            return False
        for header, payload in self.control_in.feed(data):
            if header.get("op") == "run":
                self._start_job(_Job(header, payload))
            elif header.get("op") == "cancel":
                self._cancel(header["id"])
        return True

    def _start_job(self, job: _Job) -> None:
        c = self._take_idle(self.forkers.get(job.flavor) or self.forkers["sync"])
        c.job = job
        self.jobs[job.id] = c
        c.frames = framing.FrameBuffer(job.max_frame)
        job.started = time.monotonic()
        job.deadline = job.started + job.timeout
        c.job_w.write(framing.encode({"t": "job"}, job.payload))
        job.payload = b""

    def _take_idle(self, f: _Forker) -> _Child:
        while f.idle:
            c = f.idle.popleft()
            if c.status is None and not c.eof:
                return c
        for c in f.starting.values():
            if c.job is None:
                return c
        return self._request_child(f)

    def _cancel(self, job_id: int) -> None:
        c = self.jobs.get(job_id)
        if c is not None and c.job is not None and not c.job.finished:
            c.job.finished = True
            self._kill(c, sweep=c.job.sweep)

    # -- children --------------------------------------------------------------------------------------
    def _allocate_uid(self) -> int:
        busy = {c.uid for c in self.by_fd.values()}
        for _ in range(self.uid_count):
            uid = self.uid_first + self.next_uid
            self.next_uid = (self.next_uid + 1) % self.uid_count
            if uid not in busy:
                return uid
        raise RuntimeError("no free execution uid")

    def _fill_pool(self) -> None:
        for f in self.forkers.values():
            spare = len(f.idle) + sum(1 for c in f.starting.values() if c.job is None)
            for _ in range(f.pool_size - spare):
                self._request_child(f)

    def _request_child(self, f: _Forker) -> _Child:
        uid = self._allocate_uid()
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            f.send(forker.REQUEST.pack(b"F", uid), [job_r, res_w])
        finally:
            os.close(job_r)
            os.close(res_w)
        os.set_blocking(res_r, False)
        c = _Child(uid, _Writer(job_w, self.poller), res_r)
        c.forker = f
        f.starting[uid] = c
        self.by_fd[res_r] = c
        self.writers[job_w] = c.job_w
        self.poller.register(res_r, select.EPOLLIN)
        return c

    def _read_forker(self, f: _Forker) -> None:
        while True:
            try:
                message = f.sock.recv(forker.EVENT.size)
            except BlockingIOError:
                return
            if not message:
                os._exit(70)  # a forker died: the service restarts the whole runtime
            kind, a, b = forker.EVENT.unpack(message)
            if kind == b"P":
                c = f.starting.pop(a)
                c.pid = b
                self.by_pid[b] = c
                if c.job is None:
                    f.idle.append(c)
                elif c.kill_requested:
                    self._kill(c, sweep=c.job.sweep)
            else:
                exited = self.by_pid.get(a)
                if exited is not None:
                    exited.status = b
                    self._read_child(exited)

    def _read_child(self, c: _Child) -> None:
        while not c.eof:
            try:
                data = os.read(c.res_r, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                c.eof = True
                self.poller.unregister(c.res_r)
                break
            if c.job is None or c.job.finished:
                continue
            try:
                frames = c.frames.feed(data)
            except framing.FrameTooLarge:
                self._finish_input(c, "output_too_large", detail="result larger than the output limit")
                self._end_job(c)
                continue
            except framing.FrameError:
                self._finish_input(c, "invalid_output", detail="malformed message from the sandboxed process")
                self._end_job(c)
                continue
            for header, payload in frames:
                self._on_frame(c, header, payload)
                if c.job is None or c.job.finished:
                    break
        self._maybe_collect(c)

    def _on_frame(self, c: _Child, header: dict[str, Any], payload: bytes) -> None:
        job = c.job
        assert job is not None
        kind = header.get("t")
        if kind == "loaded":
            job.loaded = True
        elif kind == "result":
            last = job.answered + 1 >= job.n_inputs
            self._send_result(c, last=last, payload=payload)
            if last:
                self._end_job(c)
        elif kind == "fatal":
            while job.answered < job.n_inputs:
                self._send_result(c, last=job.answered + 1 >= job.n_inputs, payload=payload)
            self._end_job(c)
        else:
            self._finish_input(c, "invalid_output", detail="malformed message from the sandboxed process")
            self._end_job(c)

    def _send_result(self, c: _Child, *, last: bool, payload: bytes = b"", **runtime: Any) -> None:
        """Forward one input's outcome; ``last`` marks the end of the job (the service stops waiting)."""
        job = c.job
        assert job is not None
        now = time.monotonic()
        header = {"op": "result", "id": job.id, "index": job.answered, "duration": now - job.started}
        if last:
            header["done"] = True
        if runtime:  # an outcome the runtime observed (the process may still be alive: read its peak now)
            header.update(source="runtime", peak_memory=_peak_memory(c.pid), **runtime)
        else:
            header["source"] = "child"
        self.out.write(framing.encode(header, payload))
        job.answered += 1
        job.started = now
        job.deadline = now + job.timeout

    def _finish_input(self, c: _Child, kind: str, **fields: Any) -> None:
        """Answer the current input with a runtime-made outcome and end the job; before the class was
        loaded the same outcome answers every remaining input (they would all fail the same way)."""
        job = c.job
        assert job is not None
        end = job.n_inputs if not job.loaded else job.answered + 1
        while job.answered < end:
            self._send_result(c, last=job.answered + 1 >= end, kind=kind, **fields)

    def _end_job(self, c: _Child) -> None:
        """Mark the job finished and kill its processes (a finished child must not keep running)."""
        job = c.job
        assert job is not None
        job.finished = True
        self._kill(c, sweep=job.sweep)

    def _kill(self, c: _Child, *, sweep: bool) -> None:
        """SIGKILL the child; with ``sweep`` also every other process of its uid (what it forked)."""
        if c.pid is None:
            c.kill_requested = True
            return
        if c.status is None:
            try:
                os.kill(c.pid, signal.SIGKILL)
                if self.weak:
                    os.killpg(c.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if sweep and not c.swept and c.forker is not None:
            c.swept = True
            c.forker.send(forker.REQUEST.pack(b"K", c.uid))

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for c in list(self.jobs.values()):
            job = c.job
            if job is not None and not job.finished and now >= job.deadline:
                self._finish_input(c, "timeout", detail=f"wall-clock deadline of {job.timeout:g}s exceeded")
                self._end_job(c)

    def _reap(self) -> None:
        """Reap orphans re-parented to us (and notice the forker's death)."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for f in self.forkers.values():
                if pid == f.pid:
                    f.pid = 0
                    self._shutdown()

    def _maybe_collect(self, c: _Child) -> None:
        """Once a child has exited and its pipe is drained, settle its job and free its resources."""
        if c.status is None or not c.eof or c.collected:
            return
        c.collected = True
        job = c.job
        if job is not None and not job.finished:
            self._finish_input(c, **_death_outcome(c.status))
            self._end_job(c)
        if job is not None:
            self.jobs.pop(job.id, None)
        del self.by_fd[c.res_r]
        if c.pid is not None:
            del self.by_pid[c.pid]
        os.close(c.res_r)
        del self.writers[c.job_w.fd]
        c.job_w.close()
        if self.weak:
            child.remove_work_dir(self.config, c.uid)


def _peak_memory(pid: int | None) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _death_outcome(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return {"kind": "timeout", "detail": "CPU time limit exceeded"}
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return {"kind": "killed", "signal": sig, "detail": f"killed by {name}"}
    code = os.waitstatus_to_exitcode(status)
    return {"kind": "error", "error_type": "ProcessExit", "detail": f"exited with status {code} without a result"}


def main(config: dict[str, Any]) -> None:
    """Run the zygote loop until the control pipe closes."""
    zygote = Zygote(config)
    gc.collect()
    gc.freeze()  # forked children never scan (and so never copy) the zygote's objects
    zygote.start_forkers()
    zygote.run()
