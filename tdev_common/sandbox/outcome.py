"""Typed outcomes of running agent code."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class OutcomeKind(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"
    OUTPUT_TOO_LARGE = "output_too_large"
    INVALID_OUTPUT = "invalid_output"
    KILLED = "killed"


@dataclass(frozen=True)
class ErrorInfo:
    """An exception raised by agent code: its type name, message and a traceback trimmed to agent frames."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one execution of one input produced.

    ``output`` is set only for ``OK``; ``error`` for ``ERROR``; ``signal`` for ``KILLED``. ``detail`` says
    why in words for the other kinds. ``duration_seconds`` is measured by the runtime outside the agent's
    process (for the first input of a process it includes loading the class); ``peak_memory_bytes`` is the
    process's peak resident memory as reported by the process itself.
    """

    kind: OutcomeKind
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    signal: int | None = None
    detail: str = ""
    duration_seconds: float = 0.0
    peak_memory_bytes: int = 0
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.OK


@dataclass(frozen=True)
class InspectResult:
    """The agent class as loaded in the sandbox: its name, capabilities and public methods."""

    outcome: Outcome
    class_name: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    async_execute: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome.ok
