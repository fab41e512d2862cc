"""The strong local backend: Linux user/mount/pid/net/ipc/uts namespaces with a uid per execution."""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from .backend import IsolationLevel, Probe
from .local_backend import EXEC_UID_OFFSET, RUNTIME_DIR, LocalBackend, probe_runtime, python_executable
from .settings import SandboxSettings

_SYSTEM_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo")


class NamespaceBackend(LocalBackend):
    """Executions run in fresh namespaces made with unshare(2); no setuid helper or bubblewrap needed.

    The runtime is launched as root: it maps a whole range of host uids into its user namespace so each
    execution gets its own unprivileged uid (never 0), which bubblewrap (one mapped uid) cannot do.
    """

    name: ClassVar[str] = "namespaces"
    level: ClassVar[IsolationLevel] = IsolationLevel.NAMESPACES

    @classmethod
    def probe(cls, settings: SandboxSettings) -> Probe:
        return _probe(settings)

    def runtime_config(self) -> dict[str, Any]:
        s = self.settings
        exe = python_executable(s)
        prefix = os.path.dirname(os.path.dirname(exe))
        return {
            "mode": "namespaces",
            "uid_base": s.uid_base,
            "uid_count": s.uid_count,
            "exec_uid_first": EXEC_UID_OFFSET,
            "exec_uid_count": s.uid_count - EXEC_UID_OFFSET,
            "pool_size": s.pool_size,
            "async_pool_size": s.async_pool_size,
            "work_dir_bytes": s.work_dir_bytes,
            "work_dir_inodes": s.work_dir_inodes,
            "runtime_path": str(RUNTIME_DIR),
            "read_only_paths": [prefix, *_SYSTEM_PATHS, *s.extra_read_only_paths],
            **self.seccomp_config(),
        }

    def describe(self) -> dict[str, Any]:
        s = self.settings
        seccomp_status = self.seccomp_status()
        return {
            "backend": self.name,
            "level": self.level.value,
            "summary": (
                "user+mount+pid+net+ipc+uts namespaces via unshare(2); per execution: own uid, mount and "
                "ipc namespace, 0700 tmpfs work dir; no network, no capabilities, no_new_privs, rlimits; "
                f"seccomp {seccomp_status}"
            ),
            "seccomp": seccomp_status,
            "namespaces": ["user", "mount", "pid", "network", "ipc", "uts"],
            "launcher": "unshare(2)",
            "filesystem": "read-only interpreter and system libraries; /proc hidepid=2; empty tmpfs /tmp",
            "network": "none (empty network namespace)",
            "per_execution": ["uid", "mount namespace", "ipc namespace", "tmpfs work dir", "session"],
            "host_uid_range": [s.uid_base, s.uid_base + s.uid_count - 1],
            "pool_size": s.pool_size,
        }


_PROBES: dict[tuple[Any, ...], Probe] = {}


def _probe(settings: SandboxSettings) -> Probe:
    """Probe once per configuration: really start the runtime (about 50 ms) and cache the answer."""
    key = (
        python_executable(settings), settings.uid_base, settings.uid_count, settings.extra_read_only_paths,
        settings.seccomp,
    )
    if key not in _PROBES:
        if not sys.platform.startswith("linux"):
            _PROBES[key] = Probe(False, "Linux namespaces are only available on Linux")
        elif os.geteuid() != 0:
            _PROBES[key] = Probe(False, "mapping a range of uids into a user namespace needs root")
        else:
            _PROBES[key] = probe_runtime(NamespaceBackend(settings))
    return _PROBES[key]
