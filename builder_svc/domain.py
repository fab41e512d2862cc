"""Builds, their stages, events and packages as frozen dataclasses.

Enum values are the integers the tables store; convert.py maps them to the proto by name (tdev_common.enums).
Times are aware UTC datetimes (tdev_common.clock); the tables keep epoch-second doubles.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from tdev_common.llm.schemas import Failure

JSON = dict[str, Any]
BUILD_ID_PREFIX = "build_"
SERVICE_ID_PREFIX = "svc_"
# The default of a build's times before it is stored (the old 0.0 seconds).
EPOCH = datetime.fromtimestamp(0, UTC)


class BuildState(enum.IntEnum):
    """Lifecycle of a build (tdev.builder.v1.Build.State)."""

    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def is_terminal(self) -> bool:
        """True once the build can change no more."""
        return self in (BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED)


ACTIVE_STATES = (BuildState.PENDING, BuildState.RUNNING)


class Stage(enum.IntEnum):
    """The stages of a build, in order (tdev.builder.v1.Stage)."""

    ANALYSE = 1
    IDENTIFY_AGENTS = 2
    SELECT_OR_CREATE = 3
    COMPOSE = 4
    VALIDATE = 5
    PACKAGE = 6
    REPAIR = 7

    @property
    def key(self) -> str:
        """Lower-case name used in checkpoints and logs, e.g. ``select_or_create``."""
        return self.name.lower()

    @property
    def title(self) -> str:
        """Human-readable name, e.g. ``select or create``."""
        return self.key.replace("_", " ")


class StageState(enum.IntEnum):
    """Lifecycle of one stage run (tdev.builder.v1.StageResult.State)."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3


class EventType(enum.IntEnum):
    """What a build event records (tdev.builder.v1.BuildEvent.Type)."""

    BUILD_STARTED = 1
    STAGE_STARTED = 2
    STAGE_PROGRESS = 3
    STAGE_SUCCEEDED = 4
    STAGE_FAILED = 5
    BUILD_SUCCEEDED = 6
    BUILD_FAILED = 7
    BUILD_CANCELLED = 8
    BUILD_RESUMED = 9

    @property
    def is_terminal(self) -> bool:
        """True for the event that ends a build's stream."""
        return self in (EventType.BUILD_SUCCEEDED, EventType.BUILD_FAILED, EventType.BUILD_CANCELLED)


@dataclass(frozen=True)
class Usage:
    """LLM usage: tokens, cost, calls and the provider/model labels that served them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    models: tuple[str, ...] = ()

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def plus(self, other: Usage) -> Usage:
        """The sum of two usages (models merged in first-seen order)."""
        models = tuple(dict.fromkeys((*self.models, *other.models)))
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     round(self.cost_usd + other.cost_usd, 12), self.calls + other.calls, models)

    def minus(self, earlier: Usage) -> Usage:
        """What was used since ``earlier`` (a snapshot of the same meter)."""
        models = tuple(model for model in self.models if model not in earlier.models)
        return Usage(self.input_tokens - earlier.input_tokens, self.output_tokens - earlier.output_tokens,
                     round(self.cost_usd - earlier.cost_usd, 12), self.calls - earlier.calls, models)

    def to_json(self) -> JSON:
        """JSON form for storage and event details."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost_usd": self.cost_usd,
                "calls": self.calls, "models": list(self.models)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Usage:
        """Inverse of :meth:`to_json`; None gives zero usage."""
        if not value:
            return cls()
        return cls(int(value.get("input_tokens", 0)), int(value.get("output_tokens", 0)),
                   float(value.get("cost_usd", 0.0)), int(value.get("calls", 0)), tuple(value.get("models", ())))


class CaseOrigin:
    """Where a validation case came from (``ValidationCase.origin``); "" for cases stored before origins."""

    DERIVED = "derived"
    SAMPLE = "sample"
    ACCEPTANCE = "acceptance"


@dataclass(frozen=True)
class AcceptanceCase:
    """A caller's input -> expected output pair; ``comparison`` is a tdev_common.llm.acceptance mode."""

    inputs: JSON
    expected: JSON
    comparison: str = "exact"
    tolerance: float = 0.0
    name: str = ""

    def label(self, index: int) -> str:
        """How reports and errors name the case: its name, else its position (1-based)."""
        return f"acceptance case {index + 1}" + (f" ({self.name})" if self.name else "")

    def to_json(self) -> JSON:
        """JSON form for storage, the planner and prompts (an acceptance.AcceptanceCase)."""
        value: JSON = {"inputs": self.inputs, "expected": self.expected, "comparison": self.comparison}
        if self.tolerance:
            value["tolerance"] = self.tolerance
        if self.name:
            value["name"] = self.name
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> AcceptanceCase:
        """Inverse of :meth:`to_json`."""
        return cls(dict(value.get("inputs") or {}), dict(value.get("expected") or {}),
                   str(value.get("comparison") or "exact"), float(value.get("tolerance") or 0.0),
                   str(value.get("name") or ""))


@dataclass(frozen=True)
class Constraints:
    """Resolved limits and options of a build (defaults already applied)."""

    max_tokens: int
    max_cost_usd: float
    max_duration_seconds: float
    max_fix_attempts: int
    disable_reuse: bool = False
    sample_inputs: tuple[JSON, ...] = ()
    acceptance_cases: tuple[AcceptanceCase, ...] = ()

    def to_json(self) -> JSON:
        """JSON form for storage (``acceptance_cases`` only when there are some: older rows lack the key)."""
        value: JSON = {"max_tokens": self.max_tokens, "max_cost_usd": self.max_cost_usd,
                       "max_duration_seconds": self.max_duration_seconds, "max_fix_attempts": self.max_fix_attempts,
                       "disable_reuse": self.disable_reuse, "sample_inputs": [dict(s) for s in self.sample_inputs]}
        if self.acceptance_cases:
            value["acceptance_cases"] = [case.to_json() for case in self.acceptance_cases]
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Constraints:
        """Inverse of :meth:`to_json`."""
        return cls(int(value["max_tokens"]), float(value["max_cost_usd"]), float(value["max_duration_seconds"]),
                   int(value["max_fix_attempts"]), bool(value.get("disable_reuse", False)),
                   tuple(dict(s) for s in value.get("sample_inputs", ())),
                   tuple(AcceptanceCase.from_json(c) for c in value.get("acceptance_cases") or ()))


@dataclass(frozen=True)
class RequestedConstraints:
    """Constraints as a caller gave them; zero values mean the service defaults."""

    max_tokens: int = 0
    max_cost_usd: float = 0.0
    max_duration_seconds: float = 0.0
    max_fix_attempts: int = 0
    disable_reuse: bool = False
    sample_inputs: tuple[JSON, ...] = ()
    acceptance_cases: tuple[AcceptanceCase, ...] = ()


@dataclass(frozen=True)
class BuildError:
    """Why a build failed: a gRPC status code name, a message and the stage."""

    code: str
    message: str
    stage: Stage | None = None

    def to_json(self) -> JSON:
        """JSON form for storage."""
        return {"code": self.code, "message": self.message, "stage": int(self.stage) if self.stage else 0}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> BuildError | None:
        """Inverse of :meth:`to_json`."""
        if not value:
            return None
        stage = int(value.get("stage", 0))
        return cls(str(value["code"]), str(value["message"]), Stage(stage) if stage else None)


@dataclass(frozen=True)
class StageResult:
    """What one run of one stage did."""

    stage: Stage
    state: StageState
    attempt: int = 1
    summary: str = ""
    details: JSON = field(default_factory=dict)
    duration_ms: float = 0.0
    usage: Usage = field(default_factory=Usage)

    def to_json(self) -> JSON:
        """JSON form for storage."""
        return {"stage": int(self.stage), "state": int(self.state), "attempt": self.attempt, "summary": self.summary,
                "details": self.details, "duration_ms": self.duration_ms, "usage": self.usage.to_json()}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> StageResult:
        """Inverse of :meth:`to_json`."""
        return cls(Stage(int(value["stage"])), StageState(int(value["state"])), int(value.get("attempt", 1)),
                   str(value.get("summary", "")), dict(value.get("details") or {}),
                   float(value.get("duration_ms", 0.0)), Usage.from_json(value.get("usage")))


@dataclass(frozen=True)
class PackagedAgent:
    """One agent version used or registered by a build."""

    spec_name: str
    agent_id: str
    version: str
    reused: bool = False
    fix_attempts: int = 0
    node_id: str = ""

    def to_json(self) -> JSON:
        """JSON form for storage."""
        return {"spec_name": self.spec_name, "agent_id": self.agent_id, "version": self.version,
                "reused": self.reused, "fix_attempts": self.fix_attempts, "node_id": self.node_id}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> PackagedAgent:
        """Inverse of :meth:`to_json`."""
        return cls(str(value["spec_name"]), str(value["agent_id"]), str(value["version"]),
                   bool(value.get("reused", False)), int(value.get("fix_attempts", 0)), str(value.get("node_id", "")))


@dataclass(frozen=True)
class ValidationCase:
    """One run of the composed workflow on sample inputs; ``expected`` is None for caller samples."""

    inputs: JSON
    expected: JSON | None
    actual: JSON | None
    passed: bool
    execution_id: str = ""
    message: str = ""
    origin: str = ""  # a CaseOrigin value; "" in reports stored before origins existed
    name: str = ""
    comparison: str = "exact"

    def to_json(self) -> JSON:
        """JSON form for storage (the newer keys only when set, so stored reports read back unchanged)."""
        value: JSON = {"inputs": self.inputs, "expected": self.expected, "actual": self.actual,
                       "passed": self.passed, "execution_id": self.execution_id, "message": self.message}
        if self.origin:
            value["origin"] = self.origin
        if self.name:
            value["name"] = self.name
        if self.comparison != "exact":
            value["comparison"] = self.comparison
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ValidationCase:
        """Inverse of :meth:`to_json`."""
        return cls(dict(value.get("inputs") or {}), value.get("expected"), value.get("actual"),
                   bool(value.get("passed", False)), str(value.get("execution_id", "")),
                   str(value.get("message", "")), str(value.get("origin", "")), str(value.get("name", "")),
                   str(value.get("comparison") or "exact"))


@dataclass(frozen=True)
class ServicePackage:
    """The result of a successful build."""

    service_id: str
    workflow_id: str
    workflow_version: str
    agents: tuple[PackagedAgent, ...]
    input_schema: JSON
    output_schema: JSON
    readme: str
    validation_report: tuple[ValidationCase, ...]
    usage: Usage
    build_seconds: float
    derived_examples_only: bool = False
    validation_basis: str = ""

    def to_json(self) -> JSON:
        """JSON form for storage."""
        return {"service_id": self.service_id, "workflow_id": self.workflow_id,
                "workflow_version": self.workflow_version, "agents": [a.to_json() for a in self.agents],
                "input_schema": self.input_schema, "output_schema": self.output_schema, "readme": self.readme,
                "validation_report": [c.to_json() for c in self.validation_report], "usage": self.usage.to_json(),
                "build_seconds": self.build_seconds, "derived_examples_only": self.derived_examples_only,
                "validation_basis": self.validation_basis}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> ServicePackage | None:
        """Inverse of :meth:`to_json`."""
        if not value:
            return None
        return cls(str(value["service_id"]), str(value["workflow_id"]), str(value["workflow_version"]),
                   tuple(PackagedAgent.from_json(a) for a in value.get("agents", ())),
                   dict(value.get("input_schema") or {}), dict(value.get("output_schema") or {}),
                   str(value.get("readme", "")),
                   tuple(ValidationCase.from_json(c) for c in value.get("validation_report", ())),
                   Usage.from_json(value.get("usage")), float(value.get("build_seconds", 0.0)),
                   bool(value.get("derived_examples_only", False)), str(value.get("validation_basis", "")))


@dataclass(frozen=True)
class Build:
    """A build as stored."""

    build_id: str
    requirements: str
    constraints: Constraints
    state: BuildState
    stages: tuple[StageResult, ...] = ()
    package: ServicePackage | None = None
    error: BuildError | None = None
    usage: Usage = field(default_factory=Usage)
    last_sequence: int = 0
    create_time: datetime = EPOCH
    update_time: datetime = EPOCH
    registered_agents: tuple[PackagedAgent, ...] = ()
    elapsed_seconds: float = 0.0
    marking: str = ""  # registry labels of its versions once ended: "", "pending", "done" or "failed"

    @property
    def state_detail(self) -> str:
        """What the state rests on: the package's validation basis, or why acceptance cases failed."""
        if self.state == BuildState.SUCCEEDED and self.package is not None:
            return self.package.validation_basis or "validated on derived examples only (no acceptance cases given)"
        if self.state == BuildState.FAILED and self.constraints.acceptance_cases and self.error is not None \
                and "acceptance case" in self.error.message:
            return f"not accepted: {len(self.constraints.acceptance_cases)} acceptance cases given, see the error"
        return ""


class Marking:
    """States of the registry marking of an ended build's agent versions (``builds.marks_state``)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class MarkJob:
    """An ended build whose versions a replica is marking now; ``epoch`` fences its result (a later request to
    mark the build again is not overwritten by this job's "done")."""

    build: Build
    epoch: int
    attempts: int = 0


@dataclass(frozen=True)
class BuildEvent:
    """One stored state change of a build."""

    sequence: int
    build_id: str
    type: EventType
    time: datetime
    stage: Stage | None = None
    message: str = ""
    details: JSON = field(default_factory=dict)
    duration_ms: float = 0.0
    usage: Usage | None = None
    error: BuildError | None = None


@dataclass(frozen=True)
class NewEvent:
    """An event about to be stored; the repository assigns its sequence number and time."""

    type: EventType
    stage: Stage | None = None
    message: str = ""
    details: JSON = field(default_factory=dict)
    duration_ms: float = 0.0
    usage: Usage | None = None
    error: BuildError | None = None


@dataclass(frozen=True)
class Progress:
    """The mutable part of a build, written atomically with each event by the lease holder."""

    state: BuildState
    stages: tuple[StageResult, ...] = ()
    checkpoint: JSON = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    elapsed_seconds: float = 0.0
    error: BuildError | None = None
    package: ServicePackage | None = None
    registered_agents: tuple[PackagedAgent, ...] = ()

    def with_stage(self, result: StageResult) -> Progress:
        """Replaces the entry of the same stage and attempt, or appends it."""
        stages = list(self.stages)
        for index, existing in enumerate(stages):
            if existing.stage == result.stage and existing.attempt == result.attempt:
                stages[index] = result
                return replace(self, stages=tuple(stages))
        return replace(self, stages=(*stages, result))

    def with_checkpoint(self, **values: Any) -> Progress:
        """The checkpoint with some keys replaced."""
        return replace(self, checkpoint={**self.checkpoint, **values})

    def with_registered(self, agents: Iterable[PackagedAgent]) -> Progress:
        """Adds registered versions not listed yet."""
        known = {(a.agent_id, a.version) for a in self.registered_agents}
        added = [a for a in agents if (a.agent_id, a.version) not in known]
        return replace(self, registered_agents=(*self.registered_agents, *added)) if added else self


@dataclass(frozen=True)
class Lease:
    """The right to work on one build: fenced by owner and epoch."""

    build_id: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class Claimed:
    """A build claimed by a worker, with everything needed to resume it."""

    build: Build
    checkpoint: JSON
    lease: Lease


@dataclass(frozen=True)
class BuildFilter:
    """ListBuilds filter."""

    state: BuildState | None = None


@dataclass(frozen=True)
class StartCommand:
    """StartBuild / BuildService request."""

    requirements: str
    constraints: RequestedConstraints
    request_id: str = ""
    # What the request was (tdev_common.idempotency.fingerprint): a replayed request_id must come with the same one.
    fingerprint: str = ""


# ---- what the stages hand each other (kept in the build's checkpoint) -----------------------------------------
# The checkpoint is stored as JSON (``builds.checkpoint``) and builds persisted by earlier versions must resume,
# so each type below writes exactly the keys the stages wrote when these were plain dicts, in the same order.
@dataclass(frozen=True)
class AgentSpec:
    """One agent of the plan, as the stages read it; ``data`` is the whole spec as planned, which plan checks,
    composition and the LLM prompts take as it is (schemas, inputs, implementation hints)."""

    id: str
    name: str
    purpose: str
    examples: tuple[JSON, ...]
    reuse_agent_id: str = ""
    reuse_version: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> AgentSpec:
        """A spec of a plan already checked against AGENT_PLAN_SCHEMA."""
        suggestion = value.get("reuse") or {}
        return cls(str(value["id"]), str(value["name"]), str(value.get("purpose", "")),
                   tuple(dict(e) for e in value.get("examples") or ()), str(suggestion.get("agent_id") or ""),
                   str(suggestion.get("version", "")), value)

    def with_examples(self, examples: Iterable[Mapping[str, Any]]) -> JSON:
        """The spec as planned with other examples, for the code generation and repair prompts."""
        return {**self.data, "examples": [dict(e) for e in examples]}


@dataclass(frozen=True)
class ChosenAgent:
    """The agent version selected (reused or generated) for one spec, in the validation ``round`` that chose it."""

    agent_id: str
    version: str
    name: str
    reused: bool
    fix_attempts: int
    spec_name: str
    node_id: str
    round: int = 1

    def to_json(self) -> JSON:
        """JSON form for the checkpoint and event details."""
        return {"agent_id": self.agent_id, "version": self.version, "name": self.name, "reused": self.reused,
                "fix_attempts": self.fix_attempts, "spec_name": self.spec_name, "node_id": self.node_id,
                "round": self.round}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ChosenAgent:
        """Inverse of :meth:`to_json`."""
        return cls(str(value["agent_id"]), str(value["version"]), str(value["name"]), bool(value["reused"]),
                   int(value["fix_attempts"]), str(value["spec_name"]), str(value["node_id"]),
                   int(value.get("round", 1)))

    def packaged(self) -> PackagedAgent:
        """The entry of this agent in a service package."""
        return PackagedAgent(spec_name=self.spec_name, agent_id=self.agent_id, version=self.version,
                             reused=self.reused, fix_attempts=self.fix_attempts, node_id=self.node_id)


@dataclass(frozen=True)
class PendingFix:
    """What validation blamed an agent for: the failure its repair gets, and (when known) an example to add."""

    failure: Failure
    example: JSON | None = None
    # The caller's acceptance cases the workflow failed while this agent was blamed (inputs, expected and actual
    # workflow outputs, comparison, what differed), shown to the repair.
    cases: tuple[JSON, ...] = ()

    def to_json(self) -> JSON:
        """JSON form for the checkpoint (``cases`` only when set, as older checkpoints have none)."""
        value: JSON = {"failure": dict(self.failure), "example": self.example}
        if self.cases:
            value["cases"] = [dict(case) for case in self.cases]
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> PendingFix:
        """Inverse of :meth:`to_json`."""
        example = value.get("example")
        return cls(cast(Failure, dict(value["failure"])), dict(example) if example is not None else None,
                   tuple(dict(case) for case in value.get("cases") or ()))


@dataclass(frozen=True)
class WorkflowRef:
    """The composed workflow as the workflow service stored it."""

    workflow_id: str
    version: str

    def to_json(self) -> JSON:
        """JSON form for the checkpoint and event details."""
        return {"workflow_id": self.workflow_id, "version": self.version}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> WorkflowRef:
        """Inverse of :meth:`to_json`."""
        return cls(str(value["workflow_id"]), str(value["version"]))


@dataclass(frozen=True)
class Checkpoint:
    """What the finished stages of a build recorded (``Progress.checkpoint`` read as types).

    ``done`` lists the finished stage runs (``<stage key>:<attempt>``); ``round`` is the validation round the
    build is in. A key no stage has written yet is None (or empty) here and absent from :meth:`to_json`.
    """

    done: tuple[str, ...] = ()
    analysis: JSON | None = None
    plan: JSON | None = None
    agents: Mapping[str, ChosenAgent] = field(default_factory=dict)
    workflow: WorkflowRef | None = None
    validation: tuple[ValidationCase, ...] | None = None
    round: int | None = None
    pending_fixes: Mapping[str, PendingFix] | None = None

    @property
    def round_number(self) -> int:
        """The validation round: 1 until validation sends the build back to fixing."""
        return self.round or 1

    @property
    def specs(self) -> tuple[AgentSpec, ...]:
        """The plan's agents in the planner's order (none before identify agents has finished)."""
        return tuple(AgentSpec.from_json(agent) for agent in (self.plan or {}).get("agents") or ())

    def to_json(self) -> JSON:
        """JSON form, as stored in ``builds.checkpoint``."""
        value: JSON = {}
        if self.agents:
            value["agents"] = {spec_id: agent.to_json() for spec_id, agent in self.agents.items()}
        if self.analysis is not None:
            value["analysis"] = self.analysis
        value["done"] = list(self.done)
        if self.pending_fixes is not None:
            value["pending_fixes"] = {spec_id: fix.to_json() for spec_id, fix in self.pending_fixes.items()}
        if self.plan is not None:
            value["plan"] = self.plan
        if self.round is not None:
            value["round"] = self.round
        if self.validation is not None:
            value["validation"] = [case.to_json() for case in self.validation]
        if self.workflow is not None:
            value["workflow"] = self.workflow.to_json()
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Checkpoint:
        """Inverse of :meth:`to_json`; reads checkpoints written before these types existed (the same JSON)."""
        workflow = value.get("workflow")
        validation = value.get("validation")
        pending = value.get("pending_fixes")
        return cls(
            done=tuple(str(key) for key in value.get("done") or ()),
            analysis=dict(value["analysis"]) if value.get("analysis") is not None else None,
            plan=dict(value["plan"]) if value.get("plan") is not None else None,
            agents={str(k): ChosenAgent.from_json(v) for k, v in (value.get("agents") or {}).items()},
            workflow=WorkflowRef.from_json(workflow) if workflow else None,
            validation=tuple(ValidationCase.from_json(c) for c in validation) if validation is not None else None,
            round=int(value["round"]) if value.get("round") is not None else None,
            pending_fixes=({str(k): PendingFix.from_json(v) for k, v in pending.items()}
                           if pending is not None else None),
        )


# ---- what the builder learns from and sends to the other services -------------------------------------------
@dataclass(frozen=True)
class AgentSummary:
    """A registry agent version as search and get return it."""

    agent_id: str
    name: str
    version: str
    class_name: str
    description: str
    capabilities: JSON
    labels: Mapping[str, str] = field(default_factory=dict)
    code: str = ""
    code_hash: str = ""


@dataclass(frozen=True)
class AgentRegistration:
    """RegisterAgent: code for a spec with its lineage and labels."""

    name: str
    code: str
    description: str
    parents: tuple[tuple[str, str], ...]
    labels: Mapping[str, str]
    request_id: str


@dataclass(frozen=True)
class WorkflowNode:
    """One node of a composed workflow."""

    node_id: str
    agent_id: str
    agent_version: str
    inputs: Mapping[str, str]
    depends_on: tuple[str, ...]
    timeout_seconds: float


@dataclass(frozen=True)
class WorkflowDefinition:
    """A composed workflow definition, before the workflow service stores it."""

    name: str
    version: str
    description: str
    nodes: tuple[WorkflowNode, ...]
    outputs: Mapping[str, str]
    metadata: JSON

    def to_json(self) -> JSON:
        """The protobuf JSON mapping of tdev.workflow.v1.Workflow (also shown in stage details)."""
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "nodes": [{"id": n.node_id, "agent_id": n.agent_id, "agent_version": n.agent_version,
                       "inputs": {key: {"$ref": ref} for key, ref in n.inputs.items()},
                       "depends_on": list(n.depends_on), "timeout_seconds": n.timeout_seconds}
                      for n in self.nodes],
            "outputs": dict(self.outputs), "metadata": self.metadata, "failure_policy": "FAILURE_POLICY_FAIL_FAST",
        }


@dataclass(frozen=True)
class StoredWorkflow:
    """What CreateWorkflow returned."""

    workflow_id: str
    version: str


@dataclass(frozen=True)
class NodeResult:
    """One node of a finished execution."""

    node_id: str
    state: str
    output: JSON | None = None
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class ExecutionResult:
    """A finished execution of a composed workflow."""

    execution_id: str
    state: str
    outputs: JSON | None
    nodes: Mapping[str, NodeResult]
    error_type: str = ""
    error_message: str = ""
    error_node: str = ""

    @property
    def succeeded(self) -> bool:
        """True when every node succeeded."""
        return self.state == "SUCCEEDED"


@dataclass(frozen=True)
class RepairRequest:
    """StartEvolution for one agent version: its cases (input -> expected output) and the build's limits."""

    agent_id: str
    version: str
    cases: tuple[JSON, ...]
    max_duration_seconds: float
    max_cost_usd: float
    request_id: str
    population_size: int = 12
    generations: int = 10
    operators: str = ""  # "" (the service default), "program_transform", "llm" or "mixed"


@dataclass(frozen=True)
class RepairResult:
    """How an evolution run ended: whether it promoted a new version, and what it cost."""

    run_id: str
    state: str
    stop_reason: str
    promoted: bool
    agent_id: str = ""
    version: str = ""
    reason: str = ""
    seed_fitness: float = 0.0
    best_correctness: float = 0.0
    generations: int = 0
    evaluations: int = 0
    cost_usd: float = 0.0
    error: str = ""

    def to_json(self) -> JSON:
        """JSON form for stage details."""
        return {"run_id": self.run_id, "state": self.state, "stop_reason": self.stop_reason,
                "promoted": self.promoted, "agent_id": self.agent_id, "version": self.version,
                "reason": self.reason, "seed_fitness": self.seed_fitness,
                "best_correctness": self.best_correctness, "generations": self.generations,
                "evaluations": self.evaluations, "cost_usd": self.cost_usd, "error": self.error}


@dataclass(frozen=True)
class ExampleOutcome:
    """One run of agent code on one input in the sandbox."""

    kind: str
    output: JSON | None = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""

    @property
    def ok(self) -> bool:
        """True when execute returned a JSON object."""
        return self.kind == "ok"
