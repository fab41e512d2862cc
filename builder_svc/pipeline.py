"""The build pipeline: runs the stages in order (builder_svc/stages/), one recorded step at a time.

Each stage's result is recorded (event and checkpoint in one fenced write) before the next starts, so a build
resumed after a restart skips every stage that had finished. Stages and agents are durable steps: work in an
unfinished one may run again, but registrations, workflow creations and validation executions carry
idempotency keys, so a re-run finds what the first run made instead of making it twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

import structlog

from builder_svc.domain import (
    Build,
    BuildError,
    BuildState,
    Checkpoint,
    EventType,
    NewEvent,
    Progress,
    Stage,
    StageResult,
    StageState,
    Usage,
)
from builder_svc.ports import Evolution, LanguageModel, LeaseLost, Registry, Tester, Workflows
from builder_svc.stages.analyse import Analyse
from builder_svc.stages.base import BuildFailed, PipelineSettings, RepairNeeded, StageBody, StageTools
from builder_svc.stages.compose import Compose
from builder_svc.stages.identify import IdentifyAgents
from builder_svc.stages.package import Package
from builder_svc.stages.repair import Repair, repaired
from builder_svc.stages.select import SelectOrCreate
from builder_svc.stages.validate import Validate
from tdev_common.errors import DomainError
from tdev_common.llm import Budget, Completion
from tdev_common.tasks import watch

__all__ = ["BuildFailed", "BuildRun", "Pipeline", "PipelineSettings", "UsageMeter"]

log = structlog.get_logger(__name__)
DONE_KEY = "done"


Record = Callable[[NewEvent, Progress], Awaitable[None]]


class UsageMeter:
    """LLM usage of one build, from the completions it received (plus what earlier runs recorded)."""

    def __init__(self, base: Usage) -> None:
        self.total = base

    def add(self, completion: Completion) -> None:
        """Counts one completion (cache hits count as calls with no tokens)."""
        self.total = self.total.plus(Usage(completion.input_tokens, completion.output_tokens, completion.cost_usd,
                                           1, (completion.label,)))

    def add_external(self, cost_usd: float, label: str) -> None:
        """Counts LLM cost another service spent for this build (a repair-by-evolution run: its tokens are that
        service's to report, so only the dollars and one call under ``label`` are added)."""
        self.total = self.total.plus(Usage(0, 0, max(0.0, cost_usd), 1, (label,)))


class BuildRun:
    """One worker's run of one build: its progress, budget, meter and clock."""

    def __init__(self, build: Build, progress: Progress, record: Record, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.build = build
        self.progress = progress
        self._record = record
        self._lock = asyncio.Lock()
        self._writes: set[asyncio.Future[None]] = set()
        self._clock = clock
        self._segment_start = clock()
        self._base_elapsed = progress.elapsed_seconds
        self.meter = UsageMeter(progress.usage)
        used = progress.usage
        constraints = build.constraints
        self.budget = Budget(f"build {build.build_id}",
                             max_cost_usd=max(0.0, constraints.max_cost_usd - used.cost_usd),
                             max_tokens=max(0, constraints.max_tokens - used.total_tokens))
        self.current: Stage | None = None
        self.cancelled = False
        self.executions: set[str] = set()
        self.stage_started = 0.0
        self.stage_usage_before = Usage()
        self.repair: tuple[RepairNeeded, ...] = ()  # the agents the repair stage is to hand to evolution

    @property
    def checkpoint(self) -> Checkpoint:
        """What earlier stages recorded (read from the stored JSON each time: stages change it as they go)."""
        return Checkpoint.from_json(self.progress.checkpoint)

    def elapsed(self) -> float:
        """Seconds worked on this build, over every run."""
        return self._base_elapsed + (self._clock() - self._segment_start)

    def done(self, stage: Stage, attempt: int) -> bool:
        """Whether the stage run finished (and was recorded) before."""
        return f"{stage.key}:{attempt}" in self.progress.checkpoint.get(DONE_KEY, [])

    async def emit(self, event: NewEvent, change: Callable[[Progress], Progress] | None = None) -> None:
        """Stores an event with the build's progress (changed by ``change``), one writer at a time.

        A write that has started completes even if the caller is cancelled meanwhile (a time budget, a stop),
        so the progress in memory never falls behind what is stored; :meth:`settle` waits for such writes.

        Raises:
            LeaseLost: the build is no longer this run's to write.
        """
        write = asyncio.ensure_future(self._emit(event, change))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            if not write.done():
                # The caller is gone and shield drops its own callback with it, so nobody would retrieve the
                # write's outcome: a CancelBuild right after StartBuild fences it out (LeaseLost, expected).
                watch(write, event="build_write_failed", expected=(LeaseLost,), build_id=self.build.build_id)
            raise

    async def _emit(self, event: NewEvent, change: Callable[[Progress], Progress] | None) -> None:
        async with self._lock:
            progress = change(self.progress) if change else self.progress
            progress = replace(progress, usage=self.meter.total, elapsed_seconds=round(self.elapsed(), 6))
            await self._record(event, progress)
            self.progress = progress

    async def settle(self) -> None:
        """Waits for writes a cancelled caller left running (their errors were the caller's to see)."""
        if self._writes:
            done, _ = await asyncio.wait(list(self._writes))
            for write in done:
                if not write.cancelled():
                    write.exception()  # retrieved: a LeaseLost here ends the run anyway


class Pipeline:
    """Runs the stages of builds; shared by every build of a worker."""

    def __init__(self, settings: PipelineSettings, llm: LanguageModel, registry: Registry, workflows: Workflows,
                 tester: Tester, build_states: Callable[[Sequence[str]], Awaitable[Mapping[str, BuildState]]],
                 evolution: Evolution | None = None) -> None:
        tools = StageTools(settings, llm, registry, workflows, tester, build_states)
        self._repair = Repair(tools, evolution) if evolution is not None else None
        self._max_repairs = settings.repair_max_agents
        self._workflows = workflows
        self._analyse = Analyse(tools)
        self._identify = IdentifyAgents(tools)
        # With repair by evolution, every agent whose fix loop runs out is collected for one repair stage;
        # without it, the first one ends the build at once.
        self._select = SelectOrCreate(tools, collect_repairs=evolution is not None)
        self._compose = Compose(tools)
        self._validate = Validate(tools)
        self._package = Package(tools)

    # ---- the run ----------------------------------------------------------------------------------------------
    async def run(self, run: BuildRun) -> None:
        """Runs (or resumes) a build to its end: SUCCEEDED, or FAILED with the reason.

        Raises:
            LeaseLost: another worker or a cancellation took the build; nothing more is written.
            asyncio.CancelledError: the worker is stopping (the build resumes elsewhere) or it was cancelled.
        """
        if run.build.state == BuildState.PENDING:
            await run.emit(NewEvent(EventType.BUILD_STARTED, message=(
                f"build started: {len(run.build.requirements)} characters of requirements"),
                details={"constraints": run.build.constraints.to_json()}),
                lambda p: replace(p, state=BuildState.RUNNING))
        else:
            done = list(run.checkpoint.done)
            await run.emit(NewEvent(EventType.BUILD_RESUMED, message=(
                "build resumed after a restart; finished stages are not run again"
                + (f" ({', '.join(done)})" if done else "")), details={"done": done}))
        remaining = run.build.constraints.max_duration_seconds - run.elapsed()
        try:
            try:
                async with asyncio.timeout(max(remaining, 0.0)) as timer:
                    await self._stages(run)
            except TimeoutError:
                if not timer.expired():
                    raise
                stage = run.current.title if run.current else "start"
                raise BuildFailed(BuildError(
                    "RESOURCE_EXHAUSTED", f"time budget of {run.build.constraints.max_duration_seconds:g} s used up "
                    f"during {stage}", run.current)) from None
        except asyncio.CancelledError:
            await run.settle()
            if run.cancelled:
                await self._cancel_executions(run)
            raise
        except LeaseLost:
            raise
        except BuildFailed as failed:
            await self._fail(run, failed.error)
        except DomainError as error:
            await self._fail(run, self._error(run, error))
        except Exception as error:
            log.exception("build_internal_error", build_id=run.build.build_id)
            stage = run.current.title if run.current else "start"
            await self._fail(run, BuildError("INTERNAL", f"internal error during {stage}: {type(error).__name__}",
                                             run.current))

    @staticmethod
    def _error(run: BuildRun, error: DomainError) -> BuildError:
        stage = run.current
        prefix = f"{stage.title}: " if stage else ""
        return BuildError(error.code.name, prefix + error.message, stage)

    async def _fail(self, run: BuildRun, error: BuildError) -> None:
        await run.settle()
        stage = error.stage or run.current
        running = next((s for s in reversed(run.progress.stages) if s.state == StageState.RUNNING), None)
        if running is not None:
            duration = (time.monotonic() - run.stage_started) * 1000 if run.stage_started else 0.0
            usage = run.meter.total.minus(run.stage_usage_before)
            failed = replace(running, state=StageState.FAILED, summary=error.message, duration_ms=duration, usage=usage)
            await run.emit(NewEvent(EventType.STAGE_FAILED, running.stage, error.message,
                                    {"attempt": running.attempt}, duration, usage, error),
                           lambda p: p.with_stage(failed))
        registered = [a.to_json() for a in run.progress.registered_agents]
        note = ("These agent versions were registered by this failed build (registry label build_id="
                f"{run.build.build_id}); they were not validated as a service and are labelled "
                f"build_state=failed, build_error={error.code} in the registry.") if registered else ""
        await run.emit(NewEvent(EventType.BUILD_FAILED, stage, f"build failed: {error.message}",
                                {"registered_agents": registered, "note": note}, run.elapsed() * 1000,
                                run.meter.total, error),
                       lambda p: replace(p, state=BuildState.FAILED, error=error))

    async def _cancel_executions(self, run: BuildRun) -> None:
        for execution in list(run.executions):
            await asyncio.shield(self._workflows.cancel(execution, f"build {run.build.build_id} was cancelled"))

    # ---- stages -------------------------------------------------------------------------------------------
    async def _stages(self, run: BuildRun) -> None:
        await self._stage(run, Stage.ANALYSE, 1, self._analyse)
        await self._stage(run, Stage.IDENTIFY_AGENTS, 1, self._identify)
        while True:
            round_number = run.checkpoint.round_number
            try:
                await self._stage(run, Stage.SELECT_OR_CREATE, round_number, self._select)
            except RepairNeeded as needed:
                todo = tuple(n for n in needed.needs if not repaired(run.progress.checkpoint, n.spec_id, round_number))
                # One repair stage per round: an agent it already repaired that fails again ends the build.
                if self._repair is None or not todo or run.done(Stage.REPAIR, round_number):
                    raise
                if len(todo) > self._max_repairs:
                    names = ", ".join(n.spec_id for n in todo)
                    raise BuildFailed(BuildError(
                        "FAILED_PRECONDITION", f"{needed.error.message}; {len(todo)} agents ({names}) need repair by "
                        f"evolution, more than repair_max_agents ({self._max_repairs})",
                        needed.error.stage)) from needed
                await self._stage_failed(run, needed.error, [n.spec_id for n in todo])
                run.repair = todo
                await self._stage(run, Stage.REPAIR, round_number, self._repair)
                run.repair = ()
                continue  # select or create again: the repaired agents are chosen, the others run as before
            await self._stage(run, Stage.COMPOSE, round_number, self._compose)
            await self._stage(run, Stage.VALIDATE, round_number, self._validate)
            if run.checkpoint.round_number == round_number:
                break
        await self._stage(run, Stage.PACKAGE, 1, self._package)
        package = run.progress.package
        await run.emit(NewEvent(
            EventType.BUILD_SUCCEEDED, Stage.PACKAGE,
            f"build succeeded: service {package.service_id if package else ''} is validated and packaged"
            + (f"; {package.validation_basis}" if package and package.validation_basis else ""),
            {"package": package.to_json() if package else {}}, run.elapsed() * 1000, run.meter.total),
            lambda p: replace(p, state=BuildState.SUCCEEDED))

    async def _stage_failed(self, run: BuildRun, error: BuildError, spec_ids: Sequence[str]) -> None:
        """Records the running stage as failed without ending the build (repair by evolution follows)."""
        running = next((s for s in reversed(run.progress.stages) if s.state == StageState.RUNNING), None)
        if running is None:
            return
        duration = (time.monotonic() - run.stage_started) * 1000 if run.stage_started else 0.0
        usage = run.meter.total.minus(run.stage_usage_before)
        handed = "the agent" if len(spec_ids) == 1 else f"{len(spec_ids)} agents ({', '.join(spec_ids)})"
        message = f"{error.message}; handing {handed} to the evolution service"
        failed = replace(running, state=StageState.FAILED, summary=message, duration_ms=duration, usage=usage)
        await run.emit(NewEvent(EventType.STAGE_FAILED, running.stage, message, {"attempt": running.attempt},
                                duration, usage, error), lambda p: p.with_stage(failed))
        run.current = None

    async def _stage(self, run: BuildRun, stage: Stage, attempt: int,
                     body: StageBody) -> None:
        if run.done(stage, attempt):
            return
        run.current = stage
        earlier = [s for s in run.progress.stages if s.stage == stage and s.attempt == attempt]
        again = bool(earlier)
        run.stage_started = time.monotonic()
        run.stage_usage_before = run.meter.total
        reason = (" again after repair by evolution" if earlier and earlier[-1].state == StageState.FAILED
                  else " again: it had not finished before the restart")
        message = f"{stage.title} started" + (reason if again else "")
        await run.emit(NewEvent(EventType.STAGE_STARTED, stage, message, {"attempt": attempt}),
                       lambda p: p.with_stage(StageResult(stage, StageState.RUNNING, attempt)))
        outcome = await body(run, attempt)
        duration = (time.monotonic() - run.stage_started) * 1000
        usage = run.meter.total.minus(run.stage_usage_before)
        state = StageState.SUCCEEDED if outcome.succeeded else StageState.FAILED
        result = StageResult(stage, state, attempt, outcome.summary, outcome.details, duration, usage)
        key = f"{stage.key}:{attempt}"

        def finish(progress: Progress) -> Progress:
            done = [*progress.checkpoint.get(DONE_KEY, []), key]
            changed = progress.with_stage(result).with_checkpoint(**outcome.checkpoint, done=done)
            return replace(changed, package=outcome.package) if outcome.package else changed

        kind = EventType.STAGE_SUCCEEDED if outcome.succeeded else EventType.STAGE_FAILED
        error = None if outcome.succeeded else BuildError("FAILED_PRECONDITION", outcome.summary, stage)
        await run.emit(NewEvent(kind, stage, outcome.summary, {"attempt": attempt, **outcome.details}, duration,
                                usage, error), finish)
        run.current = None
