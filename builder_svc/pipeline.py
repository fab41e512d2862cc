"""The build stages: analyse -> identify agents -> select or create -> compose -> validate -> package.

Each stage's result is recorded (event and checkpoint in one fenced write) before the next starts, so a build
resumed after a restart skips every stage that had finished. Stages and agents are durable steps: work in an
unfinished one may run again, but registrations, workflow creations and validation executions carry
idempotency keys, so a re-run finds what the first run made instead of making it twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import jsonschema
import structlog

from builder_svc import blame, composition, marking, packaging, specs
from builder_svc.domain import (
    SERVICE_ID_PREFIX,
    AgentRegistration,
    AgentSummary,
    Build,
    BuildError,
    BuildState,
    EventType,
    NewEvent,
    PackagedAgent,
    Progress,
    ServicePackage,
    Stage,
    StageResult,
    StageState,
    Usage,
    ValidationCase,
)
from builder_svc.ports import LanguageModel, LeaseLost, Registry, Tester, Workflows
from common.errors import DomainError, InvalidArgument
from common.llm import Budget, Completion, Purpose, prompts, schemas
from common.llm.schemas import Failure
from common.tasks import watch

log = structlog.get_logger(__name__)
JSON = dict[str, Any]
T = TypeVar("T")
DONE_KEY = "done"


class BuildFailed(Exception):
    """Ends the build as FAILED with this error."""

    def __init__(self, error: BuildError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class PipelineSettings:
    """Knobs of the stages (from BuilderSettings)."""

    agent_concurrency: int = 4
    validation_concurrency: int = 4
    reuse_candidates: int = 3
    search_top_k: int = 10
    example_timeout_seconds: float = 5.0
    node_timeout_seconds: float = 10.0
    validation_deadline_seconds: float = 120.0
    max_validation_rounds: int = 2
    analysis_max_tokens: int = 4000
    plan_max_tokens: int = 8000
    code_max_tokens: int = 4000
    model: str | None = None
    workflow_address: str = "127.0.0.1:50052"


@dataclass(frozen=True)
class StageOutcome:
    """What a stage body produced."""

    summary: str
    details: JSON
    checkpoint: JSON = field(default_factory=dict)
    succeeded: bool = True
    package: ServicePackage | None = None


Record = Callable[[NewEvent, Progress], Awaitable[None]]


class UsageMeter:
    """LLM usage of one build, from the completions it received (plus what earlier runs recorded)."""

    def __init__(self, base: Usage) -> None:
        self.total = base

    def add(self, completion: Completion) -> None:
        """Counts one completion (cache hits count as calls with no tokens)."""
        self.total = self.total.plus(Usage(completion.input_tokens, completion.output_tokens, completion.cost_usd,
                                           1, (completion.label,)))


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

    @property
    def checkpoint(self) -> JSON:
        """What earlier stages recorded."""
        return self.progress.checkpoint

    def elapsed(self) -> float:
        """Seconds worked on this build, over every run."""
        return self._base_elapsed + (self._clock() - self._segment_start)

    def done(self, stage: Stage, attempt: int) -> bool:
        """Whether the stage run finished (and was recorded) before."""
        return f"{stage.key}:{attempt}" in self.checkpoint.get(DONE_KEY, [])

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


async def _all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Runs coroutines concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def service_id_of(build_id: str) -> str:
    """``build_1a2b...`` -> ``svc_1a2b...``."""
    return SERVICE_ID_PREFIX + build_id.removeprefix("build_")


def agent_name(build_id: str, spec_id: str) -> str:
    """Registry name of a generated agent: the spec id and the build, e.g. ``word_frequency.1a2b3c4d5e6f``."""
    return f"{spec_id}.{build_id.removeprefix('build_')}"[:100]


class Pipeline:
    """Runs the stages of builds; shared by every build of a worker."""

    def __init__(self, settings: PipelineSettings, llm: LanguageModel, registry: Registry, workflows: Workflows,
                 tester: Tester, build_states: Callable[[Sequence[str]], Awaitable[Mapping[str, BuildState]]]) -> None:
        self._settings = settings
        self._llm = llm
        self._registry = registry
        self._workflows = workflows
        self._tester = tester
        self._build_states = build_states

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
            done = list(run.checkpoint.get(DONE_KEY, []))
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
            round_number = int(run.checkpoint.get("round", 1))
            await self._stage(run, Stage.SELECT_OR_CREATE, round_number, self._select)
            await self._stage(run, Stage.COMPOSE, round_number, self._compose)
            await self._stage(run, Stage.VALIDATE, round_number, self._validate)
            if int(run.checkpoint.get("round", 1)) == round_number:
                break
        await self._stage(run, Stage.PACKAGE, 1, self._package)
        package = run.progress.package
        await run.emit(NewEvent(
            EventType.BUILD_SUCCEEDED, Stage.PACKAGE,
            f"build succeeded: service {package.service_id if package else ''} is validated and packaged",
            {"package": package.to_json() if package else {}}, run.elapsed() * 1000, run.meter.total),
            lambda p: replace(p, state=BuildState.SUCCEEDED))

    async def _stage(self, run: BuildRun, stage: Stage, attempt: int,
                     body: Callable[[BuildRun, int], Awaitable[StageOutcome]]) -> None:
        if run.done(stage, attempt):
            return
        run.current = stage
        again = any(s.stage == stage and s.attempt == attempt for s in run.progress.stages)
        run.stage_started = time.monotonic()
        run.stage_usage_before = run.meter.total
        message = f"{stage.title} started" + (" again: it had not finished before the restart" if again else "")
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

    async def _progress(self, run: BuildRun, message: str, details: JSON | None = None,
                        change: Callable[[Progress], Progress] | None = None) -> None:
        await run.emit(NewEvent(EventType.STAGE_PROGRESS, run.current, message, details or {}), change)

    async def _complete(self, run: BuildRun, messages: Sequence[Any], schema: Mapping[str, Any], purpose: Purpose,
                        max_tokens: int) -> Completion:
        completion = await self._llm.complete(messages, schema=schema, purpose=purpose, max_tokens=max_tokens,
                                              temperature=0.0, model=self._settings.model, budget=run.budget)
        run.meter.add(completion)
        return completion

    # ---- 1. analyse ---------------------------------------------------------------------------------------
    async def _analyse(self, run: BuildRun, _attempt: int) -> StageOutcome:
        completion = await self._complete(run, prompts.requirements_analysis_messages(run.build.requirements),
                                          schemas.REQUIREMENTS_ANALYSIS_SCHEMA, Purpose.REQUIREMENTS,
                                          self._settings.analysis_max_tokens)
        analysis = dict(completion.data)
        jsonschema.validate(analysis, schemas.REQUIREMENTS_ANALYSIS_SCHEMA)
        counts = {key: len(analysis.get(key) or []) for key in (
            "functional_requirements", "non_functional_requirements", "constraints", "integration_points",
            "assumptions")}
        summary = (f"{counts['functional_requirements']} functional and {counts['non_functional_requirements']} "
                   f"non-functional requirements, {counts['constraints']} constraints, "
                   f"{counts['integration_points']} integration points, {counts['assumptions']} assumptions "
                   f"({completion.label})")
        return StageOutcome(summary, {"analysis": analysis, "model": completion.label}, {"analysis": analysis})

    # ---- 2. identify agents -------------------------------------------------------------------------------
    async def _identify(self, run: BuildRun, _attempt: int) -> StageOutcome:
        catalogue: list[Any] = []
        if not run.build.constraints.disable_reuse:
            hits = await self._registry.search(run.build.requirements[:2000], self._settings.search_top_k)
            usable = await self._reusable(run, hits)
            catalogue = [specs.catalogue_entry(agent) for agent in usable]
        completion = await self._complete(
            run, prompts.agent_plan_messages(run.build.requirements, analysis=run.checkpoint.get("analysis"),
                                             catalogue=catalogue),
            schemas.AGENT_PLAN_SCHEMA, Purpose.REQUIREMENTS, self._settings.plan_max_tokens)
        plan = dict(completion.data)
        jsonschema.validate(plan, schemas.AGENT_PLAN_SCHEMA)
        problems = specs.check_plan(plan)
        if problems:
            raise BuildFailed(BuildError("FAILED_PRECONDITION", "the agent plan cannot become a workflow: "
                                         + "; ".join(problems[:10]), Stage.IDENTIFY_AGENTS))
        ordered = specs.topological(plan["agents"])
        flow = " -> ".join(str(a["id"]) for a in ordered)
        reuse = [a["id"] for a in plan["agents"] if a.get("reuse")]
        summary = (f"{len(ordered)} agent{'s' if len(ordered) != 1 else ''}: {flow}; "
                   f"{len(plan.get('examples') or [])} workflow examples; {len(catalogue)} registry agents offered"
                   + (f", reuse suggested for {', '.join(reuse)}" if reuse else ""))
        details = {"plan": plan, "catalogue": [{"agent_id": c["agent_id"], "version": c["version"],
                                                "name": c["name"]} for c in catalogue], "model": completion.label}
        return StageOutcome(summary, details, {"plan": plan})

    async def _reusable(self, run: BuildRun, hits: Sequence[AgentSummary]) -> list[AgentSummary]:
        """Registry agents a build may reuse: not made by this build, not labelled failed, cancelled or superseded,
        and not from a build that has ended without labelling them validated (yet): a build still running may
        offer its versions (they are tested on the spec's examples like any candidate)."""
        unsure = {hit.labels.get("build_id", "") for hit in hits
                  if hit.labels.get("origin") == "builder" and hit.labels.get(marking.STATE_LABEL) != marking.VALIDATED}
        unsure.discard("")
        states = await self._build_states(sorted(unsure)) if unsure else {}
        usable = []
        for hit in hits:
            origin = hit.labels.get("build_id", "")
            if origin == run.build.build_id or not marking.reusable_label(hit.labels):
                continue
            label = hit.labels.get(marking.STATE_LABEL)
            state = states.get(origin) if origin in unsure and label != marking.VALIDATED else None
            if state is not None and state.is_terminal:
                continue
            usable.append(hit)
        return usable

    # ---- 3. select or create ------------------------------------------------------------------------------
    async def _select(self, run: BuildRun, round_number: int) -> StageOutcome:
        plan = run.checkpoint["plan"]
        pending = run.checkpoint.get("pending_fixes", {}) if round_number > 1 else {}
        limit = asyncio.Semaphore(self._settings.agent_concurrency)

        async def one(spec: JSON) -> None:
            async with limit:
                if round_number == 1:
                    chosen = await self._select_agent(run, spec)
                else:
                    chosen = await self._fix_agent(run, spec, pending[spec["id"]], round_number)
            chosen["round"] = round_number
            verb = "reused" if chosen["reused"] else "ready"
            await self._progress(
                run, f"{spec['id']}: {verb} {chosen['name']} {chosen['version']}", {"agent": chosen},
                lambda p: p.with_checkpoint(agents={**p.checkpoint.get("agents", {}), spec["id"]: chosen}))

        def needs_work(spec: JSON) -> bool:
            chosen = run.checkpoint.get("agents", {}).get(spec["id"])
            if round_number == 1:
                return chosen is None
            return spec["id"] in pending and (chosen is None or int(chosen.get("round", 1)) < round_number)

        todo = [spec for spec in specs.topological(plan["agents"]) if needs_work(spec)]
        await _all([one(spec) for spec in todo])
        agents = run.checkpoint.get("agents", {})
        chosen_now = [agents[s["id"]] for s in plan["agents"]]
        reused = sum(1 for a in chosen_now if a["reused"])
        fixes = sum(int(a["fix_attempts"]) for a in chosen_now)
        if round_number == 1:
            summary = (f"{len(chosen_now)} agents: {reused} reused from the registry, {len(chosen_now) - reused} "
                       f"generated; {fixes} fix attempts")
        else:
            summary = f"fixed {', '.join(sorted(pending))} after validation; {fixes} fix attempts in all"
        return StageOutcome(summary, {"agents": chosen_now})

    async def _select_agent(self, run: BuildRun, spec: JSON) -> JSON:
        if not run.build.constraints.disable_reuse:
            for candidate in await self._candidates(run, spec):
                agent = await self._registry.get(candidate.agent_id, candidate.version)
                failure, passed = await self._test(agent.code, spec["examples"])
                if failure is None:
                    await self._progress(run, f"{spec['id']}: registry agent {agent.name} {agent.version} passed "
                                              f"{passed}/{len(spec['examples'])} examples in the sandbox; reusing it")
                    return self._chosen(agent, spec, reused=True, fix_attempts=0)
                await self._progress(run, f"{spec['id']}: registry agent {agent.name} {agent.version} does not fit: "
                                          f"{specs.describe_failure(failure)}")
        code = await self._generate(run, spec)
        return await self._fix_loop(run, spec, code, (), list(spec["examples"]))

    async def _candidates(self, run: BuildRun, spec: JSON) -> list[AgentSummary]:
        """The planner's reuse suggestion first, then registry agents whose schemas fit the spec."""
        found: list[AgentSummary] = []
        suggestion = spec.get("reuse") or {}
        if suggestion.get("agent_id"):
            try:
                suggested = await self._registry.get(str(suggestion["agent_id"]), str(suggestion.get("version", "")))
            except DomainError as error:
                if error.code.name == "UNAVAILABLE":
                    raise
                await self._progress(run, f"{spec['id']}: suggested agent {suggestion['agent_id']} is unusable: "
                                          f"{error.message}")
            else:
                if await self._reusable(run, [suggested]):
                    found.append(suggested)
                else:
                    await self._progress(run, f"{spec['id']}: suggested agent {suggested.name} {suggested.version} "
                                              f"is not reused: build {suggested.labels.get('build_id', '')} did not "
                                              "validate it")
        hits = await self._registry.search(specs.search_query(spec), max(5, self._settings.reuse_candidates))
        for hit in await self._reusable(run, hits):
            if specs.fits(hit, spec) and all(hit.agent_id != f.agent_id for f in found):
                found.append(hit)
        return found[: self._settings.reuse_candidates]

    @staticmethod
    def _chosen(agent: AgentSummary, spec: JSON, *, reused: bool, fix_attempts: int) -> JSON:
        return {"agent_id": agent.agent_id, "version": agent.version, "name": agent.name, "reused": reused,
                "fix_attempts": fix_attempts, "spec_name": spec["name"], "node_id": spec["id"]}

    async def _generate(self, run: BuildRun, spec: JSON) -> str:
        completion = await self._complete(run, prompts.codegen_messages(spec), schemas.CODEGEN_SCHEMA,
                                          Purpose.CODE_GENERATION, self._settings.code_max_tokens)
        await self._progress(run, f"{spec['id']}: generated {completion.data['class_name']} with {completion.label}",
                             {"model": completion.label, "template": completion.data.get("template")})
        return str(completion.data["code"])

    async def _fix_agent(self, run: BuildRun, spec: JSON, pending: JSON, round_number: int) -> JSON:
        """Round > 1: the agent validation blamed, repaired from the validation failure (never a reused agent:
        that one is someone else's, so a new one is generated instead)."""
        examples = list(spec["examples"])
        if pending.get("example"):
            examples.append(pending["example"])
        current = run.checkpoint["agents"][spec["id"]]
        if current["reused"]:
            code = await self._generate(run, {**spec, "examples": examples})
            return await self._fix_loop(run, spec, code, (), examples)
        agent = await self._registry.get(current["agent_id"], current["version"])
        failure: Failure = pending["failure"]
        return await self._fix_loop(run, spec, agent.code, ((agent.agent_id, agent.version),), examples,
                                    failure=failure, attempts_before=int(current["fix_attempts"]))

    async def _fix_loop(self, run: BuildRun, spec: JSON, code: str, parents: tuple[tuple[str, str], ...],
                        examples: list[JSON], *, failure: Failure | None = None, attempts_before: int = 0) -> JSON:
        """Register, test on the examples, and on failure repair from it: at most max_fix_attempts repairs."""
        limit = run.build.constraints.max_fix_attempts
        attempt = 0
        while True:
            if failure is None:
                try:
                    registered = await self._register(run, spec, code, parents, attempts_before + attempt)
                except InvalidArgument as rejected:
                    failure = Failure(kind="syntax" if "syntax" in rejected.message.lower() else "contract",
                                      message=rejected.message)
                    await self._progress(run, f"{spec['id']}: the registry rejected the code: {rejected.message}")
                else:
                    parents = ((registered.agent_id, registered.version),)
                    failure, passed = await self._test(code, examples)
                    if failure is None:
                        await self._progress(run, f"{spec['id']}: {registered.name} {registered.version} passed "
                                                  f"{passed}/{len(examples)} examples in the sandbox")
                        return self._chosen(registered, spec, reused=False, fix_attempts=attempts_before + attempt)
                    await self._progress(run, f"{spec['id']}: {registered.name} {registered.version} failed its "
                                              f"examples ({passed}/{len(examples)} passed): "
                                              f"{specs.describe_failure(failure)}", {"failure": dict(failure)})
            if attempt >= limit:
                raise BuildFailed(BuildError(
                    "FAILED_PRECONDITION", f"agent {spec['id']} still fails after {limit} fix attempt"
                    f"{'s' if limit != 1 else ''}: {specs.describe_failure(failure)}",
                    run.current or Stage.SELECT_OR_CREATE))
            attempt += 1
            await self._progress(run, f"{spec['id']}: asking for a fix (attempt {attempt} of {limit})")
            completion = await self._complete(run, prompts.repair_messages(code, failure, spec={
                **spec, "examples": examples}), schemas.REPAIR_SCHEMA, Purpose.CODE_REPAIR,
                self._settings.code_max_tokens)
            repaired = completion.data
            if not repaired.get("changed") or str(repaired["code"]).strip() == code.strip():
                raise BuildFailed(BuildError(
                    "FAILED_PRECONDITION", f"agent {spec['id']}: no fix found on attempt {attempt} of {limit} "
                    f"({repaired.get('diagnosis', '')}); last failure: {specs.describe_failure(failure)}",
                    run.current or Stage.SELECT_OR_CREATE))
            await self._progress(run, f"{spec['id']}: {completion.label} proposed a fix: "
                                      f"{str(repaired.get('diagnosis', ''))[:300]}",
                                 {"fixes": repaired.get("fixes", []), "model": completion.label})
            code = str(repaired["code"])
            failure = None

    async def _register(self, run: BuildRun, spec: JSON, code: str, parents: tuple[tuple[str, str], ...],
                        fix_attempt: int) -> AgentSummary:
        digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
        build_id = run.build.build_id
        registration = AgentRegistration(
            name=agent_name(build_id, spec["id"]), code=code, description=str(spec.get("purpose", ""))[:4000],
            parents=parents, request_id=f"{build_id}:{spec['id']}:{digest[:32]}",
            labels={"origin": "builder", "build_id": build_id, "build_spec": str(spec["id"]),
                    "build_fix_attempt": str(fix_attempt), "build_state": "unvalidated"})
        agent = await self._registry.register(registration)
        entry = PackagedAgent(spec_name=str(spec["name"]), agent_id=agent.agent_id, version=agent.version,
                              reused=False, fix_attempts=fix_attempt, node_id=str(spec["id"]))
        lineage = f" (parent {parents[0][0]} {parents[0][1]})" if parents else ""
        await self._progress(run, f"{spec['id']}: registered {agent.name} {agent.version}{lineage}",
                             {"agent_id": agent.agent_id, "version": agent.version,
                              "parents": [{"agent_id": a, "version": v} for a, v in parents]},
                             lambda p: p.with_registered([entry]))
        return agent

    async def _test(self, code: str, examples: Sequence[Mapping[str, Any]]) -> tuple[Failure | None, int]:
        """Runs the examples in the sandbox: the first failure (or None) and how many passed."""
        outcomes = await self._tester.run(code, [dict(e.get("input") or {}) for e in examples],
                                          self._settings.example_timeout_seconds)
        first: Failure | None = None
        passed = 0
        for example, outcome in zip(examples, outcomes, strict=True):
            failure = specs.failure_of(example, outcome)
            if failure is None:
                passed += 1
            elif first is None:
                first = failure
        return first, passed

    # ---- 4. compose ---------------------------------------------------------------------------------------
    async def _compose(self, run: BuildRun, round_number: int) -> StageOutcome:
        plan = run.checkpoint["plan"]
        build_id = run.build.build_id
        definition = composition.compose(
            build_id, service_id_of(build_id), composition.workflow_version(round_number), run.build.requirements,
            plan, run.checkpoint["agents"], self._settings.node_timeout_seconds)
        try:
            stored = await self._workflows.create(definition, f"{build_id}:compose:{round_number}")
        except InvalidArgument as invalid:
            raise BuildFailed(BuildError("FAILED_PRECONDITION", "the workflow service rejected the composed "
                                         f"workflow: {invalid.message}", Stage.COMPOSE)) from None
        summary = (f"workflow {stored.workflow_id} version {stored.version}: {len(definition.nodes)} nodes, "
                   f"outputs {', '.join(definition.outputs)}")
        workflow = {"workflow_id": stored.workflow_id, "version": stored.version}
        return StageOutcome(summary, {**workflow, "definition": definition.to_json()}, {"workflow": workflow})

    # ---- 5. validate --------------------------------------------------------------------------------------
    def _cases(self, run: BuildRun) -> list[tuple[JSON, JSON | None]]:
        plan = run.checkpoint["plan"]
        cases: list[tuple[JSON, JSON | None]] = [
            (dict(e["input"]), dict(e["expected_output"])) for e in plan.get("examples") or []]
        cases += [(dict(sample), None) for sample in run.build.constraints.sample_inputs]
        if cases:
            return cases
        # No workflow examples: the examples of agents reading only workflow inputs, mapped back to them.
        for agent in plan["agents"]:
            refs = {key: specs.parse_reference(ref) for key, ref in (agent.get("inputs") or {}).items()}
            if refs and all(r is not None and r.scope == "inputs" for r in refs.values()):
                for example in agent["examples"]:
                    given = example.get("input") or {}
                    cases.append(({r.name: given.get(k) for k, r in refs.items() if r is not None}, None))
        return cases

    async def _validate(self, run: BuildRun, round_number: int) -> StageOutcome:
        plan = run.checkpoint["plan"]
        workflow = run.checkpoint["workflow"]
        build_id = run.build.build_id
        limit = asyncio.Semaphore(self._settings.validation_concurrency)
        output_schema = composition.output_schema(plan)

        async def one(index: int, inputs: JSON, expected: JSON | None) -> tuple[ValidationCase, blame.Blame | None]:
            async with limit:
                result = await self._workflows.run(
                    workflow["workflow_id"], inputs, f"{build_id}:validate:{round_number}:{index}",
                    self._settings.validation_deadline_seconds, run.executions.add)
            run.executions.discard(result.execution_id)
            message = ""
            if not result.succeeded:
                where = f" at node {result.error_node}" if result.error_node else ""
                message = f"execution {result.state.lower()}{where}: {result.error_type}: {result.error_message}"
            elif expected is not None:
                message = specs.output_mismatch(expected, result.outputs or {}) or ""
            else:
                message = _schema_problem(result.outputs or {}, output_schema)
            case = ValidationCase(inputs, expected, result.outputs, not message, result.execution_id, message)
            return case, (None if case.passed else blame.responsible(plan, inputs, expected, result))

        checked = await _all([one(i, inputs, expected) for i, (inputs, expected) in enumerate(self._cases(run))])
        report = [case for case, _ in checked]
        passed = sum(1 for case in report if case.passed)
        details = {"cases": [c.to_json() for c in report], "workflow_id": workflow["workflow_id"],
                   "workflow_version": workflow["version"]}
        if passed == len(report):
            return StageOutcome(f"{passed}/{len(report)} cases passed on workflow {workflow['workflow_id']}", details,
                                {"validation": details["cases"]})
        first_failed = next(index for index, case in enumerate(report) if not case.passed)
        failure_text = f"case {first_failed + 1}: {report[first_failed].message}"
        blamed: dict[str, JSON] = {}
        for _case, found in checked:
            if found is not None and found.spec_id not in blamed:
                blamed[found.spec_id] = {"failure": dict(found.failure), "example": found.example}
        if not blamed or round_number >= 1 + self._settings.max_validation_rounds:
            raise BuildFailed(BuildError(
                "FAILED_PRECONDITION", f"validation failed ({len(report) - passed} of {len(report)} cases) after "
                f"{round_number - 1} fix round{'s' if round_number != 2 else ''}: {failure_text}", Stage.VALIDATE))
        summary = (f"{len(report) - passed}/{len(report)} cases failed ({failure_text}); "
                   f"going back to fix {', '.join(sorted(blamed))}")
        return StageOutcome(summary, {**details, "blamed": sorted(blamed)},
                            {"round": round_number + 1, "pending_fixes": blamed}, succeeded=False)

    # ---- 6. package ---------------------------------------------------------------------------------------
    async def _package(self, run: BuildRun, _attempt: int) -> StageOutcome:
        checkpoint = run.checkpoint
        plan = checkpoint["plan"]
        build_id = run.build.build_id
        service_id = service_id_of(build_id)
        chosen = checkpoint["agents"]
        agents = tuple(PackagedAgent(spec_name=str(spec["name"]), agent_id=chosen[spec["id"]]["agent_id"],
                                     version=chosen[spec["id"]]["version"], reused=bool(chosen[spec["id"]]["reused"]),
                                     fix_attempts=int(chosen[spec["id"]]["fix_attempts"]), node_id=str(spec["id"]))
                       for spec in specs.topological(plan["agents"]))
        report = tuple(ValidationCase.from_json(c) for c in checkpoint.get("validation", []))
        input_schema = dict(plan.get("workflow_input_schema") or {})
        output_schema = dict(composition.output_schema(plan))
        usage = run.meter.total
        seconds = round(run.elapsed(), 3)
        workflow = checkpoint["workflow"]
        text = packaging.readme(
            service_id=service_id, build_id=build_id, workflow_id=workflow["workflow_id"],
            workflow_version=workflow["version"], requirements=run.build.requirements,
            analysis=checkpoint.get("analysis") or {}, agents=agents,
            agent_names={spec_id: str(c["name"]) for spec_id, c in chosen.items()}, input_schema=input_schema,
            output_schema=output_schema, outputs=plan.get("outputs") or {}, report=report, usage=usage,
            build_seconds=seconds, workflow_address=self._settings.workflow_address)
        package = ServicePackage(service_id, workflow["workflow_id"], workflow["version"], agents, input_schema,
                                 output_schema, text, report, usage, seconds)
        summary = (f"service {service_id}: workflow {workflow['workflow_id']} {workflow['version']}, {len(agents)} "
                   f"agents, {sum(1 for c in report if c.passed)}/{len(report)} validation cases passed, "
                   f"{usage.total_tokens} tokens, ${usage.cost_usd:.6f}, {seconds:.2f} s")
        return StageOutcome(summary, {"service_id": service_id, "workflow_id": workflow["workflow_id"],
                                      "workflow_version": workflow["version"],
                                      "agents": [a.to_json() for a in agents]}, package=package)


def _schema_problem(outputs: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """Why outputs do not match the workflow output schema, or ""."""
    try:
        jsonschema.validate(dict(outputs), dict(schema))
    except jsonschema.ValidationError as error:
        return f"outputs do not match the output schema: {error.message}"
    except jsonschema.SchemaError:
        return ""
    return ""
