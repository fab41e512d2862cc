"""Choosing the strongest available backend, and reporting what isolation holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from .backend import IsolationLevel, SandboxBackend
from .errors import IsolationUnavailableError, WeakIsolationRefusedError
from .namespace_backend import NamespaceBackend
from .remote_backend import RemoteBackend
from .settings import SandboxSettings
from .weak_backend import WeakBackend

log = structlog.get_logger(__name__)

# Strongest first; the remote tier wins whenever it is configured (probe: configured, not reachable).
DEFAULT_BACKENDS: tuple[type[SandboxBackend], ...] = (RemoteBackend, NamespaceBackend, WeakBackend)

_active: list[dict[str, Any]] = []


class IsolationDescription(dict[str, Any]):
    """A JSON-friendly dict (``backend``, ``level``, ``summary``, ...) whose ``str()`` is the summary."""

    def __str__(self) -> str:
        return f"{self.get('level', '?')}: {self.get('summary', '')}"


def choose_backend(
    settings: SandboxSettings, candidates: Sequence[type[SandboxBackend]] = DEFAULT_BACKENDS
) -> type[SandboxBackend]:
    """Return the first available candidate (strongest first) that the settings allow.

    Raises:
        WeakIsolationRefusedError: only a weak backend is available and weak isolation is not allowed.
        IsolationUnavailableError: no candidate is available at all.
    """
    reasons: list[str] = []
    for backend in candidates:
        if settings.backend != "auto" and backend.name != settings.backend:
            continue
        probe = backend.probe(settings)
        if not probe.available:
            reasons.append(f"{backend.name}: {probe.reason}")
            continue
        if backend.level is IsolationLevel.WEAK:
            if not settings.allow_weak_isolation:
                raise WeakIsolationRefusedError(
                    "refusing to run agent code without namespace isolation ("
                    + ("; ".join(reasons) or "weak backend requested")
                    + "); set TDEV_SANDBOX_ALLOW_WEAK_ISOLATION=true to accept weak isolation"
                )
            log.warning(
                "sandbox.WEAK_ISOLATION",
                message="AGENT CODE RUNS WITHOUT NAMESPACE ISOLATION: only acceptable for local development",
                unavailable=reasons,
            )
        return backend
    raise IsolationUnavailableError("no sandbox backend is available: " + ("; ".join(reasons) or "none matched"))


def register_active(description: dict[str, Any]) -> None:
    _active.append(description)


def unregister_active(description: dict[str, Any]) -> None:
    if description in _active:
        _active.remove(description)


def describe_isolation(settings: SandboxSettings | None = None) -> IsolationDescription:
    """What isolation agent code gets here, for logs and ``tdev status``.

    Reports the running sandbox of this process if there is one; otherwise probes (blocking, about
    50 ms the first time) which backend would be chosen. Never raises: an unavailable sandbox is reported
    with ``level`` set to ``"unavailable"`` and the reason in ``summary``.
    """
    if _active and settings is None:
        return IsolationDescription(_active[-1])
    settings = settings or SandboxSettings()
    try:
        backend = choose_backend(settings)
    except IsolationUnavailableError as exc:
        return IsolationDescription(backend="none", level="unavailable", summary=str(exc))
    return IsolationDescription(backend(settings).describe())
