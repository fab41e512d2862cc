"""Audit-hook denials used only in weak mode (no namespaces): network, processes, signals, ctypes, files.

Audit hooks are not a security boundary against determined native code, which is why weak mode is refused
unless the operator allows it; they stop the ordinary ways agent code reaches the network or the host.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_DENIED_PREFIXES = (
    "socket.bind",
    "socket.connect",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getaddrinfo",
    "socket.gethostby",
    "socket.getnameinfo",
    "subprocess.",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.system",
    "os.kill",
    "os.killpg",
    "os.setuid",
    "ctypes.",
    "pty.",
)
_PATH_EVENTS = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install(work_dir: str) -> None:
    """Install the hook; reads are allowed only under the interpreter and the work directory."""
    work = os.path.realpath(work_dir)
    readable = (work, os.path.realpath(sys.base_prefix), "/usr/lib", "/usr/share/zoneinfo", "/dev/")

    def inside(path: Any, roots: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        real = os.path.realpath(os.path.join(work, str(path)))
        return any(real == r.rstrip("/") or real.startswith(r.rstrip("/") + "/") for r in roots)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(_DENIED_PREFIXES):
            raise PermissionError(f"{event} is not allowed in the sandbox")
        if event == "open" and args and args[0] is not None:
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            roots = (work,) if flags & _WRITE_FLAGS else readable
            if not inside(args[0], roots):
                raise PermissionError(f"access to {args[0]!r} is not allowed in the sandbox")
        elif event in _PATH_EVENTS and args and not inside(args[0], (work,)):
            raise PermissionError(f"{event} outside the work directory is not allowed in the sandbox")

    sys.addaudithook(hook)
