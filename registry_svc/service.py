"""Use-cases of the registry: register, read, list, search, lineage and execution metrics."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog

from registry_svc import matching, validation
from registry_svc.cases import CaseLimits, fit_case
from registry_svc.domain import (
    AGENT_ID_PREFIX,
    AgentIdentity,
    AgentVersion,
    ExecutionRecord,
    LabelUpdate,
    Lineage,
    LineageEdge,
    ListQuery,
    NewVersion,
    RecordResult,
    RegisterCommand,
    Registration,
    SearchCandidate,
    SearchHit,
    Selector,
    VersionRef,
)
from registry_svc.ports import (
    ChangeListener,
    CodeInspector,
    Embedder,
    InspectionFailed,
    Repository,
    RequestMismatch,
    TooManyLabels,
    UnknownVersions,
    VersionConflict,
)
from registry_svc.quality import static_metrics
from tdev_common import paging
from tdev_common.errors import (
    FIELD_REQUIRED,
    INVALID_FIELD,
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    invalid_field,
    require,
)
from tdev_common.idempotency import RequestIdReused, check_same_request
from tdev_common.paging import Page

log = structlog.get_logger(__name__)

DEFAULT_TOP_K, MAX_TOP_K = 10, 100
DEFAULT_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH = 10, 100
MAX_RECORDS_PER_CALL = 1000
MAX_EXECUTION_ID_CHARS = 128
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    """Limits the use-cases enforce."""

    max_code_bytes: int = 64 * 1024
    max_agents: int = 10_000
    p95_window: int = 1000
    register_attempts: int = 25


def _utcnow() -> datetime:
    return datetime.now(UTC)


AGENT_NOT_FOUND = "AGENT_NOT_FOUND"


def _invalid(field: str, problem: str) -> InvalidArgument:
    return invalid_field(field, problem)


def new_agent_id() -> str:
    """A fresh stable agent id, e.g. ``agent_3f9c0a1b2c4d``."""
    return AGENT_ID_PREFIX + uuid.uuid4().hex[:12]


class RegistryService:
    """The registry's use-cases over a repository, a sandbox inspector and a change listener."""

    def __init__(self, repository: Repository, inspector: CodeInspector, changes: ChangeListener, *,
                 limits: Limits | None = None, on_registered: Callable[[], None] = lambda: None,
                 embedder: Embedder | None = None, clock: Callable[[], datetime] = _utcnow,
                 case_limits: CaseLimits | None = None,
                 after_record: Callable[[Sequence[str]], Awaitable[None]] | None = None) -> None:
        self._repository = repository
        self._after_record = after_record
        self._case_limits = case_limits or CaseLimits()
        self._inspector = inspector
        self._changes = changes
        self._limits = limits or Limits()
        self._on_registered = on_registered
        self._embedder = embedder
        self._clock = clock

    # ---- RegisterAgent ------------------------------------------------------------------------------

    async def register(self, command: RegisterCommand) -> Registration:
        """Validates, loads in the sandbox and stores code; idempotent by (name, code) and request id.

        Raises:
            InvalidArgument: bad name, version, parents or fields; invalid code (with line and problem);
                code over the size limit; the class failing to load in the sandbox.
            AlreadyExists: an explicit version that exists with different code.
            ResourceExhausted: a new agent when the registry holds max_agents.
            Aborted: concurrent registrations kept racing (retry).
        """
        validation.check_name(command.name)
        validation.check_request_fields(command.description, command.labels, command.parents,
                                        command.request_id)
        if command.version:
            validation.parse_version(command.version)
        if command.request_id:
            replayed = await self._replayed(command)
            if replayed is not None:
                return Registration(replayed, created=False)
        facts = validation.validate_code(command.code, self._limits.max_code_bytes)
        code_hash = hashlib.sha256(command.code.encode("utf-8")).hexdigest()
        existing = await self._same_code(command, code_hash)
        if existing is not None:
            return Registration(existing, created=False)
        await self._check_parents(command.parents)
        try:
            inspection = await self._inspector.inspect(command.code, facts.class_name)
        except InspectionFailed as error:
            raise invalid_field("code", f"loading {facts.class_name} in the sandbox failed: {error}",
                                reason=validation.INVALID_CODE) from None
        metrics = static_metrics(command.code)
        capabilities = matching.capabilities_text(inspection.declared_capabilities)
        for _ in range(self._limits.register_attempts):
            existing = await self._same_code(command, code_hash)
            if existing is not None:
                return Registration(existing, created=False)
            identity = await self._repository.identity(name=command.name)
            version = await self._next_version(command, identity)
            new = NewVersion(
                agent_id=identity.agent_id if identity else new_agent_id(), agent_is_new=identity is None,
                name=command.name, version=version, description=command.description, code=command.code,
                code_hash=code_hash, class_name=facts.class_name,
                declared_capabilities=inspection.declared_capabilities,
                execute_is_async=facts.execute_is_async, parents=command.parents, labels=command.labels,
                request_id=command.request_id, request_fingerprint=command.fingerprint,
                search_text=matching.search_text(command.name, command.description, capabilities),
                capabilities_text=capabilities, static_metrics=metrics, create_time=self._clock(),
                previous_latest=identity.latest if identity else "",
            )
            try:
                stored = await self._repository.insert_version(new)
            except VersionConflict as conflict:
                log.info("register_conflict_retry", name=command.name, reason=str(conflict))
                continue
            await self._changes.agent_changed(stored.agent_id, [stored.version])
            self._on_registered()
            log.info("agent_registered", agent_id=stored.agent_id, name=stored.name, version=stored.version)
            return Registration(stored, created=True)
        raise Aborted(f"registrations of {command.name} kept racing; retry the request", reason="CONCURRENT_UPDATE")

    async def _replayed(self, command: RegisterCommand) -> AgentVersion | None:
        """The version a replayed request id registered; RequestIdReused when it came with another request."""
        found = await self._repository.find_request(command.request_id)
        if found is None:
            return None
        ref, stored_fingerprint = found
        check_same_request(command.request_id, stored_fingerprint, command.fingerprint, f"agent version {ref}")
        return await self._repository.get_version(Selector(agent_id=ref.agent_id, version=ref.version),
                                                  include_code=True)

    async def _same_code(self, command: RegisterCommand, code_hash: str) -> AgentVersion | None:
        existing = await self._repository.find_by_hash(command.name, code_hash)
        if existing is not None and command.request_id:
            await self._repository.remember_request(command.request_id, existing.ref, command.fingerprint)
            # The first request stored under the id wins: a racing different request with it is refused.
            await self._replayed(command)
        return existing

    async def _check_parents(self, parents: Sequence[VersionRef]) -> None:
        found = await self._repository.existing(parents)
        for index, parent in enumerate(parents):
            if parent not in found:
                raise _invalid(f"parents[{index}]", f"unknown agent version {parent}")

    async def _next_version(self, command: RegisterCommand, identity: AgentIdentity | None) -> str:
        if identity is None:
            if await self._repository.count_agents() >= self._limits.max_agents:
                raise ResourceExhausted(f"the registry holds its limit of {self._limits.max_agents} agents",
                                        reason="AGENT_LIMIT_REACHED")
            return command.version or "1.0.0"
        if not command.version:
            return validation.next_minor(identity.latest)
        if command.version in identity.versions:
            raise AlreadyExists(f"{command.name} {command.version} exists with different code; "
                                "leave version empty for the next minor version", reason="VERSION_EXISTS",
                                metadata={"name": command.name, "version": command.version})
        if validation.parse_version(command.version) <= validation.parse_version(identity.latest):
            raise _invalid("version", f"{command.version} is not higher than the latest version "
                                      f"{identity.latest} of {command.name}")
        return command.version

    # ---- UpdateAgentLabels --------------------------------------------------------------------------

    async def update_labels(self, update: LabelUpdate) -> AgentVersion:
        """Sets and removes labels of one version atomically; nothing else of the version changes.

        ``update_time`` moves and cached GetAgent answers are dropped (here, in Redis and on the other replicas)
        only when the labels really changed; a replayed request id changes nothing and returns the version as
        it is now.

        Raises:
            InvalidArgument: a missing or malformed agent_id or version, a bad label key or value (named), more
                than 64 labels afterwards, nothing to change, or a request id reused for a different change.
            NotFound: no such agent or version.
            Aborted: calls with the same request id kept racing (retry).
        """
        validation.check_label_update(update)
        try:
            result = await self._repository.update_labels(update, self._clock(), validation.MAX_LABELS_PER_VERSION)
        except TooManyLabels as error:
            raise _invalid("set_labels", f"the version would carry {error.count} labels; the limit is "
                                         f"{validation.MAX_LABELS_PER_VERSION}") from None
        except RequestMismatch:
            raise RequestIdReused(update.request_id, f"a label change of {update.ref}") from None
        except VersionConflict as conflict:
            raise Aborted(f"label changes with request id {update.request_id} kept racing; retry",
                          reason="CONCURRENT_UPDATE") from conflict
        if result is None:
            ref = update.ref
            if await self._repository.identity(agent_id=ref.agent_id) is None:
                raise self._not_found(Selector(agent_id=ref.agent_id))
            raise self._not_found(Selector(agent_id=ref.agent_id, version=ref.version))
        if result.changed:
            await self._changes.agent_changed(update.ref.agent_id, [update.ref.version])
            log.info("agent_labels_updated", agent_id=update.ref.agent_id, version=update.ref.version,
                     set=sorted(update.set_labels), removed=sorted(update.remove_labels))
        return result.agent

    # ---- reads --------------------------------------------------------------------------------------

    async def get_agent(self, selector: Selector, *, include_code: bool = True) -> AgentVersion:
        """One version by id or name (latest unless a version is given).

        Raises:
            InvalidArgument: neither id nor name, or a malformed version.
            NotFound: no such agent or version.
        """
        self._check_selector(selector)
        agent = await self._repository.get_version(selector, include_code=include_code)
        if agent is None:
            raise self._not_found(selector)
        return agent

    @staticmethod
    def _check_selector(selector: Selector) -> None:
        if not selector.agent_id and not selector.name:
            raise invalid_field("agent_id", "is required (or give name instead)", reason="FIELD_REQUIRED")
        if selector.version:
            validation.parse_version(selector.version)

    @staticmethod
    def _not_found(selector: Selector) -> NotFound:
        who = f"agent_id {selector.agent_id}" if selector.agent_id else f"name {selector.name}"
        metadata = {"agent_id": selector.agent_id} if selector.agent_id else {"name": selector.name}
        if selector.version:
            return NotFound(f"agent with {who} has no version {selector.version}", reason="AGENT_VERSION_NOT_FOUND",
                            metadata={**metadata, "version": selector.version})
        return NotFound(f"no agent with {who}", reason=AGENT_NOT_FOUND, metadata=metadata)

    async def list_agents(self, query: ListQuery) -> Page[AgentVersion]:
        """One page of latest versions.

        Raises:
            InvalidArgument: negative page size, or min_quality_score outside [0, 1].
        """
        if not 0 <= query.min_quality <= 1:
            raise _invalid("min_quality_score", f"must be in [0, 1] (got {query.min_quality})")
        return await self._repository.list_agents(replace(query, page_size=paging.page_size(query.page_size)))

    async def list_versions(self, selector: Selector, size: int, after: int | None) -> Page[AgentVersion]:
        """One page of an agent's versions, newest first.

        Raises:
            InvalidArgument: neither id nor name.
            NotFound: no such agent.
        """
        identity = await self._identity(selector)
        return await self._repository.list_versions(identity.agent_id, paging.page_size(size), after)

    async def _identity(self, selector: Selector) -> AgentIdentity:
        self._check_selector(Selector(selector.agent_id, selector.name))
        identity = await self._repository.identity(agent_id=selector.agent_id, name=selector.name)
        if identity is None:
            raise self._not_found(Selector(selector.agent_id, selector.name))
        return identity

    async def lineage(self, agent_id: str, version: str, max_depth: int) -> Lineage:
        """Every ancestor edge of a version within ``max_depth`` generations.

        Raises:
            InvalidArgument: missing agent_id, bad version or negative depth.
            NotFound: no such agent or version.
        """
        require("agent_id", agent_id)
        if max_depth < 0:
            raise _invalid("max_depth", f"must not be negative (got {max_depth})")
        depth = min(max_depth or DEFAULT_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH)
        root = (await self.get_agent(Selector(agent_id=agent_id, version=version), include_code=False)).ref
        edges: list[LineageEdge] = []
        seen, frontier = {root}, [root]
        for _ in range(depth):
            if not frontier:
                break
            found = await self._repository.parents_of(frontier)
            edges.extend(LineageEdge(child, parent) for child, parent in found)
            frontier = sorted({parent for _, parent in found} - seen)
            seen.update(frontier)
        agents = await self._repository.get_versions(sorted(seen))
        return Lineage(root=root, edges=tuple(edges), agents=tuple(agents))

    # ---- search -------------------------------------------------------------------------------------

    async def search(self, query: str, top_k: int, min_quality: float) -> list[SearchHit]:
        """Agents ranked by text match (full-text, embeddings or token overlap) blended with quality
        and success rate; each hit says why it matched.

        Raises:
            InvalidArgument: empty or oversized query, negative top_k, min_quality outside [0, 1].
        """
        if not query.strip():
            raise _invalid("query", "must not be empty")
        if len(query) > MAX_QUERY_CHARS:
            raise _invalid("query", f"{len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        if top_k < 0:
            raise _invalid("top_k", f"must not be negative (got {top_k})")
        if not 0 <= min_quality <= 1:
            raise _invalid("min_quality_score", f"must be in [0, 1] (got {min_quality})")
        k = min(top_k or DEFAULT_TOP_K, MAX_TOP_K)
        terms = matching.query_terms(query)
        query_vector = await self._query_embedding(query)
        matcher, candidates = await self._repository.search_candidates(
            terms, limit=max(50, 5 * k), min_quality=min_quality, with_embeddings=query_vector is not None)
        if matcher == "embeddings" and not any(c.embedding for c in candidates):
            query_vector = None
            matcher, candidates = await self._repository.search_candidates(
                terms, limit=max(50, 5 * k), min_quality=min_quality, with_embeddings=False)
        max_rank = max((c.fts_rank or 0.0 for c in candidates), default=0.0)
        hits = [hit for c in candidates
                if (hit := self._score(c, terms, matcher, max_rank, query_vector)) is not None]
        hits.sort(key=lambda h: (-h.score, h.agent.name))
        return hits[:k]

    async def _query_embedding(self, query: str) -> tuple[float, ...] | None:
        if self._embedder is None:
            return None
        try:
            return tuple((await self._embedder.embed([query]))[0])
        except Exception as error:  # an embeddings outage degrades search, it does not fail it
            log.warning("search_embedding_failed", error=str(error))
            return None

    @staticmethod
    def _score(candidate: SearchCandidate, terms: Sequence[str], matcher: str, max_rank: float,
               query_vector: tuple[float, ...] | None) -> SearchHit | None:
        agent = candidate.agent
        coverage, reasons = matching.overlap(terms, {
            "name": agent.name, "description": agent.description, "capabilities": candidate.capabilities_text})
        if matcher == "postgres-fts" and terms:
            # Full-text search found and ranked it; coverage keeps the score's scale absolute.
            relative = (candidate.fts_rank or 0.0) / max_rank if max_rank else 0.0
            text_score = max(coverage, 1 / len(terms)) * (0.5 + 0.5 * relative)
        elif matcher == "embeddings" and query_vector is not None and candidate.embedding:
            similarity = max(0.0, matching.cosine(query_vector, candidate.embedding))
            text_score = similarity
            reasons = (*reasons, f"meaning is similar ({similarity:.2f})")
        else:
            text_score = coverage
        if text_score <= 0:
            return None
        quality = agent.analysis.quality_score
        score = matching.blended_score(text_score, quality, agent.metrics.success_count,
                                       agent.metrics.execution_count)
        if quality is not None:
            reasons = (*reasons, f"quality {quality:.2f}")
        if agent.metrics.execution_count:
            reasons = (*reasons, f"success rate {agent.metrics.success_rate:.0%} over "
                                 f"{agent.metrics.execution_count} runs")
        return SearchHit(agent=agent, score=score, text_score=round(min(1.0, text_score), 6),
                         reasons=reasons, matcher=matcher)

    # ---- RecordExecutions ---------------------------------------------------------------------------

    async def record_executions(self, records: Sequence[ExecutionRecord]) -> RecordResult:
        """Applies a batch atomically; records whose execution_id was seen before are ignored.

        Raises:
            InvalidArgument: too many records or a malformed one (named by index).
            NotFound: a record names an unknown agent version (nothing is written).
        """
        if len(records) > MAX_RECORDS_PER_CALL:
            raise _invalid("records", f"{len(records)} records; the limit is {MAX_RECORDS_PER_CALL} per call")
        unique: dict[str, ExecutionRecord] = {}
        for index, record in enumerate(records):
            self._check_record(index, record)
            unique.setdefault(record.execution_id, fit_case(record, self._case_limits))
        if not unique:
            return RecordResult(accepted=0, duplicates=0)
        try:
            result = await self._repository.record_executions(list(unique.values()), self._clock(),
                                                              self._limits.p95_window,
                                                              self._case_limits.max_cases_per_version)
        except UnknownVersions as error:
            raise NotFound(f"unknown agent versions: {error}", reason="AGENT_VERSION_NOT_FOUND") from None
        by_agent: dict[str, list[str]] = defaultdict(list)
        for ref in result.touched:
            by_agent[ref.agent_id].append(ref.version)
        for agent_id, changed in by_agent.items():
            await self._changes.agent_changed(agent_id, changed)
        if self._after_record is not None and by_agent:
            await self._after_record(list(by_agent))
        return RecordResult(accepted=result.accepted,
                            duplicates=result.duplicates + len(records) - len(unique), touched=result.touched)

    @staticmethod
    def _check_record(index: int, record: ExecutionRecord) -> None:
        field = f"records[{index}]"
        if not record.execution_id or len(record.execution_id) > MAX_EXECUTION_ID_CHARS:
            # An empty id is a required field left out (FIELD_REQUIRED, docs/errors.md); an over-long one is malformed.
            raise invalid_field(f"{field}.execution_id", f"1 to {MAX_EXECUTION_ID_CHARS} characters required",
                                reason=INVALID_FIELD if record.execution_id else FIELD_REQUIRED)
        require(f"{field}.agent_id", record.agent_id)
        validation.parse_version_at(record.version, f"{field}.version")
        if not math.isfinite(record.duration_ms) or record.duration_ms < 0:
            raise _invalid(f"{field}.duration_ms", f"must be a finite number >= 0 (got {record.duration_ms})")
        if record.tokens < 0:
            raise _invalid(f"{field}.tokens", f"must not be negative (got {record.tokens})")
        if not math.isfinite(record.cost_usd) or record.cost_usd < 0:
            raise _invalid(f"{field}.cost_usd", f"must be a finite number >= 0 (got {record.cost_usd})")
