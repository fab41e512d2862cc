"""Repair by evolution inside the pipeline, on fakes: every agent whose fix loop runs out in a round is handed to
evolution in one stage (bounded by repair_max_agents), and what the runs cost is in the build's usage."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from builder_svc.domain import (
    AgentRegistration,
    AgentSummary,
    Build,
    BuildState,
    Constraints,
    EventType,
    ExampleOutcome,
    ExecutionResult,
    NewEvent,
    NodeResult,
    Progress,
    RepairRequest,
    RepairResult,
    Stage,
    StageResult,
    StageState,
    StoredWorkflow,
    WorkflowDefinition,
)
from builder_svc.pipeline import BuildRun, Pipeline, PipelineSettings
from tdev_common.llm import Budget, Completion

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"
BUILD_ID = "build_3637c63a2313"
FIXED_CODE = ("class NumberSorter:\n    def execute(self, inputs):\n"
              "        return {'numbers': sorted(inputs['numbers'])}\n")
REPAIR_COST = 0.125


def two_agent_checkpoint() -> dict[str, Any]:
    """Round 2 of a build whose validation blamed both of its agents (two sorters feeding two outputs)."""
    checkpoint: dict[str, Any] = json.loads((FIXTURES / "checkpoint_validation_round_2.json").read_text())
    plan = checkpoint["plan"]
    second = copy.deepcopy(plan["agents"][0])
    second["id"] = "sort_copy"
    plan["agents"].append(second)
    plan["outputs"]["copy"] = "nodes.sort_copy.output.numbers"
    plan["data_flow"] += [{"from": "inputs.numbers", "to": "nodes.sort_copy.inputs.numbers"},
                          {"from": "nodes.sort_copy.output.numbers", "to": "outputs.copy"}]
    for example in plan["examples"]:
        example["expected_output"]["copy"] = example["expected_output"]["numbers"]
    checkpoint["agents"]["sort_copy"] = {**checkpoint["agents"]["sort_items"], "agent_id": "agent_copy",
                                         "name": "sort_copy.3637c63a2313", "node_id": "sort_copy"}
    checkpoint["pending_fixes"]["sort_copy"] = copy.deepcopy(checkpoint["pending_fixes"]["sort_items"])
    return checkpoint


class _Model:
    """Never finds a fix: every fix loop runs out at once."""

    def __init__(self) -> None:
        self.purposes: list[str] = []

    async def complete(self, messages: Sequence[Any], *, schema: Mapping[str, Any] | None = None, purpose: str,
                       max_tokens: int, temperature: float, model: str | None = None,
                       budget: Budget | None = None, ensemble: bool | None = None) -> Completion:
        self.purposes.append(purpose)
        data = {"changed": False, "code": "", "diagnosis": "cannot see the bug", "fixes": []}
        return Completion(json.dumps(data), data, "stub", "repairer", purpose, 10, 5, 0.01, 1.0)


class _Registry:
    async def search(self, query: str, top_k: int) -> list[AgentSummary]:
        return []

    async def get(self, agent_id: str, version: str) -> AgentSummary:
        code = FIXED_CODE if version == "9.0.0" else "class NumberSorter:\n    pass\n"
        return AgentSummary(agent_id, f"{agent_id}.name", version, "NumberSorter", "", {}, code=code)

    async def register(self, registration: AgentRegistration) -> AgentSummary:
        raise AssertionError("no fix is found, so nothing new is registered by the fix loop")

    async def update_labels(self, agent_id: str, version: str, labels: Mapping[str, str], request_id: str) -> None:
        raise AssertionError("the pipeline never labels")

    async def versions_labelled(self, name_contains: str, label: str, value: str) -> list[tuple[str, str]]:
        return []


class _Workflows:
    def __init__(self) -> None:
        self.created: list[WorkflowDefinition] = []

    async def create(self, definition: WorkflowDefinition, request_id: str) -> StoredWorkflow:
        self.created.append(definition)
        return StoredWorkflow("wf_repaired", definition.version)

    async def run(self, workflow_id: str, inputs: Mapping[str, Any], request_id: str, deadline_seconds: float,
                  started: Callable[[str], None] | None = None) -> ExecutionResult:
        numbers = sorted(inputs["numbers"])
        nodes = {node: NodeResult(node, "SUCCEEDED", {"numbers": numbers}) for node in ("sort_items", "sort_copy")}
        return ExecutionResult(f"ex_{request_id}", "SUCCEEDED", {"numbers": numbers, "copy": numbers}, nodes)

    async def cancel(self, execution_id: str, reason: str) -> None:
        raise AssertionError("nothing is cancelled")


class _Tester:
    async def run(self, code: str, inputs: Sequence[Mapping[str, Any]], timeout_seconds: float) -> list[ExampleOutcome]:
        assert code == FIXED_CODE, "only the promoted versions are tested (the fix loop found no fix)"
        return [ExampleOutcome("ok", {"numbers": sorted(given["numbers"])}) for given in inputs]


class _Evolution:
    def __init__(self, *, promote: bool = True) -> None:
        self.requests: list[RepairRequest] = []
        self._promote = promote

    async def repair(self, request: RepairRequest) -> RepairResult:
        self.requests.append(request)
        return RepairResult(f"evo_{request.agent_id}", "STATE_SUCCEEDED", "STOP_REASON_PERFECT", self._promote,
                            request.agent_id if self._promote else "", "9.0.0" if self._promote else "",
                            "" if self._promote else "no candidate beat the original", 0.5, 1.0, 3, 30,
                            REPAIR_COST)


async def _no_states(build_ids: Sequence[str]) -> dict[str, BuildState]:
    return {}


async def _run(checkpoint: dict[str, Any], evolution: _Evolution, **settings: Any) -> tuple[BuildRun, list[NewEvent]]:
    constraints = Constraints(max_tokens=10_000, max_cost_usd=1.0, max_duration_seconds=60.0, max_fix_attempts=1)
    build = Build(BUILD_ID, "Sort the numbers in ascending order", constraints, BuildState.RUNNING)
    progress = Progress(BuildState.RUNNING, stages=(StageResult(Stage.SELECT_OR_CREATE, StageState.RUNNING, 2),),
                        checkpoint=checkpoint)
    events: list[NewEvent] = []

    async def record(event: NewEvent, progress: Progress) -> None:
        events.append(event)

    pipeline = Pipeline(PipelineSettings(**settings), _Model(), _Registry(), _Workflows(), _Tester(), _no_states,
                        evolution)
    run = BuildRun(build, progress, record)
    await pipeline.run(run)
    return run, events


async def test_every_agent_validation_blamed_and_the_fix_loop_could_not_fix_is_repaired_in_one_stage() -> None:
    evolution = _Evolution()
    run, events = await _run(two_agent_checkpoint(), evolution)

    assert events[-1].type == EventType.BUILD_SUCCEEDED, events[-1].message
    assert sorted(r.agent_id for r in evolution.requests) == ["agent_812f25f72d8f", "agent_copy"]
    assert {r.request_id for r in evolution.requests} == {f"{BUILD_ID}:repair:sort_items:2",
                                                          f"{BUILD_ID}:repair:sort_copy:2"}
    # The two runs go side by side, sharing the cost the build has left.
    left = 1.0 - 2 * 0.01  # two fix attempts, one per agent, before the repair
    assert [r.max_cost_usd for r in evolution.requests] == [pytest.approx(left / 2)] * 2
    failed = [e for e in events if e.type == EventType.STAGE_FAILED]
    assert [(e.stage, e.message.endswith("handing 2 agents (sort_items, sort_copy) to the evolution service"))
            for e in failed] == [(Stage.SELECT_OR_CREATE, True)]
    started = [(e.stage, e.details["attempt"]) for e in events if e.type == EventType.STAGE_STARTED]
    assert started == [(Stage.SELECT_OR_CREATE, 2), (Stage.REPAIR, 2), (Stage.SELECT_OR_CREATE, 2),
                       (Stage.COMPOSE, 2), (Stage.VALIDATE, 2), (Stage.PACKAGE, 1)]
    repair = next(e for e in events if e.type == EventType.STAGE_SUCCEEDED and e.stage == Stage.REPAIR)
    assert [d["spec"] for d in repair.details["repairs"]] == ["sort_items", "sort_copy"]
    assert repair.message == (
        "evolution fixed sort_items (agent_812f25f72d8f 9.0.0), sort_copy (agent_copy 9.0.0); "
        "select or create runs again")
    assert run.progress.package is not None
    assert sorted((a.agent_id, a.version) for a in run.progress.package.agents) == [
        ("agent_812f25f72d8f", "9.0.0"), ("agent_copy", "9.0.0")]

    # The evolution runs' cost is the build's: in its usage, the repair stage's, and its budget.
    usage = run.progress.usage
    assert usage.cost_usd == pytest.approx(2 * 0.01 + 2 * REPAIR_COST)
    assert {"evolution:evo_agent_812f25f72d8f", "evolution:evo_agent_copy"} <= set(usage.models)
    assert repair.usage is not None and repair.usage.cost_usd == pytest.approx(2 * REPAIR_COST)
    assert events[-1].usage is not None and events[-1].usage.cost_usd == pytest.approx(usage.cost_usd)
    # The fake model does not charge the budget itself; the evolution runs do, so later calls see what is left.
    assert run.budget.spent_usd == pytest.approx(2 * REPAIR_COST)


async def test_a_repair_that_promotes_nothing_still_counts_its_cost_in_the_failed_build() -> None:
    evolution = _Evolution(promote=False)
    run, events = await _run(two_agent_checkpoint(), evolution)

    assert events[-1].type == EventType.BUILD_FAILED
    assert events[-1].error is not None and events[-1].error.stage == Stage.REPAIR
    assert "did not fix it: no candidate beat the original" in events[-1].error.message
    assert len(evolution.requests) == 2  # both ran to their end before the stage failed
    assert run.progress.usage.cost_usd == pytest.approx(2 * 0.01 + 2 * REPAIR_COST)
    assert events[-1].usage is not None and events[-1].usage.cost_usd == pytest.approx(2 * 0.01 + 2 * REPAIR_COST)


async def test_more_agents_to_repair_than_repair_max_agents_fails_the_build_without_starting_evolution() -> None:
    evolution = _Evolution()
    _, events = await _run(two_agent_checkpoint(), evolution, repair_max_agents=1)

    assert evolution.requests == []
    assert events[-1].type == EventType.BUILD_FAILED and events[-1].error is not None
    assert events[-1].error.code == "FAILED_PRECONDITION"
    assert events[-1].error.message.endswith(
        "; 2 agents (sort_items, sort_copy) need repair by evolution, more than repair_max_agents (1)")
