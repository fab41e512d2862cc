"""In-memory fakes of registry_svc.ports: the repository, the sandbox inspector, embeddings, a change listener.

``FakeRepository`` keeps the semantics ``SqlRepository`` gives its callers: one agent per name, versions unique
per (agent, version) and (agent, code hash), a compare-and-set on the latest version (VersionConflict when a
racing writer moved it), request ids where the first one wins stored with their request's fingerprint (None
when registered without one, as rows from before fingerprints), label changes fenced by request fingerprints,
keyset pages fetched as ``page_size + 1``, executions ignored when their id was seen, analyses fenced by
(owner, attempt).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from registry_svc.domain import (
    CANARY,
    STABLE,
    AgentAlias,
    AgentCase,
    AgentIdentity,
    AgentVersion,
    AliasEvent,
    AliasEventKind,
    Analysis,
    AnalysisJob,
    AnalysisState,
    CaseFilter,
    ExecutionRecord,
    Inspection,
    LabelsUpdated,
    LabelUpdate,
    ListQuery,
    Metrics,
    NewVersion,
    OrderBy,
    RecordResult,
    SearchCandidate,
    Selector,
    VersionRef,
    VersionStats,
)
from registry_svc.ports import InspectionFailed, RequestMismatch, TooManyLabels, UnknownVersions, VersionConflict
from registry_svc.repository import case_id_of, p95
from tdev_common import paging
from tdev_common.paging import Page


class FakeInspector:
    """Reads the literal dict ``get_capabilities`` returns with ``ast``; fails on a marker comment."""

    def __init__(self) -> None:
        self.calls = 0

    async def inspect(self, code: str, class_name: str) -> Inspection:
        self.calls += 1
        if "# crash-in-sandbox" in code:
            raise InspectionFailed("RuntimeError: boom")
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.FunctionDef) and node.name == "get_capabilities":
                for statement in ast.walk(node):
                    if isinstance(statement, ast.Return) and statement.value is not None:
                        try:
                            return Inspection(class_name, ast.literal_eval(statement.value))
                        except ValueError:
                            break
        return Inspection(class_name, {})


class FakeEmbedder:
    """Bag-of-words vectors over a fixed vocabulary: similar texts get similar vectors."""

    name = "fake-embeddings"
    VOCABULARY = ("word", "count", "text", "number", "sort", "sum", "csv", "json", "record", "list")

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(text.lower().count(term)) for term in self.VOCABULARY] for text in texts]


class RecordingListener:
    """ChangeListener that remembers every change it is told about, in order."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, list[str]]] = []

    async def agent_changed(self, agent_id: str, versions: Sequence[str]) -> None:
        self.changes.append((agent_id, list(versions)))


@dataclass
class _Row:
    """One stored version with what the table keeps beside the domain object."""

    id: int
    version: AgentVersion
    search_text: str
    capabilities_text: str
    embedding: tuple[float, ...] | None = None
    owner: str | None = None
    lease_expires: datetime | None = None
    attempts: int = 0


@dataclass
class _Agent:
    agent_id: str
    name: str
    latest: str
    latest_id: int
    version_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Execution:
    record: ExecutionRecord
    finish_time: datetime


class FakeRepository:
    """registry_svc.ports.Repository in dicts; ``conflicts`` makes the next inserts lose to a racing writer."""

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self.agents: dict[str, _Agent] = {}
        # request id -> (what it registered, the request's fingerprint or None), as the ``requests`` table.
        self.requests: dict[str, tuple[VersionRef, str | None]] = {}
        self.label_requests: dict[str, str] = {}
        self.executions: dict[str, _Execution] = {}
        self.cases: dict[str, AgentCase] = {}
        self.alias_rows: dict[tuple[str, str], AgentAlias] = {}
        self.alias_log: list[AliasEvent] = []
        self.conflicts = 0
        self._next_id = 1

    # ---- helpers -------------------------------------------------------------------------------------

    def _row(self, ref: VersionRef) -> _Row | None:
        return next((row for row in self.rows.values() if row.version.ref == ref), None)

    def _agent(self, *, agent_id: str = "", name: str = "") -> _Agent | None:
        if agent_id:
            return self.agents.get(agent_id)
        return next((agent for agent in self.agents.values() if agent.name == name), None)

    @staticmethod
    def _view(row: _Row, include_code: bool) -> AgentVersion:
        return row.version if include_code else replace(row.version, code=None)

    def _latest_rows(self) -> list[_Row]:
        return [self.rows[agent.latest_id] for agent in self.agents.values()]

    # ---- reading versions ----------------------------------------------------------------------------

    async def get_version(self, selector: Selector, *, include_code: bool) -> AgentVersion | None:
        agent = self._agent(agent_id=selector.agent_id, name=selector.name)
        if agent is None:
            return None
        row = self._row(VersionRef(agent.agent_id, selector.version)) if selector.version else \
            self.rows[agent.latest_id]
        return None if row is None else self._view(row, include_code)

    async def get_versions(self, refs: Sequence[VersionRef]) -> list[AgentVersion]:
        wanted = set(refs)
        return [self._view(row, False) for _, row in sorted(self.rows.items()) if row.version.ref in wanted]

    async def identity(self, *, name: str = "", agent_id: str = "") -> AgentIdentity | None:
        agent = self._agent(agent_id=agent_id, name=name)
        if agent is None:
            return None
        return AgentIdentity(agent.agent_id, agent.name,
                             tuple(self.rows[i].version.version for i in sorted(agent.version_ids)))

    async def find_by_hash(self, name: str, code_hash: str) -> AgentVersion | None:
        return next((row.version for row in self.rows.values()
                     if row.version.name == name and row.version.code_hash == code_hash), None)

    async def find_request(self, request_id: str) -> tuple[VersionRef, str | None] | None:
        return self.requests.get(request_id)

    async def remember_request(self, request_id: str, ref: VersionRef, fingerprint: str) -> None:
        self.requests.setdefault(request_id, (ref, fingerprint or None))

    async def count_agents(self) -> int:
        return len(self.agents)

    async def existing(self, refs: Sequence[VersionRef]) -> set[VersionRef]:
        return {row.version.ref for row in self.rows.values()} & set(refs)

    # ---- writing versions ----------------------------------------------------------------------------

    async def insert_version(self, new: NewVersion) -> AgentVersion:
        if self.conflicts:
            self.conflicts -= 1
            raise VersionConflict("a racing writer won")
        agent = self.agents.get(new.agent_id)
        if new.agent_is_new:
            if agent is not None or self._agent(name=new.name) is not None:
                raise VersionConflict(f"agent {new.name} exists")
        elif agent is None or agent.latest != new.previous_latest:
            raise VersionConflict(f"{new.name}: latest version moved past {new.previous_latest}")
        # The unique constraints (agent_id, version) and (agent_id, code_hash).
        if any(new.version == row.version.version or new.code_hash == row.version.code_hash
               for row in self.rows.values() if row.version.agent_id == new.agent_id):
            raise VersionConflict(f"{new.name} {new.version} or its code exists")
        stored = AgentVersion(
            agent_id=new.agent_id, name=new.name, version=new.version, description=new.description,
            code=new.code, code_hash=new.code_hash, class_name=new.class_name,
            declared_capabilities=dict(new.declared_capabilities), execute_is_async=new.execute_is_async,
            parents=tuple(sorted(new.parents)), labels=dict(new.labels),
            analysis=Analysis(static_metrics=dict(new.static_metrics)), metrics=Metrics(),
            create_time=new.create_time, update_time=new.create_time, code_size_bytes=len(new.code.encode()),
        )
        row_id, self._next_id = self._next_id, self._next_id + 1
        self.rows[row_id] = _Row(row_id, stored, new.search_text, new.capabilities_text)
        if agent is None:
            agent = self.agents[new.agent_id] = _Agent(new.agent_id, new.name, new.version, row_id)
        agent.latest, agent.latest_id = new.version, row_id
        agent.version_ids.append(row_id)
        if new.request_id:
            self.requests.setdefault(new.request_id, (stored.ref, new.request_fingerprint or None))
        # The SQL repository returns the parents in request order on insert, sorted when read back.
        return replace(stored, parents=new.parents)

    # ---- labels --------------------------------------------------------------------------------------

    async def update_labels(self, update: LabelUpdate, now: datetime, max_labels: int) -> LabelsUpdated | None:
        fingerprint = update.fingerprint
        row = self._row(update.ref)
        if update.request_id and update.request_id in self.label_requests:
            if self.label_requests[update.request_id] != fingerprint:
                raise RequestMismatch(update.request_id)
            return None if row is None else LabelsUpdated(row.version, changed=False, replayed=True)
        if row is None:
            return None
        before = dict(row.version.labels)
        after = {key: value for key, value in before.items() if key not in update.remove_labels}
        after.update(update.set_labels)
        if len(after) > max_labels:
            raise TooManyLabels(len(after))
        changed = after != before
        if changed:
            row.version = replace(row.version, labels=after, update_time=now)
        if update.request_id:
            self.label_requests[update.request_id] = fingerprint
        return LabelsUpdated(row.version, changed=changed)

    # ---- listing -------------------------------------------------------------------------------------

    @staticmethod
    def _sort_key(row: _Row, order: OrderBy) -> Any:
        version = row.version
        if order is OrderBy.UPDATED:
            return version.update_time
        if order is OrderBy.QUALITY:
            quality = version.analysis.quality_score
            return -1.0 if quality is None else quality
        if order is OrderBy.EXECUTIONS:
            return version.metrics.execution_count
        return row.id

    async def list_agents(self, query: ListQuery) -> Page[AgentVersion]:
        rows = self._latest_rows()
        if query.name_contains:
            rows = [r for r in rows if query.name_contains.lower() in r.version.name.lower()]
        if query.capability:
            rows = [r for r in rows if query.capability.lower() in r.capabilities_text.lower()]
        if query.state is not None:
            rows = [r for r in rows if r.version.analysis.state is query.state]
        if query.min_quality > 0:
            rows = [r for r in rows if (r.version.analysis.quality_score or 0.0) >= query.min_quality
                    and r.version.analysis.quality_score is not None]
        keyed = [(self._sort_key(r, query.order), r.version.agent_id, r) for r in rows]
        if query.after is not None:
            value, agent_id = query.after
            if query.order is OrderBy.UPDATED:
                value = datetime.fromisoformat(value)
            keyed = [k for k in keyed if k[0] < value or (k[0] == value and k[1] < agent_id)]
        keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
        fetched = keyed[:query.page_size + 1]
        page = paging.take(fetched, query.page_size, lambda last: (
            last[0].isoformat() if isinstance(last[0], datetime) else last[0], last[1]))
        return Page([self._view(k[2], query.include_code) for k in page.items], page.after)

    async def list_versions(self, agent_id: str, page_size: int, after: int | None) -> Page[AgentVersion]:
        rows = sorted((r for r in self.rows.values() if r.version.agent_id == agent_id
                       and (after is None or r.id < after)), key=lambda r: r.id, reverse=True)
        page = paging.take(rows[:page_size + 1], page_size, lambda last: last.id)
        return Page([self._view(r, False) for r in page.items], page.after)

    async def parents_of(self, refs: Sequence[VersionRef]) -> list[tuple[VersionRef, VersionRef]]:
        edges: list[tuple[VersionRef, VersionRef]] = []
        for child in refs:
            row = self._row(child)
            if row is not None:
                edges.extend((child, parent) for parent in row.version.parents)
        return edges

    # ---- search --------------------------------------------------------------------------------------

    async def search_candidates(self, terms: Sequence[str], limit: int, min_quality: float,
                                with_embeddings: bool) -> tuple[str, list[SearchCandidate]]:
        # The SQLite behaviour: no full-text index, every latest version for the caller to score.
        rows = sorted(self._latest_rows(), key=lambda r: r.version.agent_id)
        if min_quality > 0:
            rows = [r for r in rows if r.version.analysis.quality_score is not None
                    and r.version.analysis.quality_score >= min_quality]
        candidates = [SearchCandidate(self._view(r, False), r.search_text, r.capabilities_text,
                                      embedding=r.embedding) for r in rows]
        return ("embeddings" if with_embeddings else "token-overlap"), candidates

    # ---- executions ----------------------------------------------------------------------------------

    async def record_executions(self, records: Sequence[ExecutionRecord], now: datetime,
                                p95_window: int, max_cases_per_version: int = 1000) -> RecordResult:
        known = {row.version.ref for row in self.rows.values()}
        missing = [(index, r.ref) for index, r in enumerate(records) if r.ref not in known]
        if missing:
            raise UnknownVersions(missing)
        inserted = [r for r in records if r.execution_id not in self.executions]
        for record in inserted:
            self.executions[record.execution_id] = _Execution(record, record.finish_time or now)
        touched = sorted({r.ref for r in inserted})
        for ref in touched:
            self._apply_totals(ref, [r for r in inserted if r.ref == ref], now, p95_window)
        for record in inserted:
            if record.case is not None:
                case_id = case_id_of(record.execution_id)
                self.cases[case_id] = AgentCase(
                    case_id, record.agent_id, record.version, record.execution_id, record.success,
                    record.case.inputs, record.case.output, record.error_type, record.case.error_message,
                    record.case.source, None, record.finish_time or now)
        for ref in touched:
            mine = sorted((c for c in self.cases.values() if (c.agent_id, c.version) == (ref.agent_id, ref.version)),
                          key=lambda c: (c.expected is None, -c.create_time.timestamp(), _reverse(c.case_id)))
            for dropped in mine[max_cases_per_version:]:
                del self.cases[dropped.case_id]
        return RecordResult(accepted=len(inserted), duplicates=len(records) - len(inserted), touched=tuple(touched))

    async def list_cases(self, agent_id: str, version: str, which: CaseFilter, page_size: int,
                         after: list[Any] | None) -> Page[AgentCase]:
        keep = {CaseFilter.ALL: lambda c: True, CaseFilter.FAILING: lambda c: not c.success,
                CaseFilter.SUCCEEDING: lambda c: c.success, CaseFilter.LABELLED: lambda c: c.labelled,
                CaseFilter.UNLABELLED: lambda c: not c.labelled}[which]
        found = sorted((c for c in self.cases.values() if c.agent_id == agent_id and (not version or
                        c.version == version) and keep(c)),
                       key=lambda c: (c.create_time.timestamp(), c.case_id), reverse=True)
        if after is not None:
            found = [c for c in found if (c.create_time.timestamp(), c.case_id) < (after[0], after[1])]
        return paging.take(found, page_size, lambda last: [last.create_time.timestamp(), last.case_id])

    async def label_case(self, case_id: str, expected: dict[str, Any], now: datetime) -> AgentCase | None:
        if case_id not in self.cases:
            return None
        self.cases[case_id] = replace(self.cases[case_id], expected=expected, label_time=now)
        return self.cases[case_id]

    async def delete_case(self, case_id: str) -> bool:
        return self.cases.pop(case_id, None) is not None

    async def set_alias(self, alias: AgentAlias, message: str) -> AgentAlias:
        self.alias_rows[(alias.agent_id, alias.alias)] = alias
        self.alias_log.append(AliasEvent(alias.agent_id, alias.alias, AliasEventKind.SET, alias.version, message,
                                         alias.update_time))
        return alias

    async def aliases(self, agent_id: str) -> list[AgentAlias]:
        return sorted((a for (agent, _), a in self.alias_rows.items() if agent == agent_id), key=lambda a: a.alias)

    async def canaries(self, agent_ids: Sequence[str]) -> list[AgentAlias]:
        return [a for (agent, name), a in self.alias_rows.items() if agent in agent_ids and name == CANARY]

    async def alias_events(self, agent_id: str, limit: int) -> list[AliasEvent]:
        return [e for e in reversed(self.alias_log) if e.agent_id == agent_id][:limit]

    async def delete_alias(self, agent_id: str, alias: str, now: datetime) -> AgentAlias | None:
        removed = self.alias_rows.pop((agent_id, alias), None)
        if removed is not None:
            self.alias_log.append(AliasEvent(agent_id, alias, AliasEventKind.DELETED, removed.version,
                                             "removed by hand", now))
        return removed

    async def version_stats(self, agent_id: str, versions: Sequence[str], since: datetime) -> dict[str, VersionStats]:
        found = {}
        for version in versions:
            mine = [e.record for e in self.executions.values() if e.record.agent_id == agent_id
                    and e.record.version == version and e.finish_time >= since]
            durations = sorted(r.duration_ms for r in mine)
            found[version] = VersionStats(version, len(mine), sum(r.success for r in mine) / len(mine) if mine else 0.0,
                                          durations[len(durations) // 2] if durations else 0.0)
        return found

    async def finish_rollout(self, canary: AgentAlias, promote: bool, message: str, now: datetime) -> bool:
        current = self.alias_rows.get((canary.agent_id, CANARY))
        if current is None or current.version != canary.version:
            return False
        del self.alias_rows[(canary.agent_id, CANARY)]
        stable = self.alias_rows.get((canary.agent_id, STABLE))
        if promote and stable is not None:
            self.alias_rows[(canary.agent_id, STABLE)] = replace(stable, version=canary.version, update_time=now)
        kind = AliasEventKind.PROMOTED if promote else AliasEventKind.ROLLED_BACK
        self.alias_log.append(AliasEvent(canary.agent_id, CANARY, kind, canary.version, message, now))
        return True

    def _apply_totals(self, ref: VersionRef, records: Sequence[ExecutionRecord], now: datetime,
                      p95_window: int) -> None:
        row = self._row(ref)
        assert row is not None
        old = row.version.metrics
        n, ok = len(records), sum(r.success for r in records)
        total_ms = old.average_duration_ms * old.execution_count + sum(r.duration_ms for r in records)
        recent = sorted((e for e in self.executions.values() if e.record.ref == ref),
                        key=lambda e: (e.finish_time, e.record.execution_id), reverse=True)[:p95_window]
        metrics = Metrics(
            execution_count=old.execution_count + n, success_count=old.success_count + ok,
            failure_count=old.failure_count + n - ok, average_duration_ms=total_ms / (old.execution_count + n),
            p95_duration_ms=p95([e.record.duration_ms for e in recent]),
            total_tokens=old.total_tokens + sum(r.tokens for r in records),
            total_cost_usd=math.fsum([old.total_cost_usd, *(r.cost_usd for r in records)]),
        )
        row.version = replace(row.version, metrics=metrics, update_time=now)

    # ---- analysis ------------------------------------------------------------------------------------

    def _claimable(self, row: _Row, owner: str, now: datetime, reclaim_own: bool) -> bool:
        state = row.version.analysis.state
        if state is AnalysisState.PENDING:
            return True
        if state is not AnalysisState.RUNNING:
            return False
        expired = row.lease_expires is not None and row.lease_expires < now
        return expired or (reclaim_own and row.owner == owner)

    async def claim_analyses(self, owner: str, now: datetime, lease_seconds: float,
                             limit: int, *, reclaim_own: bool = False) -> list[AnalysisJob]:
        jobs: list[AnalysisJob] = []
        for _, row in sorted(self.rows.items()):
            if len(jobs) == limit:
                break
            if not self._claimable(row, owner, now, reclaim_own):
                continue
            row.owner, row.lease_expires, row.attempts = owner, now + timedelta(seconds=lease_seconds), row.attempts + 1
            row.version = replace(row.version, analysis=replace(row.version.analysis, state=AnalysisState.RUNNING),
                                  update_time=now)
            version = row.version
            jobs.append(AnalysisJob(ref=version.ref, name=version.name, description=version.description,
                                    code=version.code or "", class_name=version.class_name,
                                    declared_capabilities=version.declared_capabilities, owner=owner,
                                    attempt=row.attempts))
        return jobs

    async def finish_analysis(self, job: AnalysisJob, analysis: Analysis, now: datetime,
                              capabilities_text: str, search_text: str,
                              embedding: Sequence[float] | None) -> bool:
        row = self._row(job.ref)
        if (row is None or row.version.analysis.state is not AnalysisState.RUNNING or row.owner != job.owner
                or row.attempts != job.attempt):
            return False
        succeeded = analysis.state is AnalysisState.SUCCEEDED
        row.owner, row.lease_expires = None, None
        row.version = replace(row.version, update_time=now, analysis=replace(
            analysis, capabilities=dict(analysis.capabilities) if succeeded else {}))
        if succeeded:
            row.capabilities_text, row.search_text = capabilities_text, search_text
            row.embedding = tuple(embedding) if embedding else None
        return True

    async def release_analyses(self, owner: str) -> int:
        released = 0
        for row in self.rows.values():
            if row.owner == owner and row.version.analysis.state is AnalysisState.RUNNING:
                row.owner, row.lease_expires = None, None
                row.version = replace(row.version, analysis=replace(row.version.analysis,
                                                                    state=AnalysisState.PENDING))
                released += 1
        return released


def _reverse(text: str) -> tuple[int, ...]:
    """Sorts strings descending inside an ascending key."""
    return tuple(-ord(ch) for ch in text)
