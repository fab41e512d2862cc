"""Adapter from the engine's AgentRunner port to tdev_common.sandbox: agent code runs only in its children."""

from __future__ import annotations

from typing import Any

from tdev_common.sandbox import (
    Limits,
    Outcome,
    OutcomeKind,
    Sandbox,
    SandboxError,
    SandboxSettings,
    SandboxUnavailableError,
)
from tdev_common.sandbox.settings import MIB
from workflow_svc.domain import AttemptResult, ErrorInfo, JsonObject
from workflow_svc.warm_batches import WarmBatches


def attempt_result(outcome: Outcome) -> AttemptResult:
    """The engine's view of a sandbox outcome."""
    duration_ms = outcome.duration_seconds * 1000
    if outcome.kind is OutcomeKind.OK:
        return AttemptResult(ok=True, output=outcome.output or {}, duration_ms=duration_ms)
    if outcome.kind is OutcomeKind.ERROR and outcome.error is not None:
        error = ErrorInfo(outcome.error.type, outcome.error.message, outcome.error.traceback)
    else:
        error = ErrorInfo(outcome.kind.value, outcome.detail or outcome.kind.value.replace("_", " "))
    return AttemptResult(ok=False, error=error, duration_ms=duration_ms)


class SandboxRunner:
    """Runs one node attempt in a fresh sandboxed process with the node's limits, or, for a warm group,
    in a batch with the group's other attempts that start with it, in a warm process of the group's when
    one is idle (workflow_svc.warm_batches)."""

    def __init__(self, sandbox: Sandbox, warm_batch_size: int = 8) -> None:
        self._sandbox = sandbox
        self._defaults = sandbox.default_limits
        self._limits: dict[tuple[float, Any, Any], Limits] = {}
        self._warm = WarmBatches(sandbox.session, warm_batch_size, sandbox.settings.session_idle_seconds)

    @classmethod
    async def start(cls, settings: SandboxSettings, warm_batch_size: int = 8) -> SandboxRunner:
        """Starts the sandbox (its zygote and warm children)."""
        return cls(await Sandbox.start(settings), warm_batch_size)

    @property
    def isolation(self) -> dict[str, Any]:
        """What isolation is in force."""
        return self._sandbox.isolation

    def limits(self, timeout_seconds: float, resources: JsonObject) -> Limits:
        """The sandbox limits of one node (cached: few distinct values per workflow)."""
        memory_mb = resources.get("memory_mb")
        cpu_seconds = resources.get("cpu_seconds")
        key = (timeout_seconds, memory_mb, cpu_seconds)
        limits = self._limits.get(key)
        if limits is None:
            limits = self._defaults.replace(
                timeout_seconds=timeout_seconds,
                cpu_seconds=float(cpu_seconds) if cpu_seconds else max(timeout_seconds, 0.01),
                memory_bytes=int(float(memory_mb) * MIB) if memory_mb else self._defaults.memory_bytes,
            )
            self._limits[key] = limits
        return limits

    async def run(
        self, code: str, inputs: JsonObject, timeout_seconds: float, resources: JsonObject, warm_group: str = ""
    ) -> AttemptResult:
        """One attempt; cancelling the caller kills the child promptly (a batch's, once no attempt of it waits).

        ``warm_group`` names the attempts that may share a warm process; empty for a fresh process.
        """
        try:
            limits = self.limits(timeout_seconds, resources)
        except ValueError as error:
            return AttemptResult(ok=False, error=ErrorInfo("invalid_limits", str(error)), retryable=False)
        try:
            if warm_group:
                outcome = await self._warm.run(warm_group, code, inputs, limits)
            else:
                outcome = await self._sandbox.run(code, inputs, limits)
        except ValueError as error:
            return AttemptResult(ok=False, error=ErrorInfo("invalid_input", str(error)), retryable=False)
        except SandboxUnavailableError as error:
            # Nothing ran: a failed attempt the node's retry policy retries (the tier may be back by then).
            return AttemptResult(ok=False, error=ErrorInfo("sandbox_unavailable", str(error)))
        except SandboxError as error:
            return AttemptResult(ok=False, error=ErrorInfo("sandbox_error", str(error)))
        return attempt_result(outcome)

    async def close(self) -> None:
        """Stops the sandbox; no child is left behind."""
        await self._warm.close()
        await self._sandbox.close()
