"""The backend interface: how the :class:`~tdev_common.sandbox.Sandbox` facade reaches an isolated runtime.

Local backends fork processes on this host; a remote tier (e.g. for ECS Fargate, which cannot create
namespaces) implements the same class and plugs in without touching callers (see docs/sandbox.md).
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

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


def check_program(code: str, inputs: Sequence[Any]) -> None:
    """Refuse what no execution process can take.

    Raises:
        TypeError: ``code`` is not a str.
        ValueError: an input is not a JSON object.
    """
    if not isinstance(code, str):
        raise TypeError("agent code must be a str")
    for value in inputs:
        if not isinstance(value, dict):
            raise ValueError(f"agent inputs must be JSON objects, got {type(value).__name__}")


@dataclass(frozen=True)
class Probe:
    available: bool
    reason: str = ""


class SessionProcess(Protocol):
    """One warm execution process that takes a program's inputs batch by batch (see ChildSession)."""

    ended: asyncio.Future[None]

    @property
    def usable(self) -> bool: ...

    @property
    def room(self) -> int: ...

    def run(self, inputs: list[dict[str, Any]]) -> AsyncGenerator[Outcome, None]: ...

    def close(self) -> None: ...


class SessionCounts:
    """The bookkeeping every session process shares: inputs sent and answered, and whether it has ended."""

    def __init__(self, max_inputs: int) -> None:
        self.max_inputs = max(1, max_inputs)
        self.sent = 0  # inputs written to the process
        self.answered = 0  # inputs with a final outcome
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def usable(self) -> bool:
        """Whether a batch may be run now: alive, idle, and room for another input."""
        return not self.ended.done() and self.answered == self.sent < self.max_inputs

    @property
    def room(self) -> int:
        """How many more inputs this session may take."""
        return 0 if self.ended.done() else self.max_inputs - self.sent

    def admit(self, inputs: Sequence[Any]) -> None:
        """Refuse a batch the session cannot take now (a caller's bug, not the agent's)."""
        if not self.usable or not inputs or len(inputs) > self.room:
            raise RuntimeError("the session cannot take these inputs now")


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

    async def open_session(self, job: Job, *, idle_seconds: float, max_inputs: int) -> SessionProcess | None:
        """A fresh process for a session of ``job``'s program and limits (its inputs come with each batch), or
        None when this backend runs every job in a process of its own (the caller then does so)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the runtime and leave no process behind."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What isolation holds, as a JSON-friendly dict with at least ``backend``, ``level``, ``summary``."""
