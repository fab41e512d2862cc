"""The zygote: a small single-threaded process that keeps the service supplied with isolated, idle children.

It never runs agent code and never forks execution processes itself (the forkers do, see forker.py). The
service talks to each execution process directly, over two pipes whose ends the zygote hands over with
SCM_RIGHTS when the child is ready, so jobs and results never pass through here. The zygote keeps the pool
full, kills children (and what they forked) on request, reports exit statuses, enforces a backstop deadline in
case the service stops doing so, and, as pid 1 of the sandbox's pid namespace, reaps orphans.

Control socket (fd 3, SOCK_SEQPACKET, framed JSON headers):
  zygote -> service: ready{info} | fatal{error} | child{cid, flavor} + fds [job_w, res_r] | exit{cid, status}
  service -> zygote: start{cid, backstop, sweep} | kill{cid, sweep}
Execution processes exit by themselves when their job is done (the service waits for that exit status);
``sweep`` on start asks for every process of the job's uid to be killed after that exit.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import time
from typing import Any

from . import child, forker, framing, syscalls

CONTROL_FD = 3
FLAVORS = ("sync", "async")
_PR_SET_CHILD_SUBREAPER = 36


class _Child:
    def __init__(self, cid: int, uid: int, flavor: str) -> None:
        self.cid = cid
        self.uid = uid
        self.flavor = flavor
        self.pid: int | None = None
        self.fds: tuple[int, int] | None = None  # our copies of job_w/res_r until handed to the service
        self.started = False
        self.backstop: float | None = None
        self.kill_requested = False  # by the service: it needs no exit report
        self.kill_pending = False  # asked before the forker told us the pid
        self.sweep_requested = False
        self.sweep_on_exit = False  # the job may fork: what it left behind dies with it
        self.swept = False


class _Forker:
    """One forker process (of one flavor)."""

    def __init__(self, flavor: str, pool_size: int, sock: socket.socket, pid: int) -> None:
        self.flavor = flavor
        self.pool_size = pool_size
        self.sock = sock
        self.pid = pid
        self.spare = 0  # children requested or handed over that the service has not started yet

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
    """Event loop over the control socket, the forker sockets and SIGCHLD."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.weak = config["mode"] == "weak"
        self.control = socket.socket(fileno=CONTROL_FD)
        self.control.setblocking(False)
        self.poller = select.epoll()
        self.children: dict[int, _Child] = {}  # cid -> child
        self.by_uid: dict[int, _Child] = {}  # uid -> child, while the forker has not reported its pid
        self.by_pid: dict[int, _Child] = {}
        self.forkers: dict[str, _Forker] = {}
        self.forker_fds: dict[int, _Forker] = {}
        self.uid_first: int = config["exec_uid_first"]
        self.uid_count: int = config["exec_uid_count"]
        self.next_uid = 0
        self.next_cid = 1
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.weak:  # orphans of executions come back to us, so they can be found and killed
            syscalls.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self.poller.register(CONTROL_FD, select.EPOLLIN)
        self.poller.register(self.wake_r, select.EPOLLIN)

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
        self._send({"op": "ready", "pid": os.getpid(), "info": child.describe(self.config)})
        self._fill_pools()
        while True:
            for fd, _ in self.poller.poll(self._poll_timeout()):
                if fd == CONTROL_FD:
                    self._read_control()
                elif fd in self.forker_fds:
                    self._read_forker(self.forker_fds[fd])
                elif fd == self.wake_r:
                    self._reap()
            self._check_backstops()
            self._fill_pools()

    def _poll_timeout(self) -> float:
        backstops = [c.backstop for c in self.children.values() if c.backstop is not None]
        if not backstops:
            return -1
        return max(0.0, min(backstops) - time.monotonic())

    def _shutdown(self) -> None:
        """Kill everything and exit. In namespace mode our exit alone would do: we are the pid namespace's
        init. In weak mode, the forkers first work through the sweep requests, then see EOF and exit."""
        for c in list(self.children.values()):
            self._kill(c, sweep=self.weak)
        for f in self.forkers.values():
            f.sock.shutdown(socket.SHUT_WR)
        if self.weak:
            for f in self.forkers.values():
                if f.pid:
                    os.waitpid(f.pid, 0)
        os._exit(0)

    def _send(self, header: dict[str, Any], fds: list[int] | None = None) -> None:
        message = framing.encode(header)
        self.control.setblocking(True)
        try:
            if fds:
                socket.send_fds(self.control, [message], fds)
            else:
                self.control.send(message)
        except OSError:
            self._shutdown()  # the service is gone
        finally:
            self.control.setblocking(False)

    # -- control messages ------------------------------------------------------------------------------
    def _read_control(self) -> None:
        while True:
            try:
                message = self.control.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._shutdown()
            ((header, _),) = framing.FrameBuffer(len(message)).feed(message)
            c = self.children.get(header.get("cid", -1))
            if c is None:
                continue
            if header["op"] == "start":
                c.started = True
                c.backstop = time.monotonic() + float(header["backstop"])
                c.sweep_on_exit = bool(header.get("sweep"))
                forker_of = self.forkers[c.flavor]
                forker_of.spare -= 1
            elif header["op"] == "kill":
                c.kill_requested = True
                self._kill(c, sweep=bool(header.get("sweep")))

    # -- children --------------------------------------------------------------------------------------
    def _allocate_uid(self) -> int:
        busy = {c.uid for c in self.children.values()}
        for _ in range(self.uid_count):
            uid = self.uid_first + self.next_uid
            self.next_uid = (self.next_uid + 1) % self.uid_count
            if uid not in busy:
                return uid
        raise RuntimeError("no free execution uid")

    def _fill_pools(self) -> None:
        for f in self.forkers.values():
            while f.spare < f.pool_size:
                self._request_child(f)

    def _request_child(self, f: _Forker) -> None:
        uid = self._allocate_uid()
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            f.send(forker.REQUEST.pack(b"F", uid), [job_r, res_w])
        finally:
            os.close(job_r)
            os.close(res_w)
        c = _Child(self.next_cid, uid, f.flavor)
        self.next_cid += 1
        c.fds = (job_w, res_r)
        self.children[c.cid] = c
        self.by_uid[uid] = c
        f.spare += 1

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
                c = self.by_uid.pop(a)
                c.pid = b
                self.by_pid[b] = c
                assert c.fds is not None
                self._send({"op": "child", "cid": c.cid, "flavor": c.flavor}, list(c.fds))
                os.close(c.fds[0])
                os.close(c.fds[1])
                c.fds = None
                if c.kill_pending:
                    self._kill(c, sweep=c.sweep_requested)
            else:
                exited = self.by_pid.pop(a, None)
                if exited is not None:
                    if not exited.kill_requested:  # the service killed it, so it already knows the end
                        self._send({"op": "exit", "cid": exited.cid, "status": b})
                    self.children.pop(exited.cid, None)
                    if not exited.started:
                        self.forkers[exited.flavor].spare -= 1
                    # Swept also when its start message has not been read yet: the service hands the job to the
                    # process directly, so a fast job may run, fork and exit before the zygote hears of it; what
                    # it left behind must not live on (nor share its uid with a later execution).
                    if (exited.sweep_on_exit or not exited.started) and not exited.swept:
                        exited.swept = True
                        self.forkers[exited.flavor].send(forker.REQUEST.pack(b"K", exited.uid))
                    if self.weak:
                        child.remove_work_dir(self.config, exited.uid)

    def _kill(self, c: _Child, *, sweep: bool) -> None:
        """SIGKILL the child; with ``sweep`` also every other process of its uid (what it forked)."""
        c.backstop = None
        if c.pid is None:
            c.kill_pending = True
            c.sweep_requested = c.sweep_requested or sweep
            return
        try:
            os.kill(c.pid, signal.SIGKILL)
            if self.weak:
                os.killpg(c.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if sweep and not c.swept:
            c.swept = True
            self.forkers[c.flavor].send(forker.REQUEST.pack(b"K", c.uid))

    def _check_backstops(self) -> None:
        now = time.monotonic()
        for c in list(self.children.values()):
            if c.backstop is not None and now >= c.backstop:
                self._kill(c, sweep=True)

    def _reap(self) -> None:
        """Reap orphans re-parented to us (and notice a forker's death)."""
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


def main(config: dict[str, Any]) -> None:
    """Run the zygote loop until the control socket closes."""
    os.environ.clear()  # set once here, inherited by every fork: nothing of the service's environment
    os.environ.update(child.ENVIRONMENT)
    config["seccomp_status"] = child.prepare_seccomp(config)
    child.set_batch_scheduling(True)
    zygote = Zygote(config)
    gc.collect()
    gc.freeze()  # forked children never scan (and so never copy) the zygote's objects
    zygote.start_forkers()
    zygote.run()
