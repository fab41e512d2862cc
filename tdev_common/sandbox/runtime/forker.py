"""The forker: forks execution processes on request and reports their pids and exit statuses.

It is split from the zygote's loop because every fork makes the forking process's pages copy-on-write
again: a process that forks pays hundreds of microseconds of page faults on its next requests. The zygote
never forks per job, so its answers to the service (kills, exit statuses, new children) never wait on that.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import signal
import socket
import struct
from typing import Any, NoReturn

from . import child, runner, syscalls

REQUEST = struct.Struct("<cI")  # b"F", uid: fork an execution process (2 fds attached) | b"K", uid: kill a uid
EVENT = struct.Struct("<cII")  # b"P", uid, pid (forked) | b"X", pid, wait status (exited)


def serve(config: dict[str, Any], sock: socket.socket, flavor: str) -> NoReturn:
    """Fork one child per request (with the pipe ends passed along); exits when the zygote goes away.

    The ``async`` flavor preloads asyncio and ``config["preload_modules"]``, so async agents and agents
    importing those start fast; the ``sync`` flavor stays lean, since the cost of every fork, copy-on-write
    fault and exit grows with the forking process's memory.
    """
    # Inherited by every execution process and irrevocable: no exec can ever grant privileges again.
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    child.install_inherited_seccomp()  # installed once here, not JIT-compiled again in every process
    keep = sock.fileno()
    os.closerange(3, keep)  # above all the zygote's control socket: only the zygote may hold it
    os.closerange(keep + 1, 1 << 20)
    if flavor == "async":
        runner.import_asyncio()
        _import_modules(config.get("preload_modules") or [])
        gc.collect()
        gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # children inherit it; they only reset SIGCHLD themselves
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poller.register(wake_r, select.EPOLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
                _report_exits(sock)
                continue
            try:
                message, fds, _, _ = socket.recv_fds(sock, REQUEST.size, 2)
            except InterruptedError:
                continue
            if not message:
                os._exit(0)
            kind, uid = REQUEST.unpack(message)
            if kind == b"K":
                if os.fork() == 0:
                    child.kill_uid(uid)
                continue
            if len(fds) != 2:
                os._exit(70)
            pid = os.fork()
            if pid == 0:
                try:
                    child.serve(config, uid, fds[0], fds[1])
                finally:
                    os._exit(70)
            os.close(fds[0])
            os.close(fds[1])
            sock.send(EVENT.pack(b"P", uid, pid))


def _import_modules(names: list[str]) -> None:
    """Import what agents will import anyway; a module that fails is left to them (their own import then
    fails as it would have), and said once on stderr, which the service logs."""
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # anything a module body raises, SystemExit included
            os.write(2, f"sandbox: preload module {name!r} not loaded: {type(exc).__name__}: {exc}\n".encode())


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock.send(EVENT.pack(b"X", pid, status))
