"""The only code that reads and writes the registry's tables (Postgres or SQLite); returns domain objects."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry_svc.domain import (
    CANARY,
    STABLE,
    UNSET_ROLLOUT,
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
    LabelsUpdated,
    LabelUpdate,
    ListQuery,
    Metrics,
    NewVersion,
    OrderBy,
    RecordResult,
    RolloutPolicy,
    SearchCandidate,
    Selector,
    VersionRef,
    VersionStats,
)
from registry_svc.models import (
    AgentRow,
    AgentVersionRow,
    AliasEventRow,
    AliasRow,
    CaseRow,
    ExecutionRow,
    LabelRequestRow,
    LineageRow,
    RegisterRequestRow,
)
from registry_svc.ports import RequestMismatch, TooManyLabels, UnknownVersions, VersionConflict
from tdev_common import paging
from tdev_common.paging import Page

agents = cast(sa.Table, AgentRow.__table__)
versions = cast(sa.Table, AgentVersionRow.__table__)
lineage = cast(sa.Table, LineageRow.__table__)
requests = cast(sa.Table, RegisterRequestRow.__table__)
executions = cast(sa.Table, ExecutionRow.__table__)
label_requests = cast(sa.Table, LabelRequestRow.__table__)
cases = cast(sa.Table, CaseRow.__table__)
aliases = cast(sa.Table, AliasRow.__table__)
alias_events = cast(sa.Table, AliasEventRow.__table__)


def case_id_of(execution_id: str) -> str:
    """A case's id follows from its record's id, so a repeated record can never add a second case."""
    return "case_" + hashlib.sha256(execution_id.encode()).hexdigest()[:12]

_WITHOUT_CODE = [column for column in versions.c if column.name != "code"]
_MAX_SCAN = 10_000


def _escape_like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _refs_clause(agent_column: Any, version_column: Any, refs: Iterable[VersionRef]) -> Any:
    return sa.or_(*(sa.and_(agent_column == r.agent_id, version_column == r.version) for r in refs))


def p95(durations: Sequence[float]) -> float:
    """95th percentile by the nearest-rank method; 0 for no data."""
    if not durations:
        return 0.0
    ordered = sorted(durations)
    return float(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)])


class SqlRepository:
    """Repository over one async engine. On SQLite, writes are serialised in-process (one writer)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._write_lock = asyncio.Lock()
        # One statement object for every batch, run with many parameter sets: SQLAlchemy compiles it once
        # and renders the rows in pages ("insertmanyvalues"). Building .values([...rows]) per batch instead
        # compiled a new statement for every row count, which took most of the registry's CPU under load.
        self._insert_executions = (self._insert(executions).on_conflict_do_nothing()
                                   .returning(executions.c.execution_id))

    @property
    def is_postgres(self) -> bool:
        """True on Postgres."""
        return self._postgres

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        # SQLite has one writer at a time: queueing here beats spinning in its busy handler.
        if self._postgres:
            async with self._engine.begin() as connection:
                yield connection
            return
        async with self._write_lock, self._engine.begin() as connection:
            yield connection

    def _insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    # ---- reading versions -------------------------------------------------------------------------

    def _columns(self, include_code: bool) -> list[Any]:
        return [*_WITHOUT_CODE, versions.c.code] if include_code else list(_WITHOUT_CODE)

    async def _parents(self, connection: AsyncConnection,
                       refs: Sequence[VersionRef]) -> dict[VersionRef, tuple[VersionRef, ...]]:
        if not refs:
            return {}
        rows = (await connection.execute(
            sa.select(lineage).where(_refs_clause(lineage.c.child_agent_id, lineage.c.child_version, refs))
            .order_by(lineage.c.parent_agent_id, lineage.c.parent_version)
        )).all()
        found: dict[VersionRef, list[VersionRef]] = defaultdict(list)
        for row in rows:
            found[VersionRef(row.child_agent_id, row.child_version)].append(
                VersionRef(row.parent_agent_id, row.parent_version))
        return {ref: tuple(parents) for ref, parents in found.items()}

    async def _to_domain(self, connection: AsyncConnection, rows: Sequence[Any]) -> list[AgentVersion]:
        refs = [VersionRef(row.agent_id, row.version) for row in rows]
        parents = await self._parents(connection, refs)
        return [_version(row, parents.get(ref, ())) for row, ref in zip(rows, refs, strict=True)]

    async def get_version(self, selector: Selector, *, include_code: bool) -> AgentVersion | None:
        """The selected version (latest when no version is given), or None."""
        statement = sa.select(*self._columns(include_code))
        if selector.version:
            key = versions.c.agent_id if selector.agent_id else versions.c.name
            statement = statement.where(key == (selector.agent_id or selector.name),
                                        versions.c.version == selector.version)
        else:
            key = agents.c.agent_id if selector.agent_id else agents.c.name
            statement = statement.join(agents, agents.c.latest_version_id == versions.c.id).where(
                key == (selector.agent_id or selector.name))
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).first()
            if row is None:
                return None
            return (await self._to_domain(connection, [row]))[0]

    async def get_versions(self, refs: Sequence[VersionRef]) -> list[AgentVersion]:
        """The versions named, without code."""
        if not refs:
            return []
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                sa.select(*_WITHOUT_CODE).where(_refs_clause(versions.c.agent_id, versions.c.version, refs))
                .order_by(versions.c.id)
            )).all()
            return await self._to_domain(connection, rows)

    async def identity(self, *, name: str = "", agent_id: str = "") -> AgentIdentity | None:
        """An agent's id, name and versions (oldest first), or None."""
        key = agents.c.agent_id if agent_id else agents.c.name
        async with self._engine.connect() as connection:
            row = (await connection.execute(sa.select(agents.c.agent_id, agents.c.name)
                                            .where(key == (agent_id or name)))).first()
            if row is None:
                return None
            names = (await connection.execute(
                sa.select(versions.c.version).where(versions.c.agent_id == row.agent_id).order_by(versions.c.id)
            )).scalars().all()
        return AgentIdentity(row.agent_id, row.name, tuple(names))

    async def find_by_hash(self, name: str, code_hash: str) -> AgentVersion | None:
        """The version of agent ``name`` with exactly this code, or None."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                sa.select(*self._columns(True)).where(versions.c.name == name, versions.c.code_hash == code_hash)
            )).first()
            if row is None:
                return None
            return (await self._to_domain(connection, [row]))[0]

    async def find_request(self, request_id: str) -> tuple[VersionRef, str | None] | None:
        """What a request id registered before and the fingerprint of that request (None before 0004), or None."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                sa.select(requests.c.agent_id, requests.c.version, requests.c.fingerprint)
                .where(requests.c.request_id == request_id)
            )).first()
        return (VersionRef(row.agent_id, row.version), row.fingerprint) if row else None

    async def remember_request(self, request_id: str, ref: VersionRef, fingerprint: str) -> None:
        """Stores a request id's result and request fingerprint; the first one stored wins."""
        async with self._writing() as connection:
            await connection.execute(self._insert(requests).values(
                request_id=request_id, agent_id=ref.agent_id, version=ref.version, fingerprint=fingerprint or None,
                created_at=datetime.now().astimezone(),
            ).on_conflict_do_nothing())

    async def count_agents(self) -> int:
        """How many agents exist."""
        async with self._engine.connect() as connection:
            return int((await connection.execute(sa.select(sa.func.count()).select_from(agents))).scalar_one())

    async def existing(self, refs: Sequence[VersionRef]) -> set[VersionRef]:
        """Which of ``refs`` exist."""
        if not refs:
            return set()
        async with self._engine.connect() as connection:
            return await self._existing(connection, refs)

    async def _existing(self, connection: AsyncConnection, refs: Sequence[VersionRef]) -> set[VersionRef]:
        found: set[VersionRef] = set()
        unique = sorted(set(refs))
        for start in range(0, len(unique), 200):
            chunk = unique[start:start + 200]
            rows = await connection.execute(sa.select(versions.c.agent_id, versions.c.version)
                                            .where(_refs_clause(versions.c.agent_id, versions.c.version, chunk)))
            found.update(VersionRef(row.agent_id, row.version) for row in rows)
        return found

    # ---- writing versions -------------------------------------------------------------------------

    async def insert_version(self, new: NewVersion) -> AgentVersion:
        """Stores a version, its lineage and request id in one transaction.

        Raises:
            VersionConflict: the name, version or code was stored by a racing writer, or the agent's
                latest version is no longer ``new.previous_latest``.
        """
        now = new.create_time
        try:
            async with self._writing() as connection:
                if new.agent_is_new:
                    await connection.execute(agents.insert().values(
                        agent_id=new.agent_id, name=new.name, latest_version=new.version, latest_version_id=0,
                        version_count=1, created_at=now, updated_at=now))
                else:
                    # Compare-and-set on the latest version: serialises registrations of one agent.
                    moved = await connection.execute(
                        agents.update().where(agents.c.agent_id == new.agent_id,
                                              agents.c.latest_version == new.previous_latest)
                        .values(latest_version=new.version, version_count=agents.c.version_count + 1,
                                updated_at=now))
                    if moved.rowcount != 1:
                        raise VersionConflict(f"{new.name}: latest version moved past {new.previous_latest}")
                version_id = (await connection.execute(versions.insert().values(
                    agent_id=new.agent_id, name=new.name, version=new.version, description=new.description,
                    code=new.code, code_hash=new.code_hash, code_size_bytes=len(new.code.encode()),
                    class_name=new.class_name, declared_capabilities=dict(new.declared_capabilities),
                    execute_is_async=new.execute_is_async, labels=dict(new.labels), analysis_models=[],
                    analysis_state=AnalysisState.PENDING.value, analysis_static_metrics=dict(new.static_metrics),
                    analysis_duration_ms=0.0, analysis_error="", analysis_attempts=0, execution_count=0,
                    success_count=0, failure_count=0, average_execution_time=0.0, total_execution_time=0.0,
                    p95_execution_time=0.0, total_tokens_used=0, total_cost=0.0, search_text=new.search_text,
                    capabilities_text=new.capabilities_text, created_at=now, updated_at=now,
                ).returning(versions.c.id))).scalar_one()
                await connection.execute(agents.update().where(agents.c.agent_id == new.agent_id)
                                         .values(latest_version_id=version_id))
                if new.parents:
                    await connection.execute(lineage.insert(), [
                        {"child_agent_id": new.agent_id, "child_version": new.version,
                         "parent_agent_id": p.agent_id, "parent_version": p.version} for p in new.parents])
                if new.request_id:
                    await connection.execute(self._insert(requests).values(
                        request_id=new.request_id, agent_id=new.agent_id, version=new.version, created_at=now,
                        fingerprint=new.request_fingerprint or None,
                    ).on_conflict_do_nothing())
        except sa_exc.IntegrityError as error:
            raise VersionConflict(str(error.orig)) from error
        return AgentVersion(
            agent_id=new.agent_id, name=new.name, version=new.version, description=new.description,
            code=new.code, code_hash=new.code_hash, class_name=new.class_name,
            declared_capabilities=dict(new.declared_capabilities), execute_is_async=new.execute_is_async,
            parents=new.parents, labels=dict(new.labels),
            analysis=Analysis(static_metrics=dict(new.static_metrics)), metrics=Metrics(),
            create_time=now, update_time=now, code_size_bytes=len(new.code.encode()),
        )

    # ---- labels -------------------------------------------------------------------------------------

    async def update_labels(self, update: LabelUpdate, now: datetime, max_labels: int) -> LabelsUpdated | None:
        """Sets and removes labels of one version in one transaction (None: no such version).

        The version row is locked (Postgres) while its labels are read and written, so concurrent changes of one
        version apply one after the other; a replayed request id returns the version as it is, unchanged.

        Raises:
            RequestMismatch: the request id was used for a different change.
            TooManyLabels: the version would carry more than ``max_labels`` labels (nothing is written).
        """
        fingerprint = update.fingerprint
        for _ in range(2):
            try:
                async with self._writing() as connection:
                    return await self._update_labels(connection, update, fingerprint, now, max_labels)
            except sa_exc.IntegrityError:
                continue  # a concurrent call with the same request id stored it first: now it is a replay
        raise VersionConflict(f"request_id {update.request_id} kept racing")

    async def _update_labels(self, connection: AsyncConnection, update: LabelUpdate, fingerprint: str,
                             now: datetime, max_labels: int) -> LabelsUpdated | None:
        where = (versions.c.agent_id == update.ref.agent_id, versions.c.version == update.ref.version)
        if update.request_id:
            seen = (await connection.execute(sa.select(label_requests.c.fingerprint).where(
                label_requests.c.request_id == update.request_id))).scalar_one_or_none()
            if seen is not None:
                if seen != fingerprint:
                    raise RequestMismatch(update.request_id)
                row = (await connection.execute(sa.select(*self._columns(True)).where(*where))).first()
                return None if row is None else LabelsUpdated(
                    (await self._to_domain(connection, [row]))[0], changed=False, replayed=True)
        locked = sa.select(versions.c.id, versions.c.labels).where(*where)
        if self._postgres:
            locked = locked.with_for_update()
        current = (await connection.execute(locked)).first()
        if current is None:
            return None
        before = dict(current.labels or {})
        after = {key: value for key, value in before.items() if key not in update.remove_labels}
        after.update(update.set_labels)
        if len(after) > max_labels:
            raise TooManyLabels(len(after))
        changed = after != before
        if changed:
            await connection.execute(versions.update().where(versions.c.id == current.id)
                                     .values(labels=after, updated_at=now))
        if update.request_id:
            # A plain insert: a racing call with the same request id makes it fail, rolling this one back.
            await connection.execute(label_requests.insert().values(
                request_id=update.request_id, agent_id=update.ref.agent_id, version=update.ref.version,
                fingerprint=fingerprint, created_at=now))
        row = (await connection.execute(sa.select(*self._columns(True)).where(versions.c.id == current.id))).one()
        return LabelsUpdated((await self._to_domain(connection, [row]))[0], changed=changed)

    # ---- listing ------------------------------------------------------------------------------------

    async def list_agents(self, query: ListQuery) -> Page[AgentVersion]:
        """One page of latest versions in ``query.order``; ``after`` is (sort key, agent_id) to continue."""
        key: Any = {
            OrderBy.UPDATED: versions.c.updated_at,
            OrderBy.QUALITY: sa.func.coalesce(versions.c.ai_quality_score, -1.0),
            OrderBy.EXECUTIONS: versions.c.execution_count,
            OrderBy.RECENT: versions.c.id,
        }[query.order]
        statement = (sa.select(*self._columns(query.include_code), key.label("sort_key"))
                     .join(agents, agents.c.latest_version_id == versions.c.id))
        if query.name_contains:
            statement = statement.where(agents.c.name.ilike(_escape_like(query.name_contains), escape="\\"))
        if query.capability:
            statement = statement.where(versions.c.capabilities_text.ilike(_escape_like(query.capability),
                                                                          escape="\\"))
        if query.state is not None:
            statement = statement.where(versions.c.analysis_state == query.state.value)
        if query.min_quality > 0:
            statement = statement.where(versions.c.ai_quality_score >= query.min_quality)
        if query.after is not None:
            value, agent_id = query.after
            if query.order is OrderBy.UPDATED:
                value = datetime.fromisoformat(value)
            statement = statement.where(sa.or_(key < value, sa.and_(key == value, agents.c.agent_id < agent_id)))
        statement = statement.order_by(key.desc(), agents.c.agent_id.desc()).limit(query.page_size + 1)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
            page = paging.take(rows, query.page_size, lambda last: (
                last.sort_key.isoformat() if isinstance(last.sort_key, datetime) else last.sort_key, last.agent_id))
            items = await self._to_domain(connection, page.items)
        return Page(items, page.after)

    async def list_versions(self, agent_id: str, page_size: int, after: int | None) -> Page[AgentVersion]:
        """One page of an agent's versions, newest first, without code; ``after`` is a row id."""
        statement = sa.select(*_WITHOUT_CODE).where(versions.c.agent_id == agent_id)
        if after is not None:
            statement = statement.where(versions.c.id < after)
        statement = statement.order_by(versions.c.id.desc()).limit(page_size + 1)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
            page = paging.take(rows, page_size, lambda last: last.id)
            items = await self._to_domain(connection, page.items)
        return Page(items, page.after)

    # ---- production cases ---------------------------------------------------------------------------

    async def _store_cases(self, connection: AsyncConnection, records: Sequence[ExecutionRecord], now: datetime,
                           max_per_version: int) -> None:
        rows = []
        for record in records:
            case = record.case
            assert case is not None
            rows.append({"case_id": case_id_of(record.execution_id), "agent_id": record.agent_id,
                         "version": record.version, "execution_id": record.execution_id, "success": record.success,
                         "inputs": case.inputs, "output": case.output, "error_type": record.error_type,
                         "error_message": case.error_message, "source": case.source, "expected": None,
                         "created_at": record.finish_time or now, "labelled_at": None})
        await connection.execute(self._insert(cases).values(rows).on_conflict_do_nothing())
        # Retention: a version keeps its newest cases; labelled ones are kept first (a person's work).
        for agent_id, version in sorted({(r.agent_id, r.version) for r in records}):
            keep = (sa.select(cases.c.case_id)
                    .where(cases.c.agent_id == agent_id, cases.c.version == version)
                    .order_by(cases.c.expected.is_(None), cases.c.created_at.desc(), cases.c.case_id.desc())
                    .limit(max_per_version))
            await connection.execute(cases.delete().where(
                cases.c.agent_id == agent_id, cases.c.version == version, cases.c.case_id.not_in(keep)))

    async def list_cases(self, agent_id: str, version: str, which: CaseFilter, page_size: int,
                         after: list[Any] | None) -> Page[AgentCase]:
        """One page of an agent's cases, newest first; ``after`` is a [create epoch, case id] keyset."""
        statement = sa.select(cases).where(cases.c.agent_id == agent_id)
        if version:
            statement = statement.where(cases.c.version == version)
        statement = statement.where(*{
            CaseFilter.ALL: (), CaseFilter.FAILING: (cases.c.success.is_(False),),
            CaseFilter.SUCCEEDING: (cases.c.success.is_(True),), CaseFilter.LABELLED: (cases.c.expected.is_not(None),),
            CaseFilter.UNLABELLED: (cases.c.expected.is_(None),)}[which])
        if after is not None:
            created = datetime.fromtimestamp(after[0], UTC)
            statement = statement.where(sa.or_(cases.c.created_at < created, sa.and_(
                cases.c.created_at == created, cases.c.case_id < after[1])))
        statement = statement.order_by(cases.c.created_at.desc(), cases.c.case_id.desc()).limit(page_size + 1)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        page = paging.take(rows, page_size, lambda last: [last.created_at.timestamp(), last.case_id])
        return Page([_case(row) for row in page.items], page.after)

    async def label_case(self, case_id: str, expected: dict[str, Any], now: datetime) -> AgentCase | None:
        """Sets a case's expected output; None when there is no such case."""
        async with self._writing() as connection:
            await connection.execute(cases.update().where(cases.c.case_id == case_id)
                                     .values(expected=expected, labelled_at=now))
            row = (await connection.execute(sa.select(cases).where(cases.c.case_id == case_id))).first()
        return _case(row) if row is not None else None

    async def delete_case(self, case_id: str) -> bool:
        """Deletes a case; False when there was none."""
        async with self._writing() as connection:
            result = await connection.execute(cases.delete().where(cases.c.case_id == case_id))
        return bool(result.rowcount)

    # ---- aliases and rollouts -----------------------------------------------------------------------

    async def set_alias(self, alias: AgentAlias, message: str) -> AgentAlias:
        """Creates or moves an alias, with a SET event, in one transaction."""
        policy = alias.rollout or UNSET_ROLLOUT
        values = {"version": alias.version, "traffic_fraction": alias.traffic_fraction,
                  "min_sample": policy.min_sample, "max_success_rate_drop": policy.max_success_rate_drop,
                  "max_latency_ratio": policy.max_latency_ratio,
                  "min_latency_increase_ms": policy.min_latency_increase_ms, "updated_at": alias.update_time}
        async with self._writing() as connection:
            await connection.execute(self._insert(aliases).values(agent_id=alias.agent_id, alias=alias.alias, **values)
                                     .on_conflict_do_update(index_elements=["agent_id", "alias"], set_=values))
            await self._alias_event(connection, alias.agent_id, alias.alias, AliasEventKind.SET, alias.version,
                                    message, alias.update_time)
        return alias

    async def aliases(self, agent_id: str) -> list[AgentAlias]:
        """An agent's aliases by name."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                sa.select(aliases).where(aliases.c.agent_id == agent_id).order_by(aliases.c.alias))).all()
        return [_alias(row) for row in rows]

    async def canaries(self, agent_ids: Sequence[str]) -> list[AgentAlias]:
        """The canary aliases among these agents."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(sa.select(aliases).where(
                aliases.c.agent_id.in_(list(agent_ids)), aliases.c.alias == CANARY))).all()
        return [_alias(row) for row in rows]

    async def alias_events(self, agent_id: str, limit: int) -> list[AliasEvent]:
        """An agent's latest alias events, newest first."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(sa.select(alias_events).where(alias_events.c.agent_id == agent_id)
                                             .order_by(alias_events.c.id.desc()).limit(limit))).all()
        return [AliasEvent(row.agent_id, row.alias, AliasEventKind(row.kind), row.version, row.message,
                           row.created_at) for row in rows]

    async def delete_alias(self, agent_id: str, alias: str, now: datetime) -> AgentAlias | None:
        """Removes an alias with a DELETED event; None when there was none."""
        async with self._writing() as connection:
            row = (await connection.execute(sa.select(aliases).where(
                aliases.c.agent_id == agent_id, aliases.c.alias == alias))).first()
            if row is None:
                return None
            await connection.execute(aliases.delete().where(aliases.c.agent_id == agent_id, aliases.c.alias == alias))
            await self._alias_event(connection, agent_id, alias, AliasEventKind.DELETED, row.version,
                                    "removed by hand", now)
        return _alias(row)

    async def version_stats(self, agent_id: str, versions: Sequence[str], since: datetime) -> dict[str, VersionStats]:
        """Executions of each version finished at or after ``since``: count, success rate, median duration."""
        statement = (sa.select(executions.c.version, executions.c.success, executions.c.duration_ms)
                     .where(executions.c.agent_id == agent_id, executions.c.version.in_(list(versions)),
                            executions.c.finish_time >= since))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        found: dict[str, VersionStats] = {}
        for version in versions:
            mine = [row for row in rows if row.version == version]
            durations = sorted(row.duration_ms for row in mine)
            median = durations[len(durations) // 2] if durations else 0.0
            rate = sum(row.success for row in mine) / len(mine) if mine else 0.0
            found[version] = VersionStats(version, len(mine), rate, median)
        return found

    async def finish_rollout(self, canary: AgentAlias, promote: bool, message: str, now: datetime) -> bool:
        """Ends a rollout: the canary alias goes and, when promoted, stable takes its version. Fenced on the canary's
        version, so a canary moved meanwhile (or a second replica deciding too) changes nothing."""
        async with self._writing() as connection:
            removed = await connection.execute(aliases.delete().where(
                aliases.c.agent_id == canary.agent_id, aliases.c.alias == CANARY,
                aliases.c.version == canary.version))
            if not removed.rowcount:
                return False
            if promote:
                await connection.execute(aliases.update().where(
                    aliases.c.agent_id == canary.agent_id, aliases.c.alias == STABLE).values(
                    version=canary.version, updated_at=now))
            kind = AliasEventKind.PROMOTED if promote else AliasEventKind.ROLLED_BACK
            await self._alias_event(connection, canary.agent_id, CANARY, kind, canary.version, message, now)
        return True

    async def _alias_event(self, connection: AsyncConnection, agent_id: str, alias: str, kind: AliasEventKind,
                           version: str, message: str, now: datetime) -> None:
        await connection.execute(alias_events.insert().values(agent_id=agent_id, alias=alias, kind=int(kind),
                                                              version=version, message=message, created_at=now))

    async def parents_of(self, refs: Sequence[VersionRef]) -> list[tuple[VersionRef, VersionRef]]:
        """(child, parent) edges of ``refs``."""
        async with self._engine.connect() as connection:
            found = await self._parents(connection, refs)
        return [(child, parent) for child in refs for parent in found.get(child, ())]

    # ---- search -------------------------------------------------------------------------------------

    async def search_candidates(self, terms: Sequence[str], limit: int, min_quality: float,
                                with_embeddings: bool) -> tuple[str, list[SearchCandidate]]:
        """(matcher, candidates): Postgres full-text ranked, or every latest version for the caller to score."""
        columns = [*_WITHOUT_CODE]
        statement = sa.select(*columns).join(agents, agents.c.latest_version_id == versions.c.id)
        if min_quality > 0:
            statement = statement.where(versions.c.ai_quality_score >= min_quality)
        matcher = "token-overlap"
        rank: Any = None
        if with_embeddings:
            matcher = "embeddings"
            statement = statement.limit(_MAX_SCAN)
        elif self._postgres and terms:
            matcher = "postgres-fts"
            document = sa.func.to_tsvector(sa.literal_column("'english'"), versions.c.search_text)
            tsquery = sa.func.to_tsquery(sa.literal_column("'english'"), " | ".join(terms))
            rank = sa.func.ts_rank_cd(document, tsquery).label("fts_rank")
            statement = (statement.add_columns(rank).where(document.op("@@")(tsquery))
                         .order_by(sa.desc("fts_rank"), agents.c.agent_id).limit(limit))
        else:
            statement = statement.order_by(agents.c.agent_id).limit(_MAX_SCAN)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
            agents_found = await self._to_domain(connection, rows)
        candidates = [
            SearchCandidate(
                agent=agent, search_text=row.search_text, capabilities_text=row.capabilities_text,
                fts_rank=float(row.fts_rank) if rank is not None else None,
                embedding=tuple(row.search_embedding) if row.search_embedding else None,
            )
            for row, agent in zip(rows, agents_found, strict=True)
        ]
        return matcher, candidates

    # ---- executions ---------------------------------------------------------------------------------

    async def record_executions(self, records: Sequence[ExecutionRecord], now: datetime,
                                p95_window: int, max_cases_per_version: int = 1000) -> RecordResult:
        """Applies records in one transaction, ignoring execution ids seen before.

        Raises:
            UnknownVersions: some record names a version that does not exist (nothing is written).
        """
        async with self._writing() as connection:
            refs = [record.ref for record in records]
            found = await self._existing(connection, refs)
            missing = [(index, ref) for index, ref in enumerate(refs) if ref not in found]
            if missing:
                raise UnknownVersions(missing)
            # Sorted inserts and updates: concurrent batches lock rows in one order, so never deadlock.
            ordered = sorted(records, key=lambda r: r.execution_id)
            result = await connection.execute(self._insert_executions, [{
                "execution_id": r.execution_id, "agent_id": r.agent_id, "version": r.version,
                "success": r.success, "duration_ms": r.duration_ms, "tokens": r.tokens,
                "cost_usd": r.cost_usd, "error_type": r.error_type,
                "finish_time": r.finish_time or now, "recorded_at": now} for r in ordered])
            inserted: set[str] = set(result.scalars().all())
            totals: dict[VersionRef, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for record in ordered:
                if record.execution_id not in inserted:
                    continue
                total = totals[record.ref]
                total["n"] += 1
                total["ok"] += record.success
                total["duration"] += record.duration_ms
                total["tokens"] += record.tokens
                total["cost"] += record.cost_usd
            for ref in sorted(totals):
                await self._apply_totals(connection, ref, totals[ref], now, p95_window)
            captured = [r for r in ordered if r.case is not None and r.execution_id in inserted]
            if captured:
                await self._store_cases(connection, captured, now, max_cases_per_version)
        return RecordResult(accepted=len(inserted), duplicates=len(records) - len(inserted),
                            touched=tuple(sorted(totals)))

    async def _apply_totals(self, connection: AsyncConnection, ref: VersionRef, total: Mapping[str, float],
                            now: datetime, p95_window: int) -> None:
        n, ok = int(total["n"]), int(total["ok"])
        where = (versions.c.agent_id == ref.agent_id, versions.c.version == ref.version)
        await connection.execute(versions.update().where(*where).values(
            execution_count=versions.c.execution_count + n,
            success_count=versions.c.success_count + ok,
            failure_count=versions.c.failure_count + (n - ok),
            total_execution_time=versions.c.total_execution_time + total["duration"],
            average_execution_time=(versions.c.total_execution_time + total["duration"])
            / (versions.c.execution_count + n),
            total_tokens_used=versions.c.total_tokens_used + int(total["tokens"]),
            total_cost=versions.c.total_cost + sa.cast(sa.literal(repr(total["cost"])), sa.Numeric(20, 9)),
            updated_at=now,
        ))
        # Read after the update: the row lock is held, so every committed record is visible here.
        recent = (await connection.execute(
            sa.select(executions.c.duration_ms)
            .where(executions.c.agent_id == ref.agent_id, executions.c.version == ref.version)
            .order_by(executions.c.finish_time.desc(), executions.c.execution_id.desc()).limit(p95_window)
        )).scalars().all()
        await connection.execute(versions.update().where(*where).values(p95_execution_time=p95(recent)))

    # ---- analysis -----------------------------------------------------------------------------------

    async def claim_analyses(self, owner: str, now: datetime, lease_seconds: float,
                             limit: int, *, reclaim_own: bool = False) -> list[AnalysisJob]:
        """Claims pending analyses, and running ones whose lease expired (their worker died) or, with
        ``reclaim_own``, that ``owner`` held before a restart."""
        taken_over = versions.c.analysis_lease_expires_at < now
        if reclaim_own:
            taken_over = sa.or_(taken_over, versions.c.analysis_owner == owner)
        claimable = sa.or_(
            versions.c.analysis_state == AnalysisState.PENDING.value,
            sa.and_(versions.c.analysis_state == AnalysisState.RUNNING.value, taken_over),
        )
        async with self._engine.connect() as connection:
            ids = (await connection.execute(sa.select(versions.c.id).where(claimable)
                                            .order_by(versions.c.id).limit(limit))).scalars().all()
        jobs: list[AnalysisJob] = []
        for version_id in ids:
            async with self._writing() as connection:
                # Compare-and-set: of several replicas racing for one row, exactly one wins it.
                claimed = await connection.execute(
                    versions.update().where(versions.c.id == version_id, claimable).values(
                        analysis_state=AnalysisState.RUNNING.value, analysis_owner=owner,
                        analysis_lease_expires_at=now + timedelta(seconds=lease_seconds),
                        analysis_attempts=versions.c.analysis_attempts + 1, updated_at=now,
                    ).returning(versions.c.agent_id, versions.c.version, versions.c.name, versions.c.description,
                                versions.c.code, versions.c.class_name, versions.c.declared_capabilities,
                                versions.c.analysis_attempts))
                row = claimed.first()
            if row is not None:
                jobs.append(AnalysisJob(
                    ref=VersionRef(row.agent_id, row.version), name=row.name, description=row.description,
                    code=row.code, class_name=row.class_name, declared_capabilities=row.declared_capabilities,
                    owner=owner, attempt=row.analysis_attempts))
        return jobs

    async def finish_analysis(self, job: AnalysisJob, analysis: Analysis, now: datetime,
                              capabilities_text: str, search_text: str,
                              embedding: Sequence[float] | None) -> bool:
        """Stores the result if ``job``'s lease is still held (fenced by owner and attempt)."""
        values: dict[str, Any] = {
            "analysis_state": analysis.state.value, "analysis_owner": None, "analysis_lease_expires_at": None,
            "ai_capabilities": dict(analysis.capabilities) if analysis.state is AnalysisState.SUCCEEDED else None,
            "ai_quality_score": analysis.quality_score, "ai_analysis_timestamp": analysis.analysis_time,
            "ai_model_used": ", ".join(analysis.models_used) or None,
            "analysis_models": list(analysis.models_used),
            "analysis_static_metrics": dict(analysis.static_metrics),
            "analysis_duration_ms": analysis.duration_ms, "analysis_error": analysis.error, "updated_at": now,
        }
        if analysis.state is AnalysisState.SUCCEEDED:
            values.update(capabilities_text=capabilities_text, search_text=search_text,
                          search_embedding=list(embedding) if embedding else None)
        async with self._writing() as connection:
            result = await connection.execute(versions.update().where(
                versions.c.agent_id == job.ref.agent_id, versions.c.version == job.ref.version,
                versions.c.analysis_state == AnalysisState.RUNNING.value,
                versions.c.analysis_owner == job.owner, versions.c.analysis_attempts == job.attempt,
            ).values(**values))
        return bool(result.rowcount == 1)

    async def release_analyses(self, owner: str) -> int:
        """Puts ``owner``'s running analyses back to pending (graceful stop)."""
        async with self._writing() as connection:
            result = await connection.execute(versions.update().where(
                versions.c.analysis_owner == owner, versions.c.analysis_state == AnalysisState.RUNNING.value,
            ).values(analysis_state=AnalysisState.PENDING.value, analysis_owner=None,
                     analysis_lease_expires_at=None))
        return int(result.rowcount)


def _version(row: Any, parents: tuple[VersionRef, ...]) -> AgentVersion:
    mapping = row._mapping
    return AgentVersion(
        agent_id=row.agent_id, name=row.name, version=row.version, description=row.description,
        code=mapping.get("code"), code_hash=row.code_hash, class_name=row.class_name,
        declared_capabilities=row.declared_capabilities or {}, execute_is_async=row.execute_is_async,
        parents=parents, labels=row.labels or {},
        analysis=Analysis(
            state=AnalysisState(row.analysis_state), capabilities=row.ai_capabilities or {},
            quality_score=row.ai_quality_score, static_metrics=row.analysis_static_metrics or {},
            models_used=tuple(row.analysis_models or ()), analysis_time=row.ai_analysis_timestamp,
            duration_ms=row.analysis_duration_ms, error=row.analysis_error,
        ),
        metrics=Metrics(
            execution_count=row.execution_count, success_count=row.success_count,
            failure_count=row.failure_count, average_duration_ms=row.average_execution_time,
            p95_duration_ms=row.p95_execution_time, total_tokens=row.total_tokens_used,
            total_cost_usd=float(row.total_cost),
        ),
        create_time=row.created_at, update_time=row.updated_at, code_size_bytes=row.code_size_bytes,
    )


def _case(row: Any) -> AgentCase:
    return AgentCase(case_id=row.case_id, agent_id=row.agent_id, version=row.version, execution_id=row.execution_id,
                     success=row.success, inputs=row.inputs, output=row.output, error_type=row.error_type,
                     error_message=row.error_message, source=row.source, expected=row.expected,
                     create_time=row.created_at, label_time=row.labelled_at)


def _alias(row: Any) -> AgentAlias:
    rollout = None
    if row.alias == CANARY:
        rollout = RolloutPolicy(row.min_sample, row.max_success_rate_drop, row.max_latency_ratio,
                                row.min_latency_increase_ms)
    return AgentAlias(row.agent_id, row.alias, row.version, row.updated_at, row.traffic_fraction, rollout)
