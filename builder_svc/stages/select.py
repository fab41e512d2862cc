"""Stage 3, select or create: per spec, a registry agent that passes its examples, else generated code fixed
from its failures; in later validation rounds, the agents validation blamed, repaired from what it saw."""

from __future__ import annotations

import ast
import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from builder_svc import specs
from builder_svc.domain import (
    AgentRegistration,
    AgentSpec,
    AgentSummary,
    BuildError,
    ChosenAgent,
    PackagedAgent,
    PendingFix,
    Stage,
)
from builder_svc.stages.base import BuildFailed, RepairNeeded, StageBody, StageOutcome, StageTools, run_all
from builder_svc.stages.reuse import reusable
from tdev_common.errors import DomainError, InvalidArgument, Unavailable
from tdev_common.llm import Purpose, prompts, schemas
from tdev_common.llm.schemas import Failure

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun

JSON = dict[str, Any]


def agent_name(build_id: str, spec_id: str) -> str:
    """Registry name of a generated agent: the spec id and the build, e.g. ``word_frequency.1a2b3c4d5e6f``."""
    return f"{spec_id}.{build_id.removeprefix('build_')}"[:100]


def rejection_kind(code: str) -> Literal["syntax", "contract"]:
    """The failure kind for code the registry rejected: ``syntax`` when it does not compile, else ``contract``.

    The registry runs this same parse and compile before its contract checks, and its error says only that the
    code is invalid (one reason for both), so whether it is a syntax error is read from the code itself: a
    SyntaxError raised here, never words in the registry's message.
    """
    try:
        compile(ast.parse(code, filename="<agent>"), "<agent>", "exec", dont_inherit=True)
    except SyntaxError:
        return "syntax"
    except (ValueError, RecursionError, MemoryError):  # the registry's "cannot be parsed": not a syntax error
        return "contract"
    return "contract"


class SelectOrCreate(StageBody):
    """Every spec of the plan gets an agent version that passes its examples (up to agent_concurrency at once).

    With ``collect_repairs`` an agent whose fix loop runs out does not stop the others: once every agent is done,
    one RepairNeeded names all that ran out (in plan order), for one repair stage to hand them all to evolution.
    """

    def __init__(self, tools: StageTools, *, collect_repairs: bool = False) -> None:
        super().__init__(tools)
        self._collect_repairs = collect_repairs

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        round_number = attempt
        saved = run.checkpoint
        pending = dict(saved.pending_fixes or {}) if round_number > 1 else {}
        limit = asyncio.Semaphore(self._settings.agent_concurrency)
        ran_out: dict[str, RepairNeeded] = {}

        async def one(spec: AgentSpec) -> None:
            async with limit:
                try:
                    if round_number == 1:
                        chosen = await self._select_agent(run, spec)
                    else:
                        chosen = await self._fix_agent(run, spec, pending[spec.id])
                except RepairNeeded as needed:
                    if not self._collect_repairs:
                        raise
                    ran_out[spec.id] = needed
                    return
            chosen = replace(chosen, round=round_number)
            verb = "reused" if chosen.reused else "ready"
            # The checkpoint is changed as stored JSON: other agents' entries may have been written meanwhile.
            await self._progress(
                run, f"{spec.id}: {verb} {chosen.name} {chosen.version}", {"agent": chosen.to_json()},
                lambda p: p.with_checkpoint(agents={**p.checkpoint.get("agents", {}), spec.id: chosen.to_json()}))

        def needs_work(spec: AgentSpec) -> bool:
            chosen = saved.agents.get(spec.id)
            if round_number == 1:
                return chosen is None
            return spec.id in pending and (chosen is None or chosen.round < round_number)

        plan = saved.plan or {}
        todo = [AgentSpec.from_json(spec) for spec in specs.topological(plan["agents"])]
        await run_all([one(spec) for spec in todo if needs_work(spec)])
        if ran_out:
            needs = [ran_out[spec.id] for spec in todo if spec.id in ran_out]
            raise needs[0].together_with(needs[1:])
        agents = run.checkpoint.agents
        chosen_now = [agents[spec.id] for spec in run.checkpoint.specs]
        reused = sum(1 for a in chosen_now if a.reused)
        fixes = sum(a.fix_attempts for a in chosen_now)
        if round_number == 1:
            summary = (f"{len(chosen_now)} agents: {reused} reused from the registry, {len(chosen_now) - reused} "
                       f"generated; {fixes} fix attempts")
        else:
            summary = f"fixed {', '.join(sorted(pending))} after validation; {fixes} fix attempts in all"
        return StageOutcome(summary, {"agents": [a.to_json() for a in chosen_now]})

    async def _select_agent(self, run: BuildRun, spec: AgentSpec) -> ChosenAgent:
        if not run.build.constraints.disable_reuse:
            for candidate in await self._candidates(run, spec):
                agent = await self._tools.registry.get(candidate.agent_id, candidate.version)
                failure, passed = await self._test(agent.code, spec.examples)
                if failure is None:
                    await self._progress(run, f"{spec.id}: registry agent {agent.name} {agent.version} passed "
                                              f"{passed}/{len(spec.examples)} examples in the sandbox; reusing it")
                    return self._chosen(agent, spec, reused=True, fix_attempts=0)
                await self._progress(run, f"{spec.id}: registry agent {agent.name} {agent.version} does not fit: "
                                          f"{specs.describe_failure(failure)}")
        code = await self._generate(run, spec, spec.examples)
        return await self._fix_loop(run, spec, code, (), list(spec.examples))

    async def _candidates(self, run: BuildRun, spec: AgentSpec) -> list[AgentSummary]:
        """The planner's reuse suggestion first, then registry agents whose schemas fit the spec."""
        registry = self._tools.registry
        found: list[AgentSummary] = []
        if spec.reuse_agent_id:
            try:
                suggested = await registry.get(spec.reuse_agent_id, spec.reuse_version)
            except Unavailable:
                raise
            except DomainError as error:
                await self._progress(run, f"{spec.id}: suggested agent {spec.reuse_agent_id} is unusable: "
                                          f"{error.message}")
            else:
                if await reusable(run.build.build_id, [suggested], self._tools.build_states):
                    found.append(suggested)
                else:
                    await self._progress(run, f"{spec.id}: suggested agent {suggested.name} {suggested.version} "
                                              f"is not reused: build {suggested.labels.get('build_id', '')} did not "
                                              "validate it")
        hits = await registry.search(specs.search_query(spec.data), max(5, self._settings.reuse_candidates))
        for hit in await reusable(run.build.build_id, hits, self._tools.build_states):
            if specs.fits(hit, spec.data) and all(hit.agent_id != f.agent_id for f in found):
                found.append(hit)
        return found[: self._settings.reuse_candidates]

    @staticmethod
    def _chosen(agent: AgentSummary, spec: AgentSpec, *, reused: bool, fix_attempts: int) -> ChosenAgent:
        return ChosenAgent(agent.agent_id, agent.version, agent.name, reused, fix_attempts, spec.name, spec.id)

    async def _generate(self, run: BuildRun, spec: AgentSpec, examples: Sequence[Mapping[str, Any]]) -> str:
        completion = await self._complete(run, prompts.codegen_messages(spec.with_examples(examples)),
                                          schemas.CODEGEN_SCHEMA, Purpose.CODE_GENERATION,
                                          self._settings.code_max_tokens)
        await self._progress(run, f"{spec.id}: generated {completion.data['class_name']} with {completion.label}",
                             {"model": completion.label, "template": completion.data.get("template")})
        return str(completion.data["code"])

    async def _fix_agent(self, run: BuildRun, spec: AgentSpec, pending: PendingFix) -> ChosenAgent:
        """Round > 1: the agent validation blamed, repaired from the validation failure (never a reused agent:
        that one is someone else's, so a new one is generated instead)."""
        examples = list(spec.examples)
        if pending.example:
            examples.append(pending.example)
        current = run.checkpoint.agents[spec.id]
        if current.reused:
            code = await self._generate(run, spec, examples)
            return await self._fix_loop(run, spec, code, (), examples)
        agent = await self._tools.registry.get(current.agent_id, current.version)
        return await self._fix_loop(run, spec, agent.code, ((agent.agent_id, agent.version),), examples,
                                    failure=pending.failure, attempts_before=current.fix_attempts,
                                    failing_cases=pending.cases)

    async def _fix_loop(self, run: BuildRun, spec: AgentSpec, code: str, parents: tuple[tuple[str, str], ...],
                        examples: list[JSON], *, failure: Failure | None = None,
                        attempts_before: int = 0, failing_cases: tuple[JSON, ...] = ()) -> ChosenAgent:
        """Register, test on the examples, and on failure repair from it: at most max_fix_attempts repairs."""
        limit = run.build.constraints.max_fix_attempts
        attempt = 0
        while True:
            if failure is None:
                try:
                    registered = await self._register(run, spec, code, parents, attempts_before + attempt)
                except InvalidArgument as rejected:
                    failure = Failure(kind=rejection_kind(code), message=rejected.message)
                    await self._progress(run, f"{spec.id}: the registry rejected the code: {rejected.message}")
                else:
                    parents = ((registered.agent_id, registered.version),)
                    failure, passed = await self._test(code, examples)
                    if failure is None:
                        await self._progress(run, f"{spec.id}: {registered.name} {registered.version} passed "
                                                  f"{passed}/{len(examples)} examples in the sandbox")
                        return self._chosen(registered, spec, reused=False, fix_attempts=attempts_before + attempt)
                    await self._progress(run, f"{spec.id}: {registered.name} {registered.version} failed its "
                                              f"examples ({passed}/{len(examples)} passed): "
                                              f"{specs.describe_failure(failure)}", {"failure": dict(failure)})
            if attempt >= limit:
                raise self._ran_out(BuildError(
                    "FAILED_PRECONDITION", f"agent {spec.id} still fails after {limit} fix attempt"
                    f"{'s' if limit != 1 else ''}: {specs.describe_failure(failure)}",
                    run.current or Stage.SELECT_OR_CREATE), spec, parents, examples, attempts_before + attempt)
            attempt += 1
            await self._progress(run, f"{spec.id}: asking for a fix (attempt {attempt} of {limit})")
            shown = spec.with_examples(examples)
            if failing_cases:  # what the caller asked for and did not get, in the caller's own terms
                shown["failing_acceptance_cases"] = [dict(case) for case in failing_cases]
            completion = await self._complete(run, prompts.repair_messages(code, failure, spec=shown),
                                              schemas.REPAIR_SCHEMA, Purpose.CODE_REPAIR,
                                              self._settings.code_max_tokens)
            repaired = completion.data
            if not repaired.get("changed") or str(repaired["code"]).strip() == code.strip():
                raise self._ran_out(BuildError(
                    "FAILED_PRECONDITION", f"agent {spec.id}: no fix found on attempt {attempt} of {limit} "
                    f"({repaired.get('diagnosis', '')}); last failure: {specs.describe_failure(failure)}",
                    run.current or Stage.SELECT_OR_CREATE), spec, parents, examples, attempts_before + attempt)
            await self._progress(run, f"{spec.id}: {completion.label} proposed a fix: "
                                      f"{str(repaired.get('diagnosis', ''))[:300]}",
                                 {"fixes": repaired.get("fixes", []), "model": completion.label})
            code = str(repaired["code"])
            failure = None

    @staticmethod
    def _ran_out(error: BuildError, spec: AgentSpec, parents: tuple[tuple[str, str], ...], examples: list[JSON],
                 fix_attempts: int) -> BuildFailed:
        """The end of a fix loop: repairable by evolution when a version of this build's is in the registry."""
        if not parents:
            return BuildFailed(error)
        agent_id, version = parents[0]
        return RepairNeeded(error, spec.id, agent_id, version, list(examples), fix_attempts)

    async def _register(self, run: BuildRun, spec: AgentSpec, code: str, parents: tuple[tuple[str, str], ...],
                        fix_attempt: int) -> AgentSummary:
        digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
        build_id = run.build.build_id
        registration = AgentRegistration(
            name=agent_name(build_id, spec.id), code=code, description=spec.purpose[:4000],
            parents=parents, request_id=f"{build_id}:{spec.id}:{digest[:32]}",
            labels={"origin": "builder", "build_id": build_id, "build_spec": spec.id,
                    "build_fix_attempt": str(fix_attempt), "build_state": "unvalidated"})
        agent = await self._tools.registry.register(registration)
        entry = PackagedAgent(spec_name=spec.name, agent_id=agent.agent_id, version=agent.version,
                              reused=False, fix_attempts=fix_attempt, node_id=spec.id)
        lineage = f" (parent {parents[0][0]} {parents[0][1]})" if parents else ""
        await self._progress(run, f"{spec.id}: registered {agent.name} {agent.version}{lineage}",
                             {"agent_id": agent.agent_id, "version": agent.version,
                              "parents": [{"agent_id": a, "version": v} for a, v in parents]},
                             lambda p: p.with_registered([entry]))
        return agent

    async def _test(self, code: str, examples: Sequence[Mapping[str, Any]]) -> tuple[Failure | None, int]:
        """Runs the examples in the sandbox: the first failure (or None) and how many passed."""
        outcomes = await self._tools.tester.run(code, [dict(e.get("input") or {}) for e in examples],
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
