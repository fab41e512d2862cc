"""The sandbox facade: run, batch-run and inspect agent code through the chosen backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Any

import structlog

from . import selection
from .backend import Job, JobMode, SandboxBackend, SessionProcess, check_program
from .errors import SandboxClosedError, SandboxError
from .limits import Limits
from .outcome import InspectResult, Outcome, OutcomeKind
from .session import SandboxSession
from .settings import SandboxSettings

log = structlog.get_logger(__name__)


class Sandbox:
    """Runs untrusted agent code. Create with :meth:`start`; safe to share between asyncio tasks."""

    def __init__(self, settings: SandboxSettings, backend: SandboxBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.default_limits = Limits.from_settings(settings)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._session_processes: set[SessionProcess] = set()  # each holds a slot until it ends
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
    ) -> AsyncGenerator[Outcome, None]:
        """Yield one raw outcome per input, in order, as soon as each is final (the sandbox tier's worker
        streams these; ``inspect`` reports are not interpreted here).

        An answer is final once its process has exited cleanly (see docs/sandbox.md, "What counts as an
        answer"), so outcomes arrive a process at a time: all at once for a batch that ran in one process.

        Raises:
            ValueError: an input is not a JSON object.
            SandboxClosedError: the sandbox was closed.
        """
        self._check(code, inputs)
        limits = limits or self.default_limits
        done = 0
        while done < len(inputs):
            job = Job(mode=mode, code=code, inputs=inputs[done:], limits=limits)
            await self._take_slot()
            try:
                answered = await self.backend.execute(job)
            finally:
                self._slots.release()
            if not answered:
                raise SandboxError("the sandbox backend answered no input")
            for outcome in answered[: len(job.inputs)]:
                done += 1
                yield outcome

    def session(self, code: str, limits: Limits | None = None) -> SandboxSession:
        """A session for ``code``: its inputs run batch by batch in one warm process that waits between
        batches for up to ``settings.session_idle_seconds`` and takes at most ``settings.session_max_inputs``
        inputs (docs/sandbox.md, "Sessions"). Close it when done. Over a backend without sessions (the
        remote tier) every batch runs in a fresh process, as :meth:`run_batch` does.

        Raises:
            SandboxClosedError: the sandbox was closed.
        """
        self._check(code, ())
        limits = limits or self.default_limits

        return SandboxSession(code, limits, self._open_session_process,
                              lambda job: self.stream_job(job.mode, job.code, job.inputs, job.limits))

    async def _open_session_process(self, job: Job) -> SessionProcess | None:
        self._check(job.code, job.inputs)
        await self._take_slot()
        try:
            process = await self.backend.open_session(job, idle_seconds=self.settings.session_idle_seconds,
                                                      max_inputs=self.settings.session_max_inputs)
        except BaseException:
            self._slots.release()
            raise
        if process is None:
            self._slots.release()
            return None
        self._session_processes.add(process)

        def ended(_: object) -> None:
            self._session_processes.discard(process)
            self._slots.release()

        process.ended.add_done_callback(ended)
        return process

    async def _take_slot(self) -> None:
        """Acquire a concurrency slot; when none is free, an idle session's process gives its slot up."""
        if self._slots.locked():
            for process in self._session_processes:
                if process.usable:
                    process.close()
                    break
        await self._slots.acquire()

    def _check(self, code: str, inputs: Sequence[dict[str, Any]]) -> None:
        if self._closed:
            raise SandboxClosedError("the sandbox is closed")
        check_program(code, inputs)

    async def _execute(
        self, mode: JobMode, code: str, inputs: list[dict[str, Any]], limits: Limits | None
    ) -> list[Outcome]:
        return [outcome async for outcome in self.stream_job(mode, code, inputs, limits)]

    async def close(self) -> None:
        """Stop the runtime; no process is left behind. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for process in list(self._session_processes):
            process.close()
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
