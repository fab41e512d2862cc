"""Checkpoints stored by the pipeline before it was split by stage still read back, and such a build resumes."""

from __future__ import annotations

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
    Checkpoint,
    ChosenAgent,
    Constraints,
    EventType,
    ExampleOutcome,
    ExecutionResult,
    NewEvent,
    NodeResult,
    Progress,
    Stage,
    StageResult,
    StageState,
    StoredWorkflow,
    WorkflowDefinition,
    WorkflowRef,
)
from builder_svc.pipeline import BuildRun, Pipeline, PipelineSettings
from builder_svc.stages.select import rejection_kind
from tdev_common.llm import Budget, Completion

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"
ROUND_2 = "checkpoint_validation_round_2.json"  # select or create of round 2 had just started
FINISHED = "checkpoint_after_round_2_package.json"
BUILD_ID = "build_3637c63a2313"
STORED_AGENT = "agent_812f25f72d8f"
FIXED_CODE = ("class NumberSorter:\n    def execute(self, inputs):\n"
              "        return {'numbers': sorted(inputs['numbers'])}\n")


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


@pytest.mark.parametrize("name", [ROUND_2, FINISHED])
def test_checkpoint_written_before_the_split_reads_back_to_the_same_json(name: str) -> None:
    stored = _fixture(name)
    assert Checkpoint.from_json(stored).to_json() == stored


def test_checkpoint_of_a_validation_round_reads_as_types() -> None:
    checkpoint = Checkpoint.from_json(_fixture(ROUND_2))
    assert checkpoint.done == ("analyse:1", "identify_agents:1", "select_or_create:1", "compose:1", "validate:1")
    assert checkpoint.round_number == 2
    assert checkpoint.agents == {"sort_items": ChosenAgent(STORED_AGENT, "1.0.0", "sort_items.3637c63a2313", False,
                                                           0, "NumberSorter", "sort_items", 1)}
    assert checkpoint.workflow == WorkflowRef("wf_45635e036514", "1.0.0")
    assert checkpoint.validation is None
    fix = (checkpoint.pending_fixes or {})["sort_items"]
    assert fix.failure["kind"] == "wrong_output"
    assert fix.example == {"input": {"numbers": list(range(9, -1, -1))},
                           "expected_output": {"numbers": list(range(10))}}
    (spec,) = checkpoint.specs
    assert (spec.id, spec.name, len(spec.examples), spec.reuse_agent_id) == ("sort_items", "NumberSorter", 3, "")


def test_checkpoint_before_any_stage_has_no_round_and_no_agents() -> None:
    empty = Checkpoint.from_json({})
    assert (empty.round_number, empty.agents, empty.plan, empty.specs) == (1, {}, None, ())
    assert empty.to_json() == {"done": []}


@pytest.mark.parametrize(("code", "kind"), [
    ("class A:\n    def execute(self, inputs)\n        return {}\n", "syntax"),
    ("def execute(inputs):\n    return {}\n", "contract"),
    ("class A:\n    def run(self):\n        return 1\n", "contract"),
])
def test_rejected_code_is_a_syntax_error_only_when_it_does_not_compile(code: str, kind: str) -> None:
    assert rejection_kind(code) == kind


# ---- a build stored before the split resumes ----------------------------------------------------------------
class _Model:
    def __init__(self) -> None:
        self.purposes: list[str] = []

    async def complete(self, messages: Sequence[Any], *, schema: Mapping[str, Any] | None = None, purpose: str,
                       max_tokens: int, temperature: float, model: str | None = None,
                       budget: Budget | None = None, ensemble: bool | None = None) -> Completion:
        self.purposes.append(purpose)
        data = {"changed": True, "code": FIXED_CODE, "diagnosis": "kept every number", "fixes": []}
        return Completion(json.dumps(data), data, "stub", "repairer", purpose, 10, 5, 0.0, 1.0)


class _Registry:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.registered: list[AgentRegistration] = []

    async def search(self, query: str, top_k: int) -> list[AgentSummary]:
        return []

    async def get(self, agent_id: str, version: str) -> AgentSummary:
        self.got.append((agent_id, version))
        return AgentSummary(agent_id, "sort_items.3637c63a2313", version, "NumberSorter", "", {}, code="old code")

    async def register(self, registration: AgentRegistration) -> AgentSummary:
        self.registered.append(registration)
        return AgentSummary(STORED_AGENT, registration.name, "1.1.0", "NumberSorter", "", {}, code=registration.code)

    async def update_labels(self, agent_id: str, version: str, labels: Mapping[str, str], request_id: str) -> None:
        raise AssertionError("the pipeline never labels")

    async def versions_labelled(self, name_contains: str, label: str, value: str) -> list[tuple[str, str]]:
        return []


class _Workflows:
    def __init__(self) -> None:
        self.created: list[tuple[WorkflowDefinition, str]] = []
        self.runs: list[str] = []

    async def create(self, definition: WorkflowDefinition, request_id: str) -> StoredWorkflow:
        self.created.append((definition, request_id))
        return StoredWorkflow("wf_round2", definition.version)

    async def run(self, workflow_id: str, inputs: Mapping[str, Any], request_id: str, deadline_seconds: float,
                  started: Callable[[str], None] | None = None) -> ExecutionResult:
        self.runs.append(request_id)
        output = {"numbers": sorted(inputs["numbers"])}
        return ExecutionResult(f"ex_{len(self.runs)}", "SUCCEEDED", output,
                               {"sort_items": NodeResult("sort_items", "SUCCEEDED", output)})

    async def cancel(self, execution_id: str, reason: str) -> None:
        raise AssertionError("nothing is cancelled")


class _Tester:
    async def run(self, code: str, inputs: Sequence[Mapping[str, Any]], timeout_seconds: float) -> list[ExampleOutcome]:
        assert code == FIXED_CODE
        return [ExampleOutcome("ok", {"numbers": sorted(given["numbers"])}) for given in inputs]


async def _no_states(build_ids: Sequence[str]) -> dict[str, BuildState]:
    return {}


async def test_build_stored_mid_validation_round_resumes_from_its_checkpoint() -> None:
    constraints = Constraints(max_tokens=10_000, max_cost_usd=1.0, max_duration_seconds=60.0, max_fix_attempts=3)
    build = Build(BUILD_ID, "Sort the numbers in ascending order", constraints, BuildState.RUNNING)
    progress = Progress(BuildState.RUNNING, stages=(StageResult(Stage.SELECT_OR_CREATE, StageState.RUNNING, 2),),
                        checkpoint=_fixture(ROUND_2))
    events: list[NewEvent] = []

    async def record(event: NewEvent, progress: Progress) -> None:
        events.append(event)

    model, registry, workflows = _Model(), _Registry(), _Workflows()
    pipeline = Pipeline(PipelineSettings(), model, registry, workflows, _Tester(), _no_states)
    run = BuildRun(build, progress, record)
    await pipeline.run(run)

    assert events[0].type == EventType.BUILD_RESUMED
    assert events[0].details == {"done": ["analyse:1", "identify_agents:1", "select_or_create:1", "compose:1",
                                          "validate:1"]}
    assert events[1].message == "select or create started again: it had not finished before the restart"
    started = [(e.stage, e.details["attempt"]) for e in events if e.type == EventType.STAGE_STARTED]
    assert started == [(Stage.SELECT_OR_CREATE, 2), (Stage.COMPOSE, 2), (Stage.VALIDATE, 2), (Stage.PACKAGE, 1)]
    assert events[-1].type == EventType.BUILD_SUCCEEDED
    # Round 2 repairs the stored version from the failure validation recorded, adding the failing case.
    assert registry.got == [(STORED_AGENT, "1.0.0")] and model.purposes == ["code_repair"]
    (registration,) = registry.registered
    assert registration.parents == ((STORED_AGENT, "1.0.0"),)
    assert registration.labels["build_fix_attempt"] == "1"
    (definition, request_id), = workflows.created
    assert (definition.version, request_id) == ("1.1.0", f"{BUILD_ID}:compose:2")
    assert workflows.runs == [f"{BUILD_ID}:validate:2:{index}" for index in range(4)]
    stored = run.progress.checkpoint
    assert stored["agents"]["sort_items"] == {
        "agent_id": STORED_AGENT, "version": "1.1.0", "name": "sort_items.3637c63a2313", "reused": False,
        "fix_attempts": 1, "spec_name": "NumberSorter", "node_id": "sort_items", "round": 2}
    assert stored["done"][5:] == ["select_or_create:2", "compose:2", "validate:2", "package:1"]
    assert stored["workflow"] == {"workflow_id": "wf_round2", "version": "1.1.0"}
    assert run.progress.state == BuildState.SUCCEEDED and run.progress.package is not None
    assert [a.version for a in run.progress.package.agents] == ["1.1.0"]
