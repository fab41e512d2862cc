"""Runs agent code on example inputs in the sandbox (never in the service process)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from builder_svc.domain import ExampleOutcome
from tdev_common.config import CommonSettings
from tdev_common.sandbox import Limits, Outcome, Sandbox, SandboxSettings


def _outcome(outcome: Outcome) -> ExampleOutcome:
    if outcome.ok:
        return ExampleOutcome("ok", output=outcome.output)
    if outcome.error is not None:
        return ExampleOutcome(str(outcome.kind), error_type=outcome.error.type, message=outcome.error.message,
                              traceback=outcome.error.traceback)
    return ExampleOutcome(str(outcome.kind), message=outcome.detail)


class SandboxRunner:
    """The builder's sandbox: one warm runtime per process, shared by every build."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    @classmethod
    async def start(cls, common: CommonSettings) -> SandboxRunner:
        """Embedded mode may fall back to weak isolation (with a warning); production may not.

        Raises:
            tdev_common.sandbox.SandboxError: the sandbox cannot start here.
        """
        return cls(await Sandbox.start(SandboxSettings.for_mode(common.mode)))

    async def run(self, code: str, inputs: Sequence[Mapping[str, Any]], timeout_seconds: float) -> list[ExampleOutcome]:
        """One outcome per input, in order (the class is loaded once per process)."""
        limits = self._sandbox.default_limits.replace(timeout_seconds=timeout_seconds,
                                                      cpu_seconds=min(timeout_seconds, Limits().cpu_seconds))
        outcomes = await self._sandbox.run_batch(code, [dict(i) for i in inputs], limits)
        return [_outcome(outcome) for outcome in outcomes]

    async def close(self) -> None:
        """Stops the runtime."""
        await self._sandbox.close()
