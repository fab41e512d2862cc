"""The abstractions the use-cases depend on (repository, sandbox inspector, analyzer, cache listener)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from registry_svc.domain import (
    AgentAlias,
    AgentCase,
    AgentIdentity,
    AgentVersion,
    AliasEvent,
    Analysis,
    AnalysisJob,
    AnalysisReport,
    CaseFilter,
    ExecutionRecord,
    Inspection,
    LabelsUpdated,
    LabelUpdate,
    ListQuery,
    NewVersion,
    RecordResult,
    SearchCandidate,
    Selector,
    VersionRef,
    VersionStats,
)
from tdev_common.paging import Page


class InspectionFailed(Exception):
    """Loading the agent class in the sandbox failed (crash, timeout, bad capabilities); message says why."""


class VersionConflict(Exception):
    """A concurrent registration stored the same agent, version or code first; retry the use-case."""


class UnknownVersions(Exception):
    """Records name versions that do not exist; ``refs`` lists them in request order."""

    def __init__(self, refs: Sequence[tuple[int, VersionRef]]) -> None:
        super().__init__(", ".join(f"records[{i}]: {ref}" for i, ref in refs))
        self.refs = list(refs)


class RequestMismatch(Exception):
    """A request id was used before for a different change."""


class TooManyLabels(Exception):
    """The change would leave the version with more labels than allowed; ``count`` is how many."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} labels")
        self.count = count


class CodeInspector(Protocol):
    """Loads an agent class in isolation and reports what ``get_capabilities()`` returned."""

    async def inspect(self, code: str, class_name: str) -> Inspection:
        """Raises InspectionFailed when the class cannot be loaded or answers badly."""
        ...


class Analyzer(Protocol):
    """Analyses agent code with the LLM layer: capabilities and the model's quality assessment."""

    async def analyze(self, job: AnalysisJob, static_metrics: dict[str, Any]) -> AnalysisReport:
        """Raises any exception on failure; the worker records it as a failed analysis."""
        ...


class Embedder(Protocol):
    """Turns texts into vectors, when a configured provider offers embeddings."""

    name: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text."""
        ...


class ChangeListener(Protocol):
    """Told after a version's stored state changed (cache invalidation)."""

    async def agent_changed(self, agent_id: str, versions: Sequence[str]) -> None:
        """``versions`` changed, and possibly the agent's latest version."""
        ...


class Repository(Protocol):
    """Reads and writes the registry's tables; returns domain objects."""

    async def get_version(self, selector: Selector, *, include_code: bool) -> AgentVersion | None:
        """The selected version, or None."""
        ...

    async def identity(self, *, name: str = "", agent_id: str = "") -> AgentIdentity | None:
        """An agent's id, name and versions, or None."""
        ...

    async def find_by_hash(self, name: str, code_hash: str) -> AgentVersion | None:
        """The version of agent ``name`` with this code, or None."""
        ...

    async def find_request(self, request_id: str) -> tuple[VersionRef, str | None] | None:
        """What a request id registered before and that request's fingerprint (None for old rows), or None."""
        ...

    async def remember_request(self, request_id: str, ref: VersionRef, fingerprint: str) -> None:
        """Stores a request id's result (first one wins)."""
        ...

    async def count_agents(self) -> int:
        """How many agents exist."""
        ...

    async def existing(self, refs: Sequence[VersionRef]) -> set[VersionRef]:
        """Which of ``refs`` exist."""
        ...

    async def insert_version(self, new: NewVersion) -> AgentVersion:
        """Stores a version atomically; raises VersionConflict when a racing writer got there first."""
        ...

    async def update_labels(self, update: LabelUpdate, now: datetime, max_labels: int) -> LabelsUpdated | None:
        """Applies a label change atomically (None: no such version); a replayed request id changes nothing.

        Raises:
            RequestMismatch: the request id was used for a different change.
            TooManyLabels: the version would carry more than ``max_labels`` labels (nothing is written).
        """
        ...

    async def list_agents(self, query: ListQuery) -> Page[AgentVersion]:
        """One page of latest versions."""
        ...

    async def list_versions(self, agent_id: str, page_size: int, after: int | None) -> Page[AgentVersion]:
        """One page of an agent's versions, newest first, without code."""
        ...

    async def parents_of(self, refs: Sequence[VersionRef]) -> list[tuple[VersionRef, VersionRef]]:
        """(child, parent) edges of ``refs``."""
        ...

    async def get_versions(self, refs: Sequence[VersionRef]) -> list[AgentVersion]:
        """The versions named, without code."""
        ...

    async def search_candidates(self, terms: Sequence[str], limit: int, min_quality: float,
                                with_embeddings: bool) -> tuple[str, list[SearchCandidate]]:
        """(matcher, candidates): full-text ranked on Postgres, every latest version elsewhere."""
        ...

    async def record_executions(self, records: Sequence[ExecutionRecord], now: datetime,
                                p95_window: int, max_cases_per_version: int = 1000) -> RecordResult:
        """Applies records atomically, ignoring execution ids seen before; raises UnknownVersions. Captured
        cases are stored with their records; a version keeps its newest ``max_cases_per_version`` (labelled
        first)."""
        ...

    async def list_cases(self, agent_id: str, version: str, which: CaseFilter, page_size: int,
                         after: list[Any] | None) -> Page[AgentCase]:
        """One page of an agent's cases, newest first."""
        ...

    async def label_case(self, case_id: str, expected: dict[str, Any], now: datetime) -> AgentCase | None:
        """Sets a case's expected output; None when there is no such case."""
        ...

    async def delete_case(self, case_id: str) -> bool:
        """Deletes a case; False when there was none."""
        ...

    async def set_alias(self, alias: AgentAlias, message: str) -> AgentAlias:
        """Creates or moves an alias, with a SET event."""
        ...

    async def aliases(self, agent_id: str) -> list[AgentAlias]:
        """An agent's aliases by name."""
        ...

    async def canaries(self, agent_ids: Sequence[str]) -> list[AgentAlias]:
        """The canary aliases among these agents."""
        ...

    async def alias_events(self, agent_id: str, limit: int) -> list[AliasEvent]:
        """An agent's latest alias events, newest first."""
        ...

    async def delete_alias(self, agent_id: str, alias: str, now: datetime) -> AgentAlias | None:
        """Removes an alias with a DELETED event; None when there was none."""
        ...

    async def version_stats(self, agent_id: str, versions: Sequence[str], since: datetime) -> dict[str, VersionStats]:
        """Executions of each version finished at or after ``since``."""
        ...

    async def finish_rollout(self, canary: AgentAlias, promote: bool, message: str, now: datetime) -> bool:
        """Ends a rollout (fenced on the canary's version); False when it had changed."""
        ...

    async def claim_analyses(self, owner: str, now: datetime, lease_seconds: float,
                             limit: int, *, reclaim_own: bool = False) -> list[AnalysisJob]:
        """Claims pending (or lease-expired running, or with ``reclaim_own`` ``owner``'s own running) analyses."""
        ...

    async def finish_analysis(self, job: AnalysisJob, analysis: Analysis, now: datetime,
                              capabilities_text: str, search_text: str,
                              embedding: Sequence[float] | None) -> bool:
        """Stores a result if ``job``'s lease is still held; False when it was lost (fenced)."""
        ...

    async def release_analyses(self, owner: str) -> int:
        """Puts ``owner``'s running analyses back to pending (graceful stop)."""
        ...
