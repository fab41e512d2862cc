"""The candidate-runner port over tdev_common.sandbox: one batched sandbox call per program."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from evolution_svc.domain import EvaluationLimits, JsonObject
from evolution_svc.ports import CaseRun
from tdev_common.sandbox import Limits, Outcome, OutcomeKind, Sandbox

DETAIL_CHARS = 300


def describe(outcome: Outcome) -> str:
    """Why an execution failed, in one line, e.g. ``ZeroDivisionError: division by zero`` or ``timeout``."""
    if outcome.kind is OutcomeKind.ERROR and outcome.error is not None:
        text = f"{outcome.error.type}: {outcome.error.message}"
    elif outcome.kind is OutcomeKind.KILLED:
        text = f"killed (signal {outcome.signal})" + (f": {outcome.detail}" if outcome.detail else "")
    else:
        text = outcome.kind.value + (f": {outcome.detail}" if outcome.detail else "")
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


class SandboxRunner:
    """Runs programs in the sandbox; the candidate never runs in this process."""

    def __init__(self, sandbox: Sandbox, limits: Limits) -> None:
        self._sandbox = sandbox
        self._limits = limits

    async def run_cases(self, code: str, inputs: Sequence[JsonObject], limits: EvaluationLimits) -> list[CaseRun]:
        """One result per input; stdout and stderr are ignored (a printed "score" means nothing).

        The batch gets ``limits.batch_timeout_seconds`` in all: a program that hangs on case after case
        would otherwise cost a case timeout per case. Cancelling the call kills its process tree.
        """
        per_case = self._limits.replace(
            timeout_seconds=limits.case_timeout_seconds, cpu_seconds=limits.case_timeout_seconds
        )
        try:
            outcomes = await asyncio.wait_for(
                self._sandbox.run_batch(code, list(inputs), per_case), limits.batch_timeout_seconds
            )
        except TimeoutError:
            error = f"timeout: the program used up its time budget of {limits.batch_timeout_seconds:g} s"
            return [CaseRun(ok=False, error=error) for _ in inputs]
        return [
            CaseRun(ok=True, output=outcome.output, duration_ms=outcome.duration_seconds * 1000)
            if outcome.ok
            else CaseRun(ok=False, duration_ms=outcome.duration_seconds * 1000, error=describe(outcome))
            for outcome in outcomes
        ]
