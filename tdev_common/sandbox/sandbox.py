"""The sandbox facade: run, batch-run and inspect agent code through the chosen backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import structlog

from . import selection
from .backend import Job, JobMode, SandboxBackend
from .errors import SandboxClosedError, SandboxError
from .limits import Limits
from .outcome import InspectResult, Outcome, OutcomeKind
from .settings import SandboxSettings

log = structlog.get_logger(__name__)


class Sandbox:
    """Runs untrusted agent code. Create with :meth:`start`; safe to share between asyncio tasks."""

    def __init__(self, settings: SandboxSettings, backend: SandboxBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.default_limits = Limits.from_settings(settings)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._description = backend.describe()
        self._closed = False

    @classmethod
    async def start(
        cls,
        settings: SandboxSettings | None = None,
        *,
        backends: Sequence[type[SandboxBackend]] | None = None,
    ) -> Sandbox:
        """Choose the strongest available backend and start it.

        Raises:
            WeakIsolationRefusedError: no namespace isolation and weak isolation is not allowed.
            IsolationUnavailableError: no backend can run here.
            SandboxStartError: the runtime did not start.
        """
        settings = settings or SandboxSettings()
        candidates = selection.DEFAULT_BACKENDS if backends is None else tuple(backends)
        backend_cls = await asyncio.to_thread(selection.choose_backend, settings, candidates)
        backend = backend_cls(settings)
        await backend.start()
        sandbox = cls(settings, backend)
        selection.register_active(sandbox._description)
        log.info("sandbox.started", **sandbox._description)
        return sandbox

    @property
    def isolation(self) -> selection.IsolationDescription:
        """The backend's description of the isolation in force."""
        return selection.IsolationDescription(self._description)

    async def run(self, code: str, inputs: dict[str, Any], limits: Limits | None = None) -> Outcome:
        """Load the agent class in a fresh process and run ``execute(inputs)`` once.

        Raises:
            ValueError: ``inputs`` is not a JSON object.
            SandboxClosedError: the sandbox was closed.
        """
        (outcome,) = await self._execute(JobMode.RUN, code, [inputs], limits)
        return outcome

    async def run_batch(
        self, code: str, inputs: Sequence[dict[str, Any]], limits: Limits | None = None
    ) -> list[Outcome]:
        """Run one program on many inputs, loading the class once per process.

        Every input gets its own deadline and outcome; after a crash or timeout the remaining inputs
        continue in a fresh process. Raises like :meth:`run`.
        """
        if not inputs:
            return []
        return await self._execute(JobMode.RUN, code, list(inputs), limits)

    async def inspect(self, code: str, limits: Limits | None = None) -> InspectResult:
        """Load the agent class, call ``get_capabilities()`` and list its public methods.

        Raises:
            SandboxClosedError: the sandbox was closed.
        """
        (outcome,) = await self._execute(JobMode.INSPECT, code, [{}], limits)
        if not outcome.ok or outcome.output is None:
            return InspectResult(outcome=outcome)
        report = outcome.output
        capabilities = report.get("capabilities")
        methods = report.get("methods")
        if not isinstance(capabilities, dict) or not isinstance(methods, list):
            bad = Outcome(
                kind=OutcomeKind.INVALID_OUTPUT,
                detail="get_capabilities() must return a dict",
                duration_seconds=outcome.duration_seconds,
                peak_memory_bytes=outcome.peak_memory_bytes,
            )
            return InspectResult(outcome=bad)
        return InspectResult(
            outcome=outcome,
            class_name=str(report.get("class_name", "")),
            capabilities=capabilities,
            methods=tuple(str(m) for m in methods),
            async_execute=report.get("async_execute") is True,
        )

    async def stream_job(
        self, mode: JobMode, code: str, inputs: Sequence[dict[str, Any]], limits: Limits | None = None
    ) -> AsyncIterator[Outcome]:
        """Yield one raw outcome per input, in order, as soon as each is final (the sandbox tier's worker
        streams these; ``inspect`` reports are not interpreted here).

        An answer is final once its process has exited cleanly (see docs/sandbox.md, "What counts as an
        answer"), so outcomes arrive a process at a time: all at once for a batch that ran in one process.

        Raises:
            ValueError: an input is not a JSON object.
            SandboxClosedError: the sandbox was closed.
        """
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")
        if not isinstance(code, str):
            raise TypeError("agent code must be a str")
        for value in inputs:
            if not isinstance(value, dict):
                raise ValueError(f"agent inputs must be JSON objects, got {type(value).__name__}")
        limits = limits or self.default_limits
        done = 0
        while done < len(inputs):
            job = Job(mode=mode, code=code, inputs=inputs[done:], limits=limits)
            async with self._slots:
                answered = await self.backend.execute(job)
            if not answered:
                raise SandboxError("the sandbox backend answered no input")
            for outcome in answered[: len(job.inputs)]:
                done += 1
                yield outcome

    async def _execute(
        self, mode: JobMode, code: str, inputs: list[dict[str, Any]], limits: Limits | None
    ) -> list[Outcome]:
        return [outcome async for outcome in self.stream_job(mode, code, inputs, limits)]

    async def close(self) -> None:
        """Stop the runtime; no process is left behind. Idempotent."""
        if self._closed:
            return
        self._closed = True
        selection.unregister_active(self._description)
        await self.backend.close()
        log.info("sandbox.closed", backend=self.backend.name)

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
