"""Stage 7, repair by evolution: the agents the fix loop could not fix, evolved by the evolution service.

Every agent of a round whose fix loop ran out (several, when validation blamed several) is handed over in one
stage, at most ``repair_max_agents``, their runs side by side sharing the cost left; each run's cost is added
to the build's usage and budget.

The suite is the agent's own cases: every example the fix loop tested it on (the failing ones, including the
expected value a failed acceptance case gave it, are what to fix; the passing ones keep what works). The run is
bounded by the build's remaining time (a share of it, so compose and validate still fit) and cost. A promoted
version is tested on the same cases in the sandbox before it replaces the draft; select or create then runs
again for the other agents, and compose and validate check the whole service as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from builder_svc import specs
from builder_svc.domain import (
    AgentSpec,
    BuildError,
    ChosenAgent,
    PackagedAgent,
    Progress,
    RepairRequest,
    RepairResult,
    Stage,
)
from builder_svc.ports import Evolution
from builder_svc.stages.base import BuildFailed, RepairNeeded, StageBody, StageOutcome, StageTools

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun

MIN_SECONDS = 1.0


class Repair(StageBody):
    """One evolution run for each agent named by ``run.repair``, side by side; their promoted versions are chosen
    for their specs. Each run's cost is added to the build's usage (and budget) as soon as it ends."""

    def __init__(self, tools: StageTools, evolution: Evolution) -> None:
        super().__init__(tools)
        self._evolution = evolution

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        needs = run.repair
        if not needs:  # the pipeline sets it before running this stage
            raise RuntimeError("repair ran without an agent to repair")
        plan_specs = {s["id"]: AgentSpec.from_json(s) for s in (run.checkpoint.plan or {}).get("agents") or ()}
        constraints = run.build.constraints
        left = constraints.max_duration_seconds - run.elapsed()
        # The runs go side by side: each may take the time share, and the cost left is split between them.
        seconds = left * self._settings.repair_time_share
        cost = max(0.0, constraints.max_cost_usd - run.meter.total.cost_usd) / len(needs)
        if seconds < MIN_SECONDS:
            raise BuildFailed(BuildError("RESOURCE_EXHAUSTED", f"{needs[0].error.message}; no time left in the build's "
                                         f"budget for repair by evolution ({left:.1f} s left)", Stage.REPAIR))
        runs = [self._evolve(run, plan_specs[needed.spec_id], needed, seconds, cost, attempt) for needed in needs]
        ended = await asyncio.gather(*runs, return_exceptions=True)
        # Every run has ended (and its cost is counted) before the first failure ends the stage.
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
        results = [outcome for outcome in ended if not isinstance(outcome, BaseException)]
        agents = {key: value.to_json() for key, value in run.checkpoint.agents.items()}
        repairs = dict(run.progress.checkpoint.get("repairs") or {})
        fixed: list[str] = []
        for needed, (result, _) in zip(needs, results, strict=True):
            spec = plan_specs[needed.spec_id]
            chosen = await self._adopt(run, spec, needed, result.agent_id, result.version, attempt)
            agents[spec.id] = chosen.to_json()
            repairs[f"{spec.id}:{attempt}"] = {"agent_id": result.agent_id, "version": result.version}
            fixed.append(f"{spec.id} ({result.agent_id} {result.version})")
        runs_details = [details for _, details in results]
        details = {**runs_details[0], "repairs": runs_details} if len(runs_details) == 1 else {"repairs": runs_details}
        return StageOutcome(f"evolution fixed {', '.join(fixed)}; select or create runs again", details,
                            {"agents": agents, "repairs": repairs})

    async def _evolve(self, run: BuildRun, spec: AgentSpec, needed: RepairNeeded, seconds: float, cost: float,
                      attempt: int) -> tuple[RepairResult, dict[str, Any]]:
        """One agent's evolution run; raises BuildFailed when it promoted nothing."""
        await self._progress(run, f"{spec.id}: handing {needed.agent_id} {needed.version} to the evolution service "
                                  f"with {len(needed.examples)} cases, at most {seconds:.1f} s and ${cost:.4f}")
        request = RepairRequest(
            agent_id=needed.agent_id, version=needed.version,
            cases=tuple({"input": dict(e.get("input") or {}), "expected_output": dict(e.get("expected_output") or {})}
                        for e in needed.examples),
            max_duration_seconds=round(seconds, 3), max_cost_usd=cost,
            request_id=f"{run.build.build_id}:repair:{spec.id}:{attempt}",
            population_size=self._settings.repair_population, generations=self._settings.repair_generations,
            operators=self._settings.repair_operators)
        result = await self._evolution.repair(request)
        label = f"evolution:{result.run_id}"
        run.meter.add_external(result.cost_usd, label)
        run.budget.record_external(result.cost_usd, label)
        details = {"spec": spec.id, "from": {"agent_id": needed.agent_id, "version": needed.version},
                   "cases": len(needed.examples), "budget": {"seconds": request.max_duration_seconds,
                                                             "cost_usd": cost}, "evolution": result.to_json()}
        await self._progress(run, f"{spec.id}: evolution run {result.run_id} ended {result.state.lower()} "
                                  f"({result.stop_reason.lower()}): "
                                  f"{'promoted ' + result.version if result.promoted else 'nothing promoted'}"
                                  f", cost ${result.cost_usd:.4f}", details)
        if not result.promoted:
            raise BuildFailed(BuildError("FAILED_PRECONDITION", f"{needed.error.message}; repair by evolution (run "
                                         f"{result.run_id}, {result.state.lower()}, best correctness "
                                         f"{result.best_correctness:.2f}) did not fix it: "
                                         f"{result.reason or result.error}", Stage.REPAIR))
        return result, details

    async def _adopt(self, run: BuildRun, spec: AgentSpec, needed: RepairNeeded, agent_id: str, version: str,
                     round_number: int) -> ChosenAgent:
        """The promoted version, once it passes every case in the sandbox, chosen for the spec."""
        promoted = await self._tools.registry.get(agent_id, version)
        outcomes = await self._tools.tester.run(promoted.code, [dict(e.get("input") or {}) for e in needed.examples],
                                                self._settings.example_timeout_seconds)
        for example, outcome in zip(needed.examples, outcomes, strict=True):
            failure = specs.failure_of(example, outcome)
            if failure is not None:
                raise BuildFailed(BuildError("FAILED_PRECONDITION", f"{needed.error.message}; the version evolution "
                                             f"promoted ({agent_id} {version}) still fails: "
                                             f"{specs.describe_failure(failure)}", Stage.REPAIR))
        chosen = ChosenAgent(agent_id, version, promoted.name, False, needed.fix_attempts, spec.name, spec.id,
                             round_number)
        packaged = PackagedAgent(spec.name, agent_id, version, False, needed.fix_attempts, spec.id)

        def record(progress: Progress) -> Progress:
            return progress.with_registered([packaged])

        await self._progress(run, f"{spec.id}: {promoted.name} {version} from evolution passes all "
                                  f"{len(needed.examples)} cases", {"agent": chosen.to_json()}, record)
        return chosen


def repaired(checkpoint_json: Mapping[str, Any], spec_id: str, round_number: int) -> bool:
    """Whether this agent was already handed to evolution in this round (one run per agent and round)."""
    repairs = checkpoint_json.get("repairs")
    return isinstance(repairs, dict) and f"{spec_id}:{round_number}" in repairs

