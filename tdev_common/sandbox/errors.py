"""Exceptions raised by the sandbox (outcomes of agent code are values, never these)."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: the sandbox itself could not do its job."""


class IsolationUnavailableError(SandboxError):
    """No backend that can run code is available on this host."""


class WeakIsolationRefusedError(IsolationUnavailableError):
    """Namespace isolation is unavailable and the operator did not allow weak isolation.

    Set ``TDEV_SANDBOX_ALLOW_WEAK_ISOLATION=true`` (the embedded local mode does) to run anyway.
    """


class SandboxStartError(SandboxError):
    """The sandbox runtime failed to start."""


class SandboxClosedError(SandboxError):
    """The sandbox was used after ``close()``."""


class SandboxUnavailableError(SandboxError):
    """No sandbox tier worker could take the job (every worker was unreachable before it started).

    Nothing ran: the caller may try again later (a workflow attempt fails as ``sandbox_unavailable`` and is
    retried by its retry policy; an RPC answers UNAVAILABLE).
    """
