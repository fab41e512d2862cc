"""Workflow definitions, executions, node runs and events as frozen dataclasses and enums.

Timestamps are aware UTC datetimes (docs/conventions.md, "One time type"); durations, backoffs and lease
deadlines are float seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonObject = dict[str, Any]


class FailurePolicy(enum.IntEnum):
    """What happens to the rest of the graph when a node fails for good (values match the proto)."""

    UNSPECIFIED = 0
    FAIL_FAST = 1
    CONTINUE = 2


class ExecutionState(enum.IntEnum):
    """Lifecycle of an execution (values match the proto)."""

    UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def is_terminal(self) -> bool:
        """True once the execution has ended."""
        return self in (ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.CANCELLED)


class NodeState(enum.IntEnum):
    """Lifecycle of one node within one execution (values match the proto)."""

    UNSPECIFIED = 0
    PENDING = 1
    SCHEDULED = 2
    RUNNING = 3
    RETRYING = 4
    SUCCEEDED = 5
    FAILED = 6
    SKIPPED = 7
    CANCELLED = 8

    @property
    def is_terminal(self) -> bool:
        """True once the node will not change any more within this execution."""
        return self in (NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED)


class EventType(enum.IntEnum):
    """What an event records (values match the proto)."""

    UNSPECIFIED = 0
    EXECUTION_STARTED = 1
    EXECUTION_SUCCEEDED = 2
    EXECUTION_FAILED = 3
    EXECUTION_CANCELLED = 4
    NODE_SCHEDULED = 5
    NODE_STARTED = 6
    NODE_RETRYING = 7
    NODE_SUCCEEDED = 8
    NODE_FAILED = 9
    NODE_SKIPPED = 10
    EXECUTION_RESUMED = 11
    NODE_CANCELLED = 12

    @property
    def ends_execution(self) -> bool:
        """True for the last event of an execution."""
        return self in _END_EVENTS


_END_EVENTS = frozenset(
    {EventType.EXECUTION_SUCCEEDED, EventType.EXECUTION_FAILED, EventType.EXECUTION_CANCELLED}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of failed attempts; zero values mean the documented defaults."""

    max_retries: int = 0
    backoff_multiplier: float = 0.0
    initial_backoff: float = 0.0
    max_backoff: float = 0.0

    @property
    def multiplier(self) -> float:
        """The effective multiplier (default 2)."""
        return self.backoff_multiplier or 2.0

    @property
    def initial(self) -> float:
        """The effective first backoff in seconds (default 0.1)."""
        return self.initial_backoff or 0.1

    @property
    def ceiling(self) -> float:
        """The effective largest backoff in seconds (default 30)."""
        return self.max_backoff or 30.0


@dataclass(frozen=True)
class NodeSpec:
    """One node of a definition."""

    id: str
    agent_id: str
    agent_version: str = ""
    inputs: JsonObject = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    retry_policy: RetryPolicy = RetryPolicy()
    timeout_seconds: float = 0.0
    required_resources: JsonObject = field(default_factory=dict)
    agent_name: str = ""
    agent_alias: str = ""


@dataclass(frozen=True)
class AliasTarget:
    """Where an alias of an agent points: a version, and for a canary the share of stable's executions."""

    version: str
    traffic_fraction: float = 0.0


@dataclass(frozen=True)
class PlanGeneration:
    """One parallel group of the plan."""

    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class ExecutionPlan:
    """Topological generations, the critical path and per-node priorities."""

    generations: tuple[PlanGeneration, ...] = ()
    critical_path: tuple[str, ...] = ()
    priorities: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CapturePolicy:
    """Opt-in capture of production cases (see the proto's CapturePolicy)."""

    enabled: bool = False
    success_sample_rate: float = 0.0
    max_case_bytes: int = 0
    redact_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkflowSpec:
    """A definition as given by a caller (before it is stored)."""

    name: str
    version: str = ""
    description: str = ""
    nodes: tuple[NodeSpec, ...] = ()
    metadata: JsonObject = field(default_factory=dict)
    failure_policy: FailurePolicy = FailurePolicy.UNSPECIFIED
    max_concurrency: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    capture: CapturePolicy = field(default_factory=CapturePolicy)


@dataclass(frozen=True)
class Workflow:
    """A stored, validated definition with its plan."""

    workflow_id: str
    spec: WorkflowSpec
    plan: ExecutionPlan
    create_time: datetime
    update_time: datetime

    def node(self, node_id: str) -> NodeSpec:
        """The node with this id (KeyError when absent)."""
        return self.nodes_by_id[node_id]

    @property
    def nodes_by_id(self) -> dict[str, NodeSpec]:
        """Nodes keyed by id."""
        return {node.id: node for node in self.spec.nodes}


@dataclass(frozen=True)
class ErrorInfo:
    """Why something failed."""

    type: str
    message: str
    traceback: str = ""
    node_id: str = ""

    def to_json(self) -> JsonObject:
        """A JSON object for storage."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback, "node_id": self.node_id}

    @staticmethod
    def from_json(value: JsonObject | None) -> ErrorInfo | None:
        """The inverse of :meth:`to_json`; None stays None."""
        if not value:
            return None
        return ErrorInfo(
            type=str(value.get("type", "")),
            message=str(value.get("message", "")),
            traceback=str(value.get("traceback", "")),
            node_id=str(value.get("node_id", "")),
        )


@dataclass(frozen=True)
class Event:
    """One stored state change of an execution."""

    execution_id: str
    sequence: int
    type: EventType
    time: datetime
    node_id: str = ""
    attempt: int = 0
    duration_ms: float = 0.0
    output: JsonObject | None = None
    output_ref: str = ""
    error: ErrorInfo | None = None
    backoff_seconds: float = 0.0
    message: str = ""
    worker_id: str = ""


@dataclass(frozen=True)
class NodeRun:
    """The state of one node in one execution."""

    node_id: str
    state: NodeState = NodeState.PENDING
    attempt: int = 0
    failures: int = 0
    output: JsonObject | None = None
    output_ref: str = ""
    error: ErrorInfo | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: float = 0.0
    agent_version: str = ""


@dataclass(frozen=True)
class Execution:
    """One execution of a workflow."""

    execution_id: str
    workflow_id: str
    state: ExecutionState
    inputs: JsonObject
    failure_policy: FailurePolicy
    create_time: datetime
    update_time: datetime
    outputs: JsonObject | None = None
    error: ErrorInfo | None = None
    last_sequence: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    nodes: tuple[NodeRun, ...] = ()
    cancel_requested: bool = False
    request_id: str = ""


@dataclass(frozen=True)
class ExecutionFilter:
    """Filters of ListExecutions."""

    workflow_id: str = ""
    state: ExecutionState = ExecutionState.UNSPECIFIED


@dataclass(frozen=True)
class StartRequest:
    """What StartExecution and ExecuteWorkflow ask for."""

    workflow_id: str
    inputs: JsonObject
    request_id: str = ""
    failure_policy: FailurePolicy = FailurePolicy.UNSPECIFIED
    # What the request was (tdev_common.idempotency.fingerprint): a replayed request_id must come with the same one.
    fingerprint: str = ""


@dataclass(frozen=True)
class AgentRef:
    """An agent as named in a definition: id or name, and an optional version."""

    agent: str
    version: str = ""


@dataclass(frozen=True)
class AgentInfo:
    """What the registry says about one agent version."""

    agent_id: str
    name: str
    version: str
    code: str = ""
    class_name: str = ""
    average_duration_ms: float = 0.0
    # The code opted in to warm-process reuse (docs/workflow.md, "Warm-process reuse").
    reuses_warm_process: bool = False


@dataclass(frozen=True)
class Claim:
    """A lease on one execution held by this worker; every write is fenced by (owner, epoch)."""

    execution_id: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class OutcomeRecord:
    """One node attempt's outcome, reported to the registry."""

    record_id: str
    agent_id: str
    version: str
    success: bool
    duration_ms: float
    finish_time: datetime
    error_type: str = ""
    # The production case (inputs, output or error), when the workflow captures them.
    case: JsonObject | None = None


@dataclass
class ExecutionUpdate:
    """Execution-level fields changed by one batch (None: unchanged)."""

    state: ExecutionState | None = None
    outputs: JsonObject | None = None
    error: ErrorInfo | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass
class Batch:
    """Everything one scheduler tick (or several) changed, written in one fenced transaction."""

    events: list[Event] = field(default_factory=list)
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    execution: ExecutionUpdate | None = None
    outbox: list[OutcomeRecord] = field(default_factory=list)
    release: bool = False

    def merge(self, later: Batch) -> None:
        """Folds a later batch into this one (later values win)."""
        self.events.extend(later.events)
        self.nodes.update(later.nodes)
        self.outbox.extend(later.outbox)
        self.release = self.release or later.release
        if later.execution is not None:
            if self.execution is None:
                self.execution = later.execution
            else:
                for name in ("state", "outputs", "error", "start_time", "end_time"):
                    value = getattr(later.execution, name)
                    if value is not None:
                        setattr(self.execution, name, value)

    @property
    def empty(self) -> bool:
        """True when nothing changed."""
        return not (self.events or self.nodes or self.outbox or self.execution or self.release)


@dataclass(frozen=True)
class AttemptResult:
    """What one node attempt produced in the sandbox."""

    ok: bool
    output: JsonObject | None = None
    error: ErrorInfo | None = None
    duration_ms: float = 0.0
    retryable: bool = True
