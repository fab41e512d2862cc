"""Domain types of the registry: agent versions, analyses, metrics, lineage, queries and their pages."""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
AGENT_ID_PREFIX = "agent_"


class AnalysisState(enum.Enum):
    """Lifecycle of the asynchronous analysis of one version."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class OrderBy(enum.Enum):
    """Orders of ListAgents."""

    UPDATED = "updated"
    QUALITY = "quality"
    EXECUTIONS = "executions"
    RECENT = "recent"


@dataclass(frozen=True, order=True)
class VersionRef:
    """One version of one agent."""

    agent_id: str
    version: str

    def __str__(self) -> str:
        return f"{self.agent_id}@{self.version}"


# The key of get_capabilities()'s answer by which an agent opts in to warm-process reuse.
REUSE_WARM_PROCESS = "reuse_warm_process"


@dataclass(frozen=True)
class Analysis:
    """The AI analysis of one version; capabilities and quality are set once it has succeeded."""

    state: AnalysisState = AnalysisState.PENDING
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    quality_score: float | None = None
    static_metrics: Mapping[str, Any] = field(default_factory=dict)
    models_used: tuple[str, ...] = ()
    analysis_time: datetime | None = None
    duration_ms: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Metrics:
    """Execution metrics of one version, aggregated from recorded executions."""

    execution_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    average_duration_ms: float = 0.0
    p95_duration_ms: float = 0.0
    total_tokens: int = 0
    total_cost_usd: float = 0.0

    @property
    def success_rate(self) -> float:
        """success_count / execution_count, 0 when nothing ran."""
        return self.success_count / self.execution_count if self.execution_count else 0.0


@dataclass(frozen=True)
class AgentVersion:
    """One stored version of an agent. ``code`` is None when the view left it out."""

    agent_id: str
    name: str
    version: str
    description: str
    code: str | None
    code_hash: str
    class_name: str
    declared_capabilities: Mapping[str, Any]
    execute_is_async: bool
    parents: tuple[VersionRef, ...]
    labels: Mapping[str, str]
    analysis: Analysis
    metrics: Metrics
    create_time: datetime
    update_time: datetime
    code_size_bytes: int

    @property
    def ref(self) -> VersionRef:
        """This version's reference."""
        return VersionRef(self.agent_id, self.version)

    @property
    def reuses_warm_process(self) -> bool:
        """Whether the code opts in to warm-process reuse: ``get_capabilities()`` returned
        ``"reuse_warm_process": True`` (docs/workflow.md, "Warm-process reuse")."""
        return self.declared_capabilities.get(REUSE_WARM_PROCESS) is True


@dataclass(frozen=True)
class CodeFacts:
    """What static validation learnt about agent source."""

    class_name: str
    execute_is_async: bool
    line_count: int


@dataclass(frozen=True)
class Inspection:
    """What loading the class in the sandbox reported."""

    class_name: str
    declared_capabilities: Mapping[str, Any]


@dataclass(frozen=True)
class RegisterCommand:
    """A request to register code under a name."""

    name: str
    code: str
    description: str = ""
    parents: tuple[VersionRef, ...] = ()
    version: str = ""
    request_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # What the request was (tdev_common.idempotency.fingerprint): a replayed request_id must come with the same one.
    fingerprint: str = ""


@dataclass(frozen=True)
class Registration:
    """Result of RegisterAgent: the stored version and whether this call created it."""

    agent: AgentVersion
    created: bool


@dataclass(frozen=True)
class NewVersion:
    """Everything the repository needs to store a new version (and a new agent when agent_is_new)."""

    agent_id: str
    agent_is_new: bool
    name: str
    version: str
    description: str
    code: str
    code_hash: str
    class_name: str
    declared_capabilities: Mapping[str, Any]
    execute_is_async: bool
    parents: tuple[VersionRef, ...]
    labels: Mapping[str, str]
    request_id: str
    search_text: str
    capabilities_text: str
    static_metrics: Mapping[str, Any]
    create_time: datetime
    previous_latest: str = ""
    request_fingerprint: str = ""


@dataclass(frozen=True)
class LabelUpdate:
    """UpdateAgentLabels: labels to set and keys to remove on one existing version."""

    ref: VersionRef
    set_labels: Mapping[str, str] = field(default_factory=dict)
    remove_labels: tuple[str, ...] = ()
    request_id: str = ""

    @property
    def fingerprint(self) -> str:
        """What the change is, independent of map and list order (a replayed request id must match it)."""
        body = json.dumps([self.ref.agent_id, self.ref.version, sorted(self.set_labels.items()),
                           sorted(set(self.remove_labels))], separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class LabelsUpdated:
    """What UpdateAgentLabels did: the version as it is now, whether its labels changed, whether it was a replay."""

    agent: AgentVersion
    changed: bool
    replayed: bool = False


@dataclass(frozen=True)
class AgentIdentity:
    """An agent's stable id, name and its versions (oldest first)."""

    agent_id: str
    name: str
    versions: tuple[str, ...]

    @property
    def latest(self) -> str:
        """The newest version."""
        return self.versions[-1]


@dataclass(frozen=True)
class Selector:
    """Which agent version to read: by id or name, a version or the latest."""

    agent_id: str = ""
    name: str = ""
    version: str = ""


@dataclass(frozen=True)
class ListQuery:
    """Filters, order and position of one ListAgents page."""

    name_contains: str = ""
    capability: str = ""
    state: AnalysisState | None = None
    min_quality: float = 0.0
    order: OrderBy = OrderBy.UPDATED
    page_size: int = 50
    after: tuple[Any, str] | None = None
    include_code: bool = True




@dataclass(frozen=True)
class LineageEdge:
    """child was derived from parent."""

    child: VersionRef
    parent: VersionRef


@dataclass(frozen=True)
class Lineage:
    """The ancestry of one version."""

    root: VersionRef
    edges: tuple[LineageEdge, ...]
    agents: tuple[AgentVersion, ...]


@dataclass(frozen=True)
class ExecutionRecord:
    """One execution outcome reported by a caller."""

    execution_id: str
    agent_id: str
    version: str
    success: bool
    duration_ms: float
    tokens: int = 0
    cost_usd: float = 0.0
    finish_time: datetime | None = None
    error_type: str = ""
    case: CapturedCase | None = None

    @property
    def ref(self) -> VersionRef:
        """The version that ran."""
        return VersionRef(self.agent_id, self.version)


@dataclass(frozen=True)
class RecordResult:
    """What RecordExecutions applied."""

    accepted: int
    duplicates: int
    touched: tuple[VersionRef, ...] = ()


@dataclass(frozen=True)
class SearchCandidate:
    """An agent's latest version with what search scores it on; fts_rank is set by Postgres."""

    agent: AgentVersion
    search_text: str
    capabilities_text: str
    fts_rank: float | None = None
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SearchHit:
    """One ranked search result."""

    agent: AgentVersion
    score: float
    text_score: float
    reasons: tuple[str, ...]
    matcher: str


@dataclass(frozen=True)
class AnalysisJob:
    """A claimed analysis: the version to analyse and the lease fencing its result."""

    ref: VersionRef
    name: str
    description: str
    code: str
    class_name: str
    declared_capabilities: Mapping[str, Any]
    owner: str
    attempt: int


@dataclass(frozen=True)
class AnalysisReport:
    """What an analyzer said about a version."""

    capabilities: Mapping[str, Any]
    model_quality: float | None
    models_used: tuple[str, ...]
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CapturedCase:
    """What an agent received and answered in production (sent with its execution record)."""

    inputs: dict[str, Any]
    output: dict[str, Any] | None = None
    error_message: str = ""
    source: str = ""


class CaseFilter(enum.IntEnum):
    """Which cases a list returns (values are the proto's)."""

    ALL = 0
    FAILING = 1
    SUCCEEDING = 2
    LABELLED = 3
    UNLABELLED = 4


@dataclass(frozen=True)
class AgentCase:
    """A stored production case of one version; ``expected`` once labelled."""

    case_id: str
    agent_id: str
    version: str
    execution_id: str
    success: bool
    inputs: dict[str, Any]
    output: dict[str, Any] | None
    error_type: str
    error_message: str
    source: str
    expected: dict[str, Any] | None
    create_time: datetime
    label_time: datetime | None = None

    @property
    def labelled(self) -> bool:
        """Whether a caller said what the output should have been."""
        return self.expected is not None


CANARY = "canary"
STABLE = "stable"


@dataclass(frozen=True)
class RolloutPolicy:
    """When a canary is judged against stable (see the proto's RolloutPolicy for the rule)."""

    min_sample: int = 20
    max_success_rate_drop: float = 0.05
    max_latency_ratio: float = 1.5
    min_latency_increase_ms: float = 5.0


UNSET_ROLLOUT = RolloutPolicy(0, 0.0, 0.0, 0.0)  # every field at "0 means the default", as stored


@dataclass(frozen=True)
class AgentAlias:
    """A named pointer to one version; a canary also has its traffic share and rollout policy."""

    agent_id: str
    alias: str
    version: str
    update_time: datetime
    traffic_fraction: float = 0.0
    rollout: RolloutPolicy | None = None


class AliasEventKind(enum.IntEnum):
    """What happened to an alias (values are the proto's)."""

    SET = 1
    DELETED = 2
    PROMOTED = 3
    ROLLED_BACK = 4


@dataclass(frozen=True)
class AliasEvent:
    """One change of an agent's aliases, by a person or by a rollout decision."""

    agent_id: str
    alias: str
    kind: AliasEventKind
    version: str
    message: str
    time: datetime


@dataclass(frozen=True)
class VersionStats:
    """Executions of one version since a moment."""

    version: str
    executions: int
    success_rate: float
    median_duration_ms: float
