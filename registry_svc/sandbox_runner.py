"""The sandbox (tdev_common.sandbox) as the registry's CodeInspector: agent classes are loaded there, never here."""

from __future__ import annotations

from typing import Any

from registry_svc.domain import Inspection
from registry_svc.ports import InspectionFailed
from tdev_common.config import CommonSettings
from tdev_common.errors import Unavailable
from tdev_common.sandbox import InspectResult, OutcomeKind, Sandbox, SandboxSettings, SandboxUnavailableError

REQUIRED_METHODS = ("execute", "get_capabilities")


def describe_failure(result: InspectResult, timeout_seconds: float) -> str:
    """The sandbox's own account of a failed load, e.g. ``ImportError: No module named 'x'``."""
    outcome = result.outcome
    if outcome.kind is OutcomeKind.TIMEOUT:
        return f"timed out after {timeout_seconds:g} s"
    if outcome.kind is OutcomeKind.ERROR and outcome.error is not None:
        return f"{outcome.error.type}: {outcome.error.message}"[:1000]
    detail = outcome.detail or (outcome.error.message if outcome.error else "")
    return f"{outcome.kind.value}{': ' + detail if detail else ''}"[:1000]


class SandboxRunner:
    """Loads agent classes in the sandbox (never in this process) to read ``get_capabilities()``."""

    def __init__(self, sandbox: Sandbox, timeout_seconds: float) -> None:
        self._sandbox = sandbox
        self._timeout = timeout_seconds
        self._limits = sandbox.default_limits.replace(timeout_seconds=timeout_seconds,
                                                      cpu_seconds=timeout_seconds)

    @classmethod
    async def start(cls, common: CommonSettings, timeout_seconds: float, pool_size: int = 1) -> SandboxRunner:
        """Starts a sandbox for inspections.

        Raises:
            tdev_common.sandbox.SandboxError: the sandbox cannot start here.
        """
        return cls(await Sandbox.start(SandboxSettings.for_mode(common.mode, pool_size=pool_size)), timeout_seconds)

    async def inspect(self, code: str, class_name: str) -> Inspection:
        """Load the class in the sandbox and check it.

        Raises:
            InspectionFailed: with the sandbox's message on a crash, timeout or bad answer.
            Unavailable: the sandbox tier could not take the inspection (nothing ran; the caller may retry).
        """
        try:
            result = await self._sandbox.inspect(code, self._limits)
        except SandboxUnavailableError as error:
            raise Unavailable(f"the agent sandbox is unavailable: {error}", reason="SANDBOX_UNAVAILABLE") from error
        if result.outcome.kind is OutcomeKind.KILLED and result.outcome.signal is None:
            # No signal: not the agent's process but the runtime or the tier worker running it died, which
            # says nothing about the code, so it is no verdict on it.
            raise Unavailable(f"the agent sandbox failed during the inspection: {result.outcome.detail}",
                              reason="SANDBOX_UNAVAILABLE")
        if not result.ok:
            raise InspectionFailed(describe_failure(result, self._timeout))
        if result.class_name and result.class_name != class_name:
            raise InspectionFailed(f"the sandbox loaded class {result.class_name}, validation found {class_name}")
        missing = [m for m in REQUIRED_METHODS if m not in result.methods]
        if missing:
            raise InspectionFailed(f"the loaded class has no {', '.join(missing)}")
        return Inspection(class_name=class_name, declared_capabilities=_json_object(result.capabilities))

    async def close(self) -> None:
        """Stops the sandbox."""
        await self._sandbox.close()


def _json_object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
