"""Use-cases of the workflow service: definitions, executions, watching and cancelling."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import structlog

from tdev_common import paging
from tdev_common.clock import utc_now
from tdev_common.completion import complete
from tdev_common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    invalid_field,
    require,
)
from tdev_common.event_stream import Subscription, stored_then_live_batches
from tdev_common.paging import Page
from workflow_svc import refs, validation
from workflow_svc.bus import EventBus
from workflow_svc.domain import (
    AgentInfo,
    AgentRef,
    AliasTarget,
    Event,
    EventType,
    Execution,
    ExecutionFilter,
    ExecutionState,
    FailurePolicy,
    NodeRun,
    StartRequest,
    Workflow,
    WorkflowSpec,
)
from workflow_svc.engine import Engine
from workflow_svc.planning import plan
from workflow_svc.ports import AgentNotFound, Cursor, Registry, Repository

log = structlog.get_logger(__name__)
EVENT_PAGE = 1000
INVALID_DEFINITION = "INVALID_DEFINITION"


def _workflow_not_found(workflow_id: str) -> NotFound:
    return NotFound(f'workflow "{workflow_id}" not found', reason="WORKFLOW_NOT_FOUND",
                    metadata={"workflow_id": workflow_id})


def _execution_not_found(execution_id: str) -> NotFound:
    return NotFound(f'execution "{execution_id}" not found', reason="EXECUTION_NOT_FOUND",
                    metadata={"execution_id": execution_id})


def new_execution_id() -> str:
    """A fresh execution id."""
    return "ex_" + uuid.uuid4().hex[:12]

@dataclass(frozen=True)
class ServiceSettings:
    """Knobs of the use-cases."""

    limits: validation.Limits
    lease_seconds: float
    watch_poll_seconds: float
    cancel_wait_seconds: float


class WorkflowService:
    """What the servicer calls; raises DomainError subclasses only."""

    def __init__(
        self, settings: ServiceSettings, repo: Repository, registry: Registry, engine: Engine, bus: EventBus
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._registry = registry
        self._engine = engine
        self._bus = bus

    # -- definitions ----------------------------------------------------------------------------------------
    async def create_workflow(
        self, spec: WorkflowSpec, request_id: str, validate_only: bool, fingerprint: str = ""
    ) -> Workflow:
        """Validates a definition (every problem at once), pins its agents and stores it.

        ``fingerprint`` says what the request was: a replayed request id must come with the same one.

        Raises:
            InvalidArgument: the definition has problems, each a field violation (reason INVALID_DEFINITION);
                the request id was used before for a different request (REQUEST_ID_REUSED).
            Unavailable: the registry cannot be reached to check the agents.
        """
        if request_id and not validate_only:
            existing = await self._repo.find_workflow_by_request(request_id, fingerprint)
            if existing is not None:
                return existing
        problems = validation.structural_violations(spec, self._settings.limits)
        try:
            found, missing = await self._lookup_agents(spec)
        except Unavailable as error:
            if not problems:
                raise
            problems.append(FieldViolation("nodes", f"agents not checked: {error.message}"))
            raise InvalidArgument(validation.summary(problems), reason=INVALID_DEFINITION,
                                  violations=problems) from error
        problems.extend(validation.agent_violations(spec, validation.AgentLookup(found, missing)))
        if not problems:
            problems.extend(await self._alias_violations(spec, found))
        if problems:
            raise InvalidArgument(validation.summary(problems), reason=INVALID_DEFINITION, violations=problems)
        pinned = []
        for node in spec.nodes:
            info = found[AgentRef(node.agent_id, node.agent_version)]
            # A node by alias keeps no version: the alias picks it when each execution starts.
            version = "" if node.agent_alias else info.version
            pinned.append(replace(node, agent_id=info.agent_id, agent_version=version, agent_name=info.name))
        estimates = {
            node.id: found[AgentRef(node.agent_id, node.agent_version)].average_duration_ms for node in spec.nodes
        }
        now = utc_now()
        workflow = Workflow(
            workflow_id="wf_" + uuid.uuid4().hex[:12],
            spec=replace(spec, nodes=tuple(pinned)),
            plan=plan(tuple(pinned), estimates),
            create_time=now,
            update_time=now,
        )
        if validate_only:
            return replace(workflow, workflow_id="")
        stored = await self._repo.insert_workflow(workflow, request_id, fingerprint)
        log.info("workflow_created", workflow_id=stored.workflow_id, nodes=len(spec.nodes))
        return stored

    async def _alias_violations(self, spec: WorkflowSpec, found: dict[AgentRef, AgentInfo]) -> list[FieldViolation]:
        """A node naming an alias its agent does not have (yet) is refused at creation."""
        problems = []
        known: dict[str, dict[str, AliasTarget]] = {}
        for index, node in enumerate(spec.nodes):
            if not node.agent_alias:
                continue
            agent_id = found[AgentRef(node.agent_id, node.agent_version)].agent_id
            if agent_id not in known:
                known[agent_id] = await self._registry.aliases(agent_id)
            if node.agent_alias not in known[agent_id]:
                have = ", ".join(sorted(known[agent_id])) or "none"
                problems.append(FieldViolation(f"nodes[{index}].agent_alias",
                                               f'agent {agent_id} has no alias "{node.agent_alias}" (it has: {have})'))
        return problems

    async def _lookup_agents(self, spec: WorkflowSpec) -> tuple[dict[AgentRef, AgentInfo], dict[AgentRef, str]]:
        wanted = validation.agent_refs(spec)

        async def look(ref: AgentRef) -> AgentInfo | str:
            try:
                return await self._registry.get_agent(ref, with_code=False)
            except AgentNotFound:
                if not ref.version:
                    return f'unknown agent "{ref.agent}"'
            try:
                await self._registry.get_agent(AgentRef(ref.agent, ""), with_code=False)
            except AgentNotFound:
                return f'unknown agent "{ref.agent}"'
            return f'version: agent "{ref.agent}" has no version "{ref.version}"'

        answers = await asyncio.gather(*(look(ref) for ref in wanted))
        found = {ref: answer for ref, answer in zip(wanted, answers, strict=True) if isinstance(answer, AgentInfo)}
        missing = {ref: answer for ref, answer in zip(wanted, answers, strict=True) if isinstance(answer, str)}
        return found, missing

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """A stored workflow with its plan.

        Raises:
            InvalidArgument: no workflow_id (FIELD_REQUIRED).
            NotFound: no such workflow.
        """
        require("workflow_id", workflow_id)
        workflow = await self._repo.get_workflow(workflow_id)
        if workflow is None:
            raise _workflow_not_found(workflow_id)
        return workflow

    async def list_workflows(self, page_size: int, after: Cursor | None, name_contains: str) -> Page[Workflow]:
        """One page of workflows, newest first."""
        rows = await self._repo.list_workflows(page_size + 1, after, name_contains)
        return paging.take(rows, page_size, lambda last: (last.create_time, last.workflow_id))

    # -- executions ------------------------------------------------------------------------------------------
    async def start_execution(self, request: StartRequest, *, execution_id: str | None = None) -> Execution:
        """Accepts an execution and starts it on this replica (or leaves it for another when full).

        ``execution_id`` is the id a new execution gets (default: a fresh one); :meth:`execute` picks it
        first so that it can subscribe to the execution's events before any exists.

        Raises:
            NotFound: no such workflow.
            InvalidArgument: no workflow_id (FIELD_REQUIRED); inputs the definition references are missing
                (MISSING_INPUTS); the request id was used before for a different request (REQUEST_ID_REUSED).
        """
        require("workflow_id", request.workflow_id)
        if request.request_id:
            existing = await self._repo.find_execution_by_request(request.request_id, request.fingerprint)
            if existing is not None:
                return existing
        workflow = await self._engine.workflow_or_none(request.workflow_id)
        if workflow is None:
            raise _workflow_not_found(request.workflow_id)
        missing = sorted(_required_inputs(workflow) - set(request.inputs))
        if missing:
            raise InvalidArgument(
                f"missing workflow inputs: {', '.join(missing)}",
                reason="MISSING_INPUTS",
                violations=[FieldViolation(f"inputs.{name}", "required by the workflow") for name in missing],
            )
        policy = request.failure_policy or workflow.spec.failure_policy or FailurePolicy.FAIL_FAST
        now = utc_now()
        execution = Execution(
            execution_id=execution_id or new_execution_id(),
            workflow_id=workflow.workflow_id,
            state=ExecutionState.PENDING,
            inputs=request.inputs,
            failure_policy=policy,
            create_time=now,
            update_time=now,
            request_id=request.request_id,
        )
        owner = self._engine.settings.worker_id if self._engine.has_capacity else None
        expires = time.time() + self._settings.lease_seconds
        stored, claim = await self._repo.insert_execution(execution, owner, expires,
                                                          request.fingerprint)
        if claim is not None:
            self._engine.adopt(claim, stored)
        elif stored is execution:
            await self._bus.work_available()
        log.info("execution_accepted", execution_id=stored.execution_id, workflow_id=workflow.workflow_id)
        return replace(stored, nodes=_pending_nodes(workflow, ()))

    async def execute(self, request: StartRequest,
                      event_types: frozenset[EventType] = frozenset()) -> AsyncIterator[list[Event]]:
        """Starts an execution and yields its events until it ends (only those of ``event_types`` and the
        last one, when ``event_types`` is not empty), in batches: each list holds every event ready at that
        moment, in order, never empty.

        The subscription to the new execution's events is taken before the execution is stored, so no
        event can be committed that it misses, and the stream starts live: no storage reads at start (a
        request id that names an earlier execution gets the ordinary :meth:`watch`, from storage).
        """
        execution_id = new_execution_id()
        subscription = self._bus.subscribe(execution_id)
        try:
            # Stored even if the caller leaves meanwhile (tdev_common.completion): never half-written.
            execution = await complete(self.start_execution(request, execution_id=execution_id))
        except BaseException:
            self._bus.unsubscribe(subscription)
            raise
        if execution.execution_id != execution_id:
            self._bus.unsubscribe(subscription)
            async for batch in self.watch(execution.execution_id, 0, event_types):
                yield batch
            return
        async for batch in _only(self._stream(execution_id, 0, subscription), event_types):
            yield batch

    async def watch(self, execution_id: str, after_sequence: int,
                    event_types: frozenset[EventType] = frozenset()) -> AsyncIterator[list[Event]]:
        """Stored events after ``after_sequence``, then live ones, until the execution ends (only those of
        ``event_types`` and the last one, when ``event_types`` is not empty), in batches as :meth:`execute`.

        No gap and no duplicate: live events are buffered from before the storage read, and anything
        that does not continue the sequence is read again from storage.

        Raises:
            NotFound: no such execution.
            InvalidArgument: no execution_id (FIELD_REQUIRED), a negative sequence.
        """
        require("execution_id", execution_id)
        if after_sequence < 0:
            raise invalid_field("after_sequence", "must not be negative")
        execution = await self._repo.get_execution(execution_id, with_nodes=False)
        if execution is None:
            raise _execution_not_found(execution_id)
        if execution.state.is_terminal and after_sequence >= execution.last_sequence:
            return
        async for batch in _only(self._stream(execution_id, after_sequence, None), event_types):
            yield batch

    async def _stream(self, execution_id: str, after_sequence: int,
                      subscription: Subscription[Event] | None) -> AsyncIterator[list[Event]]:
        async def read_after(last: int, limit: int) -> Sequence[Event]:
            return await self._repo.events_after(execution_id, last, limit)

        async def ended(last: int) -> bool:
            current = await self._repo.get_execution(execution_id, with_nodes=False)
            return current is not None and current.state.is_terminal and last >= current.last_sequence

        async for batch in stored_then_live_batches(
            self._bus, execution_id, after_sequence, read_after=read_after,
            is_last=lambda event: event.type.ends_execution, ended=ended,
            poll_seconds=self._settings.watch_poll_seconds, page=EVENT_PAGE, subscription=subscription,
            writer_is_local=lambda: self._engine.runs_locally(execution_id),
        ):
            yield batch

    async def get_execution(self, execution_id: str) -> Execution:
        """An execution with the state of every node (in definition order).

        Raises:
            InvalidArgument: no execution_id (FIELD_REQUIRED).
            NotFound: no such execution.
        """
        require("execution_id", execution_id)
        execution = await self._repo.get_execution(execution_id)
        if execution is None:
            raise _execution_not_found(execution_id)
        workflow = await self._engine.workflow_or_none(execution.workflow_id)
        if workflow is None:
            return execution
        return replace(execution, nodes=_pending_nodes(workflow, execution.nodes))

    async def list_executions(self, query: ExecutionFilter, page_size: int, after: Cursor | None) -> Page[Execution]:
        """One page of executions, newest first, without node runs."""
        rows = await self._repo.list_executions(query, page_size + 1, after)
        return paging.take(rows, page_size, lambda last: (last.create_time, last.execution_id))

    async def cancel(self, execution_id: str, reason: str) -> Execution:
        """Cancels an execution wherever it runs and waits (briefly) until it has stopped.

        Raises:
            InvalidArgument: no execution_id (FIELD_REQUIRED).
            NotFound: no such execution.
            FailedPrecondition: the execution has already ended (EXECUTION_ENDED).
        """
        require("execution_id", execution_id)
        reason = reason or "cancelled by a caller"
        found = await self._repo.request_cancel(execution_id, reason, time.time())
        if found is None:
            raise _execution_not_found(execution_id)
        state, owner, expires = found
        if state.is_terminal:
            raise FailedPrecondition(
                f'execution "{execution_id}" has already ended ({state.name.lower()})',
                reason="EXECUTION_ENDED",
                metadata={"execution_id": execution_id, "state": state.name},
            )
        subscription = self._bus.subscribe(execution_id)
        try:
            await self._bus.cancel(execution_id, reason)
            if owner is None or (expires is not None and expires < time.time()):
                # Nobody runs it: take it here; the run sees the request and ends at once.
                await self._engine.claim(1, execution_id=execution_id)
            deadline = time.monotonic() + self._settings.cancel_wait_seconds
            while time.monotonic() < deadline:
                # Clear before reading: a wake-up that lands during the read must not be lost.
                subscription.wake.clear()
                current = await self._repo.get_execution(execution_id, with_nodes=False)
                if current is not None and current.state.is_terminal:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscription.wake.wait(), timeout=max(0.0, deadline - time.monotonic()))
        finally:
            self._bus.unsubscribe(subscription)
        return await self.get_execution(execution_id)


def _required_inputs(workflow: Workflow) -> set[str]:
    names = set()
    for node in workflow.spec.nodes:
        for _, text in refs.find(node.inputs):
            ref = refs.parse(text)
            if ref.scope == "inputs":
                names.add(ref.name)
    for text in workflow.spec.outputs.values():
        ref = refs.parse(text)
        if ref.scope == "inputs":
            names.add(ref.name)
    return names


def _pending_nodes(workflow: Workflow, stored: tuple[NodeRun, ...]) -> tuple[NodeRun, ...]:
    by_id = {run.node_id: run for run in stored}
    return tuple(by_id.get(node.id) or NodeRun(node_id=node.id) for node in workflow.spec.nodes)


def _only(batches: AsyncIterator[list[Event]], types: frozenset[EventType]) -> AsyncIterator[list[Event]]:
    """``batches`` with only events of ``types`` and always the one that ends the execution (batches left
    empty are dropped); ``batches`` itself when ``types`` is empty (no extra generator)."""
    return _filtered(batches, types) if types else batches


async def _filtered(batches: AsyncIterator[list[Event]], types: frozenset[EventType]) -> AsyncIterator[list[Event]]:
    async for batch in batches:
        kept = [event for event in batch if event.type in types or event.type.ends_execution]
        if kept:
            yield kept
