"""Domain types of the evolution service: suites, configuration, candidates, reports, runs and events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

# Agent inputs and outputs are arbitrary JSON values by contract (DESIGN §3); these aliases say so.
JsonValue = Any
JsonObject = dict[str, Any]

RUN_ID_PREFIX = "evo_"
MAX_CASES = 1000


class ScoringMode(enum.Enum):
    """How a case's output is compared with its expected output."""

    EXACT = "exact"
    NUMERIC_TOLERANCE = "numeric_tolerance"
    JSON_SUBSET = "json_subset"
    SCORER_AGENT = "scorer_agent"


class OperatorSet(enum.Enum):
    """Which variation operators a run uses (UNSPECIFIED is resolved when the run is accepted)."""

    UNSPECIFIED = "unspecified"
    PROGRAM_TRANSFORM = "program_transform"
    LLM = "llm"
    MIXED = "mixed"


class Selection(enum.Enum):
    """How parents are chosen inside an island (UNSPECIFIED is resolved when the run is accepted)."""

    UNSPECIFIED = "unspecified"
    TOURNAMENT = "tournament"
    LEXICASE = "lexicase"
    EPSILON_LEXICASE = "epsilon_lexicase"

    @property
    def is_lexicase(self) -> bool:
        """Whether parents are chosen case by case (and the archive keys on pass vectors)."""
        return self in (Selection.LEXICASE, Selection.EPSILON_LEXICASE)


class RunState(enum.Enum):
    """Lifecycle of a run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once the run can no longer change."""
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StopReason(enum.Enum):
    """Why a run stopped."""

    UNSPECIFIED = "unspecified"
    GENERATIONS = "generations"
    PLATEAU = "plateau"
    EVALUATION_BUDGET = "evaluation_budget"
    COST_BUDGET = "cost_budget"
    TIME_BUDGET = "time_budget"
    PERFECT = "perfect"
    CANCELLED = "cancelled"
    ERROR = "error"


class EventType(enum.Enum):
    """What a stored event records."""

    RUN_STARTED = "run_started"
    GENERATION_COMPLETED = "generation_completed"
    PROMOTION_DECIDED = "promotion_decided"
    RUN_SUCCEEDED = "run_succeeded"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_RESUMED = "run_resumed"

    @property
    def is_terminal(self) -> bool:
        """True for the last event a run ever gets."""
        return self in (EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED)


class CaseCheck(enum.Enum):
    """How a case's output is judged."""

    EXPECTED = "expected"  # compared with ``expected`` by the suite's scoring mode
    NO_ERROR = "no_error"  # passes when execute returns a JSON object (valid against ``output_schema`` if set)


@dataclass(frozen=True)
class EvaluationCase:
    """One case: inputs for ``execute`` and the output expected from it (or, for a NO_ERROR case, only that it
    does not fail)."""

    name: str
    inputs: JsonObject
    expected: JsonObject | None
    held_out: bool = False
    weight: float = 1.0
    check: CaseCheck = CaseCheck.EXPECTED
    output_schema: JsonObject | None = None


@dataclass(frozen=True)
class EvaluationSuite:
    """The cases a candidate is measured on and how outputs are compared."""

    cases: tuple[EvaluationCase, ...]
    scoring_mode: ScoringMode = ScoringMode.EXACT
    tolerance: float = 1e-6
    scorer_agent_id: str = ""
    scorer_agent_version: str = ""
    held_out_fraction: float = 0.0

    @property
    def training(self) -> tuple[EvaluationCase, ...]:
        """Cases used for fitness during the search."""
        return tuple(case for case in self.cases if not case.held_out)

    @property
    def held_out(self) -> tuple[EvaluationCase, ...]:
        """Cases used only for the promotion decision."""
        return tuple(case for case in self.cases if case.held_out)


@dataclass(frozen=True)
class EvolutionConfig:
    """The effective search settings of a run (request values over service defaults)."""

    population_size: int = 50
    generations: int = 20
    mutation_rate: float = 0.1
    crossover_rate: float = 0.5
    elitism: int = 2
    tournament_size: int = 3
    islands: int = 2
    migration_interval: int = 5
    migration_size: int = 2
    seed: int = 0
    operators: OperatorSet = OperatorSet.PROGRAM_TRANSFORM
    max_evaluations: int = 5000
    max_cost_usd: float = 1.0
    max_duration_seconds: float = 600.0
    plateau_generations: int = 5
    promotion_margin: float = 0.01
    speed_weight: float = 0.01
    size_weight: float = 0.01
    promote: bool = True
    selection: Selection = Selection.TOURNAMENT
    # Synthesis operators (synthesis.py) next to the transforms, chosen by a success bandit.
    synthesis: bool = False

    @property
    def uses_llm(self) -> bool:
        """Whether the run calls the LLM layer."""
        return self.operators in (OperatorSet.LLM, OperatorSet.MIXED)

    @property
    def uses_transforms(self) -> bool:
        """Whether the run uses the AST program transforms."""
        return self.operators in (OperatorSet.PROGRAM_TRANSFORM, OperatorSet.MIXED)


@dataclass(frozen=True)
class ConfigOverrides:
    """The settings a caller gave; None means "use the service default"."""

    population_size: int | None = None
    generations: int | None = None
    mutation_rate: float | None = None
    crossover_rate: float | None = None
    elitism: int | None = None
    tournament_size: int | None = None
    islands: int | None = None
    migration_interval: int | None = None
    migration_size: int | None = None
    seed: int | None = None
    operators: OperatorSet = OperatorSet.UNSPECIFIED
    max_evaluations: int | None = None
    max_cost_usd: float | None = None
    max_duration_seconds: float | None = None
    plateau_generations: int | None = None
    promotion_margin: float | None = None
    speed_weight: float | None = None
    size_weight: float | None = None
    promote: bool | None = None
    selection: Selection = Selection.UNSPECIFIED
    synthesis: bool | None = None

    def over(self, defaults: EvolutionConfig) -> EvolutionConfig:
        """The defaults with every given value applied (operators only when specified)."""
        given: dict[str, object] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None or value is OperatorSet.UNSPECIFIED or value is Selection.UNSPECIFIED:
                continue
            given[item.name] = value
        return replace(defaults, **given)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CaseFailure:
    """One failed training case of a candidate: what it returned or raised (for reports and LLM prompts)."""

    case_index: int
    detail: str


@dataclass(frozen=True)
class Measurement:
    """What running a program on cases measured; cacheable by code hash (fitness is derived from it)."""

    case_scores: tuple[float, ...]
    mean_duration_ms: float
    failure: str = ""
    failures: tuple[CaseFailure, ...] = ()
    max_duration_ms: float = 0.0
    # Top-level output keys that were wrong or missing in some failing case (dataflow guidance).
    wrong_keys: tuple[str, ...] = ()
    # Per case, the score when it passed, else how near the output came (below 1): for lexicase only.
    case_closeness: tuple[float, ...] = ()


@dataclass(frozen=True)
class EvaluationLimits:
    """Time a program gets: per case, and for its whole batch of cases (then every case fails)."""

    case_timeout_seconds: float = 2.0
    batch_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Candidate:
    """One evaluated program of a run."""

    code: str
    code_hash: str
    ast_hash: str
    size: int
    generation: int
    operator: str
    parent_hashes: tuple[str, ...]
    fitness: float
    correctness: float
    mean_duration_ms: float
    failure: str = ""
    failures: tuple[CaseFailure, ...] = ()
    # Per training case, in suite order: what lexicase selection and pass-vector descriptors read.
    case_scores: tuple[float, ...] = ()
    wrong_keys: tuple[str, ...] = ()
    case_closeness: tuple[float, ...] = ()


@dataclass(frozen=True)
class OperatorStat:
    """How one operator fared recently: decayed uses and successes, and its share of the next draws."""

    operator: str
    uses: float
    successes: float
    weight: float


@dataclass(frozen=True)
class GenerationReport:
    """Statistics of one finished generation."""

    generation: int
    best_fitness: float
    mean_fitness: float
    median_fitness: float
    improvement_over_seed: float
    improvement_over_previous: float
    diversity: float
    evaluations: int
    cache_hits: int
    duplicates_skipped: int
    cost_usd: float
    duration_ms: float
    archive_size: int
    best_code_hash: str
    best_correctness: float
    total_evaluations: int
    selection: str = ""
    operator_stats: tuple[OperatorStat, ...] = ()


@dataclass(frozen=True)
class Promotion:
    """The promotion decision at the end of a run."""

    promoted: bool
    reason: str
    baseline_held_out_fitness: float = 0.0
    best_held_out_fitness: float = 0.0
    agent_id: str = ""
    version: str = ""


@dataclass(frozen=True)
class AgentSource:
    """One agent version as the registry returned it."""

    agent_id: str
    name: str
    version: str
    code: str
    description: str = ""


@dataclass(frozen=True)
class Event:
    """One stored state change of a run."""

    sequence: int
    run_id: str
    type: EventType
    time: datetime
    report: GenerationReport | None = None
    promotion: Promotion | None = None
    message: str = ""
    stop_reason: StopReason = StopReason.UNSPECIFIED


@dataclass(frozen=True)
class EvolutionRun:
    """A run as callers see it."""

    run_id: str
    agent_id: str
    agent_name: str
    agent_version: str
    suite: EvaluationSuite
    config: EvolutionConfig
    state: RunState
    create_time: datetime
    update_time: datetime
    stop_reason: StopReason = StopReason.UNSPECIFIED
    stop_message: str = ""
    generations: tuple[GenerationReport, ...] = ()
    best: Candidate | None = None
    seed_fitness: float = 0.0
    promotion: Promotion | None = None
    error: str = ""
    last_sequence: int = 0
    automatic: bool = False
    start_reason: str = ""


@dataclass(frozen=True)
class ListQuery:
    """Filters and paging of ListEvolutions."""

    page_size: int = 50
    after: tuple[str, str] | None = None  # (create time ISO 8601, run_id) of the last run of the previous page
    agent_id: str = ""
    state: RunState | None = None


@dataclass(frozen=True)
class CandidateQuery:
    """Paging of ListCandidates: a run's candidates by generation, then code hash."""

    run_id: str
    page_size: int = 50
    after: tuple[int, str] | None = None  # (generation, code_hash) of the last candidate of the previous page
    include_code: bool = True


@dataclass(frozen=True)
class StartRequest:
    """What StartEvolution asks for, converted from the wire."""

    agent: str
    agent_version: str
    suite: EvaluationSuite
    overrides: ConfigOverrides = field(default_factory=ConfigOverrides)
    request_id: str = ""
    # What the request was (tdev_common.idempotency.fingerprint): a replayed request_id must come with the same one.
    fingerprint: str = ""
    automatic: bool = False  # started by an evolution policy
    start_reason: str = ""
