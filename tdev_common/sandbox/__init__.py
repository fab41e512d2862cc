"""Runs untrusted agent code in isolated child processes (see docs/sandbox.md)."""

from .backend import IsolationLevel, Job, JobMode, Probe, SandboxBackend
from .errors import (
    IsolationUnavailableError,
    SandboxClosedError,
    SandboxError,
    SandboxStartError,
    SandboxUnavailableError,
    WeakIsolationRefusedError,
)
from .limits import Limits
from .outcome import ErrorInfo, InspectResult, Outcome, OutcomeKind
from .sandbox import Sandbox
from .selection import IsolationDescription, describe_isolation
from .settings import SandboxSettings, SandboxWorkerSettings

__all__ = [
    "ErrorInfo",
    "InspectResult",
    "IsolationDescription",
    "IsolationLevel",
    "IsolationUnavailableError",
    "Job",
    "JobMode",
    "Limits",
    "Outcome",
    "OutcomeKind",
    "Probe",
    "Sandbox",
    "SandboxBackend",
    "SandboxClosedError",
    "SandboxError",
    "SandboxSettings",
    "SandboxStartError",
    "SandboxUnavailableError",
    "SandboxWorkerSettings",
    "WeakIsolationRefusedError",
    "describe_isolation",
]
