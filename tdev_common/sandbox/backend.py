"""The backend interface: how the :class:`~tdev_common.sandbox.Sandbox` facade reaches an isolated runtime.

Local backends fork processes on this host; a remote tier (e.g. for ECS Fargate, which cannot create
namespaces) implements the same class and plugs in without touching callers (see docs/sandbox.md).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .limits import Limits
from .outcome import Outcome
from .settings import SandboxSettings


class IsolationLevel(enum.StrEnum):
    NAMESPACES = "namespaces"
    REMOTE = "remote"
    WEAK = "weak"


class JobMode(enum.StrEnum):
    RUN = "run"
    INSPECT = "inspect"


@dataclass(frozen=True)
class Job:
    """One program and the inputs one fresh process should run, in order."""

    mode: JobMode
    code: str
    inputs: Sequence[dict[str, Any]]
    limits: Limits


@dataclass(frozen=True)
class Probe:
    available: bool
    reason: str = ""


class SandboxBackend(abc.ABC):
    """An isolated place to run agent code.

    Contract of :meth:`execute`: the job runs in ONE fresh process that never ran other agent code; it
    returns outcomes for a non-empty prefix of ``job.inputs`` (all of them unless the process died or
    timed out, in which case the last outcome says so and the caller continues with the rest). Cancelling
    the awaiting task kills the process tree promptly. Safe to call from many tasks at once.
    """

    name: ClassVar[str]
    level: ClassVar[IsolationLevel]

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings

    @classmethod
    @abc.abstractmethod
    def probe(cls, settings: SandboxSettings) -> Probe:
        """Whether this backend can run on this host (may take tens of milliseconds; blocking)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the runtime.

        Raises:
            SandboxStartError: it could not start.
        """

    @abc.abstractmethod
    async def execute(self, job: Job) -> list[Outcome]:
        """Run ``job``; see the class docstring for the contract."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the runtime and leave no process behind."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What isolation holds, as a JSON-friendly dict with at least ``backend``, ``level``, ``summary``."""
