"""The weak local backend, for hosts without namespaces: rlimits, own uid when root, audit-hook denials."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, ClassVar

import structlog

from .backend import IsolationLevel, Probe
from .local_backend import EXEC_UID_OFFSET, LocalBackend, python_executable
from .settings import SandboxSettings

log = structlog.get_logger(__name__)


def _traversable_by_others(path: str) -> bool:
    """Whether every directory from / down to ``path`` lets any uid through (o+x)."""
    current = os.path.abspath(path)
    while True:
        try:
            if not os.stat(current).st_mode & 0o001:
                return False
        except OSError:
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


class WeakBackend(LocalBackend):
    """No namespaces: the network, the host file system and other processes are only guarded by audit hooks
    (bypassable by native code), a separate uid when the service runs as root, and rlimits. Refused unless
    ``allow_weak_isolation`` is set."""

    name: ClassVar[str] = "weak"
    level: ClassVar[IsolationLevel] = IsolationLevel.WEAK

    def __init__(self, settings: SandboxSettings) -> None:
        super().__init__(settings)
        self._work_root: str | None = None

    @classmethod
    def probe(cls, settings: SandboxSettings) -> Probe:
        return Probe(True) if os.name == "posix" else Probe(False, "needs a POSIX host")

    def runtime_config(self) -> dict[str, Any]:
        if self._work_root is None:
            self._work_root = tempfile.mkdtemp(prefix="tdev-sandbox-")
            os.chmod(self._work_root, 0o711)
        s = self.settings
        return {
            "mode": "weak",
            "exec_uid_first": s.uid_base + EXEC_UID_OFFSET,
            "exec_uid_count": s.uid_count - EXEC_UID_OFFSET,
            "pool_size": s.pool_size,
            "async_pool_size": s.async_pool_size,
            "weak_work_root": self._work_root,
            **self.seccomp_config(),
        }

    async def start(self) -> None:
        prefix = os.path.dirname(os.path.dirname(python_executable(self.settings)))
        if os.geteuid() == 0 and not _traversable_by_others(prefix):
            log.warning(
                "sandbox.weak_interpreter_unreadable",
                prefix=prefix,
                message="executions run as their own uid and cannot import modules the runtime did not preload",
            )
        await super().start()

    async def close(self) -> None:
        await super().close()
        if self._work_root is not None:
            shutil.rmtree(self._work_root, ignore_errors=True)
            self._work_root = None

    def describe(self) -> dict[str, Any]:
        separate_uid = os.geteuid() == 0
        seccomp_status = self.seccomp_status()
        return {
            "backend": self.name,
            "level": self.level.value,
            "summary": (
                "WEAK: no namespaces; rlimits, empty environment, own session, "
                + ("own uid per execution, " if separate_uid else "same uid as the service, ")
                + "audit-hook denials of network/processes/files (bypassable by native code); "
                + f"seccomp {seccomp_status}"
            ),
            "seccomp": seccomp_status,
            "namespaces": [],
            "network": "audit-hook denial only",
            "per_execution": ["session", "work dir"] + (["uid"] if separate_uid else []),
            "pool_size": self.settings.pool_size,
        }
