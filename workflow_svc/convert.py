"""Proto <-> domain for the workflow API and the registry calls, and page tokens.

google.protobuf.Struct has only doubles: numbers that are whole (and exactly representable) come back
as Python ints, so an agent given ``{"count": 3}`` sees ``3``, not ``3.0``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format
from tdev.registry.v1 import agent_pb2 as registry_agent_pb2
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_pb2_grpc
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2

from tdev_common import idempotency, paging
from tdev_common.clock import from_epoch, to_epoch, to_timestamp
from tdev_common.enums import from_proto, optional_from_proto, to_proto
from tdev_common.errors import invalid_field
from tdev_common.paging import Page
from tdev_common.protojson import dict_to_struct, struct_to_dict
from workflow_svc.domain import (
    AgentInfo,
    AgentRef,
    AliasTarget,
    CapturePolicy,
    ErrorInfo,
    Event,
    EventType,
    Execution,
    ExecutionFilter,
    ExecutionPlan,
    ExecutionState,
    FailurePolicy,
    JsonObject,
    NodeRun,
    NodeSpec,
    OutcomeRecord,
    RetryPolicy,
    StartRequest,
    Workflow,
    WorkflowSpec,
)
from workflow_svc.ports import Cursor

_EXECUTION_STATE = wf_pb2.Execution.State
_NODE_STATE = wf_pb2.NodeRun.State
_EVENT_TYPE = wf_pb2.ExecutionEvent.Type


def _failure_policy(number: int, field: str) -> FailurePolicy:
    return from_proto(number, FailurePolicy, wf_pb2.FailurePolicy, "FAILURE_POLICY_", field=field)


# -- workflows --------------------------------------------------------------------------------------------
def node_from_proto(node: wf_pb2.Node) -> NodeSpec:
    """One node of a definition."""
    policy = node.retry_policy
    return NodeSpec(
        id=node.id,
        agent_id=node.agent_id,
        agent_version=node.agent_version,
        inputs=struct_to_dict(node.inputs),
        depends_on=tuple(node.depends_on),
        retry_policy=RetryPolicy(
            max_retries=policy.max_retries,
            backoff_multiplier=policy.backoff_multiplier,
            initial_backoff=policy.initial_backoff,
            max_backoff=policy.max_backoff,
        ),
        timeout_seconds=node.timeout_seconds,
        required_resources=struct_to_dict(node.required_resources),
        agent_alias=node.agent_alias,
    )


def spec_from_proto(workflow: wf_pb2.Workflow) -> WorkflowSpec:
    """A caller's definition (server-set fields are ignored)."""
    return WorkflowSpec(
        name=workflow.name,
        version=workflow.version,
        description=workflow.description,
        nodes=tuple(node_from_proto(node) for node in workflow.nodes),
        metadata=struct_to_dict(workflow.metadata),
        failure_policy=_failure_policy(workflow.failure_policy, "workflow.failure_policy"),
        max_concurrency=workflow.max_concurrency,
        outputs=dict(workflow.outputs),
        capture=CapturePolicy(
            enabled=workflow.capture.enabled, success_sample_rate=workflow.capture.success_sample_rate,
            max_case_bytes=workflow.capture.max_case_bytes, redact_keys=tuple(workflow.capture.redact_keys)),
    )


def plan_to_proto(plan: ExecutionPlan) -> wf_pb2.ExecutionPlan:
    """The plan message."""
    return wf_pb2.ExecutionPlan(
        generations=[wf_pb2.PlanGeneration(node_ids=list(g.node_ids)) for g in plan.generations],
        critical_path=list(plan.critical_path),
        priorities=plan.priorities,
    )


def workflow_to_proto(workflow: Workflow) -> wf_pb2.Workflow:
    """A stored (or validated) workflow with its plan."""
    spec = workflow.spec
    return wf_pb2.Workflow(
        workflow_id=workflow.workflow_id,
        name=spec.name,
        version=spec.version,
        description=spec.description,
        nodes=[
            wf_pb2.Node(
                id=node.id,
                agent_id=node.agent_id,
                agent_version=node.agent_version,
                inputs=dict_to_struct(node.inputs),
                depends_on=list(node.depends_on),
                retry_policy=wf_pb2.RetryPolicy(
                    max_retries=node.retry_policy.max_retries,
                    backoff_multiplier=node.retry_policy.backoff_multiplier,
                    initial_backoff=node.retry_policy.initial_backoff,
                    max_backoff=node.retry_policy.max_backoff,
                ),
                timeout_seconds=node.timeout_seconds,
                required_resources=dict_to_struct(node.required_resources),
                agent_name=node.agent_name,
                agent_alias=node.agent_alias,
            )
            for node in spec.nodes
        ],
        metadata=dict_to_struct(spec.metadata),
        failure_policy=to_proto(spec.failure_policy, wf_pb2.FailurePolicy, "FAILURE_POLICY_"),
        max_concurrency=spec.max_concurrency,
        outputs=spec.outputs,
        capture=wf_pb2.CapturePolicy(
            enabled=spec.capture.enabled, success_sample_rate=spec.capture.success_sample_rate,
            max_case_bytes=spec.capture.max_case_bytes, redact_keys=list(spec.capture.redact_keys)),
        plan=plan_to_proto(workflow.plan),
        create_time=to_timestamp(workflow.create_time),
        update_time=to_timestamp(workflow.update_time),
    )


def workflow_from_json(text: str) -> wf_pb2.Workflow:
    """Parses a definition file through protobuf's JSON mapping.

    Raises:
        InvalidArgument: the text is not a valid Workflow JSON document.
    """
    try:
        return json_format.Parse(text, wf_pb2.Workflow())
    except json_format.ParseError as error:
        raise invalid_field("workflow", f"not a workflow definition: {error}", reason="INVALID_DEFINITION") from error


def page_of(request: pb2.ListWorkflowsRequest | pb2.ListExecutionsRequest) -> tuple[int, Cursor | None]:
    """The page size and the (create time, id) position a List request asks for.

    Raises:
        InvalidArgument: a negative page size, or a token not issued for this query.
    """
    after = paging.decode_token(request, _is_position)
    # The token's position is the stored epoch double, as before; the domain cursor holds a datetime.
    cursor = (from_epoch(float(after[0])), str(after[1])) if after is not None else None
    return paging.page_size(request.page_size), cursor


def _is_position(after: Any) -> bool:
    # A keyset position whose time a datetime can hold (a forged one far out of range is malformed).
    if not paging.is_keyset(after):
        return False
    try:
        from_epoch(float(after[0]))
    except (ValueError, OverflowError, OSError):
        return False
    return True


def _position(after: Cursor | None) -> list[Any] | None:
    return None if after is None else [to_epoch(after[0]), after[1]]


def workflows_response(request: pb2.ListWorkflowsRequest, page: Page[Workflow]) -> pb2.ListWorkflowsResponse:
    """ListWorkflows' answer, its next page token bound to the request's filters."""
    return pb2.ListWorkflowsResponse(
        workflows=[workflow_to_proto(w) for w in page.items],
        next_page_token=paging.encode_token(request, _position(page.after)),
    )


# -- executions -------------------------------------------------------------------------------------------
def start_request(message: pb2.StartExecutionRequest | pb2.ExecuteWorkflowRequest) -> StartRequest:
    """StartExecution / ExecuteWorkflow arguments."""
    return StartRequest(
        workflow_id=message.workflow_id,
        inputs=struct_to_dict(message.inputs),
        request_id=message.request_id,
        failure_policy=_failure_policy(message.failure_policy, "failure_policy"),
        # Both request types share one field layout, so a request id replays through either of them; which
        # events ExecuteWorkflow streams is not part of what was asked for.
        fingerprint=idempotency.fingerprint(message, ignore=("event_types",)),
    )


def event_types(values: Sequence[int]) -> frozenset[EventType]:
    """The event types a stream is limited to (empty: every type).

    Raises:
        InvalidArgument: an unknown or unspecified type (named by index).
    """
    chosen = set()
    for index, number in enumerate(values):
        field = f"event_types[{index}]"
        member = optional_from_proto(number, EventType, _EVENT_TYPE, "TYPE_", field=field)
        if member is None or member is EventType.UNSPECIFIED:
            raise invalid_field(field, "TYPE_UNSPECIFIED is not an event type")
        chosen.add(member)
    return frozenset(chosen)


def execution_filter(message: pb2.ListExecutionsRequest) -> ExecutionFilter:
    """ListExecutions filters."""
    state = from_proto(message.state, ExecutionState, _EXECUTION_STATE, "STATE_", field="state")
    return ExecutionFilter(workflow_id=message.workflow_id, state=state)


def _error(error: ErrorInfo | None) -> wf_pb2.ErrorDetail | None:
    if error is None:
        return None
    return wf_pb2.ErrorDetail(
        type=error.type, message=error.message, traceback=error.traceback, node_id=error.node_id
    )


def node_run_to_proto(run: NodeRun) -> wf_pb2.NodeRun:
    """One node's state (outputs in full; output_ref also names large ones)."""
    return wf_pb2.NodeRun(
        node_id=run.node_id,
        state=to_proto(run.state, _NODE_STATE, "STATE_"),
        attempt=run.attempt,
        output=dict_to_struct(run.output) if run.output is not None else None,
        output_ref=run.output_ref,
        error=_error(run.error),
        start_time=to_timestamp(run.start_time),
        end_time=to_timestamp(run.end_time),
        duration_ms=run.duration_ms,
        agent_version=run.agent_version,
    )


def execution_to_proto(execution: Execution) -> wf_pb2.Execution:
    """An execution with its node runs."""
    return wf_pb2.Execution(
        execution_id=execution.execution_id,
        workflow_id=execution.workflow_id,
        state=to_proto(execution.state, _EXECUTION_STATE, "STATE_"),
        inputs=dict_to_struct(execution.inputs),
        outputs=dict_to_struct(execution.outputs) if execution.outputs is not None else None,
        nodes=[node_run_to_proto(run) for run in execution.nodes],
        error=_error(execution.error),
        last_sequence=execution.last_sequence,
        create_time=to_timestamp(execution.create_time),
        update_time=to_timestamp(execution.update_time),
        start_time=to_timestamp(execution.start_time),
        end_time=to_timestamp(execution.end_time),
        failure_policy=to_proto(execution.failure_policy, wf_pb2.FailurePolicy, "FAILURE_POLICY_"),
    )


def executions_response(request: pb2.ListExecutionsRequest, page: Page[Execution]) -> pb2.ListExecutionsResponse:
    """ListExecutions' answer, its next page token bound to the request's filters."""
    return pb2.ListExecutionsResponse(
        executions=[execution_to_proto(e) for e in page.items],
        next_page_token=paging.encode_token(request, _position(page.after)),
    )


R = TypeVar("R")

# Bounds of one batched response (ExecuteWorkflowRequest.batch_events): well inside the message size limit
# even when every event carries an output inline (at most inline_output_bytes each).
BATCH_MAX_EVENTS = 500
BATCH_MAX_BYTES = 1 << 20


async def event_responses(batches: AsyncIterator[list[Event]], response: Callable[..., R], *,
                          batched: bool) -> AsyncIterator[R]:
    """A stream's responses: with ``batched`` (the request's batch_events) several events each in ``events``,
    else one each in ``event``."""
    if batched:
        async for events in event_messages(batches):
            yield response(events=events)
        return
    async for batch in batches:
        for event in batch:
            yield response(event=event_to_proto(event))


async def event_messages(batches: AsyncIterator[list[Event]]) -> AsyncIterator[list[wf_pb2.ExecutionEvent]]:
    """The messages of each batch of events, cut where one response would pass the batch bounds."""
    async for batch in batches:
        messages: list[wf_pb2.ExecutionEvent] = []
        size = 0
        for event in batch:
            message = event_to_proto(event)
            grows = message.ByteSize()
            if messages and (len(messages) >= BATCH_MAX_EVENTS or size + grows > BATCH_MAX_BYTES):
                yield messages
                messages, size = [], 0
            messages.append(message)
            size += grows
        if messages:
            yield messages


def event_to_proto(event: Event) -> wf_pb2.ExecutionEvent:
    """One event."""
    return wf_pb2.ExecutionEvent(
        sequence=event.sequence,
        execution_id=event.execution_id,
        type=to_proto(event.type, _EVENT_TYPE, "TYPE_"),
        time=to_timestamp(event.time),
        node_id=event.node_id,
        attempt=event.attempt,
        duration_ms=event.duration_ms,
        output=dict_to_struct(event.output) if event.output is not None else None,
        output_ref=event.output_ref,
        error=_error(event.error),
        backoff_seconds=event.backoff_seconds,
        message=event.message,
        worker_id=event.worker_id,
    )


# -- the registry -----------------------------------------------------------------------------------------
def registry_stub(channel: Any) -> registry_pb2_grpc.RegistryServiceStub:
    """The registry's generated client on ``channel``."""
    return registry_pb2_grpc.RegistryServiceStub(channel)


def get_agent_requests(ref: AgentRef, *, with_code: bool) -> list[registry_pb2.GetAgentRequest]:
    """GetAgent by id, then by name (or the other way round when it does not look like an id)."""
    by_id = registry_pb2.GetAgentRequest(agent_id=ref.agent, version=ref.version, exclude_code=not with_code)
    by_name = registry_pb2.GetAgentRequest(name=ref.agent, version=ref.version, exclude_code=not with_code)
    return [by_id, by_name] if ref.agent.startswith("agent_") else [by_name, by_id]


def agent_info(message: registry_agent_pb2.Agent) -> AgentInfo:
    """What the workflow service keeps of a registry agent."""
    return AgentInfo(
        agent_id=message.agent_id,
        name=message.name,
        version=message.version,
        code=message.code,
        class_name=message.class_name,
        average_duration_ms=message.metrics.average_duration_ms,
        reuses_warm_process=message.reuses_warm_process,
    )


def record_request(records: Sequence[OutcomeRecord]) -> registry_pb2.RecordExecutionsRequest:
    """RecordExecutions for a batch of node outcomes."""
    return registry_pb2.RecordExecutionsRequest(
        records=[
            registry_agent_pb2.ExecutionRecord(
                execution_id=record.record_id,
                agent_id=record.agent_id,
                version=record.version,
                success=record.success,
                duration_ms=record.duration_ms,
                finish_time=to_timestamp(record.finish_time),
                error_type=record.error_type,
                captured_case=_captured_case(record.case) if record.case is not None else None,
            )
            for record in records
        ]
    )


def _captured_case(case: JsonObject) -> registry_agent_pb2.CapturedCase:
    message = registry_agent_pb2.CapturedCase(inputs=dict_to_struct(case.get("inputs") or {}),
                                              error_message=case.get("error_message", ""),
                                              source=case.get("source", ""))
    if case.get("output") is not None:
        message.output.CopyFrom(dict_to_struct(case["output"]))
    return message


def aliases_request(agent_id: str) -> registry_pb2.ListAgentAliasesRequest:
    """ListAgentAliases for one agent."""
    return registry_pb2.ListAgentAliasesRequest(agent_id=agent_id)


def alias_targets(response: registry_pb2.ListAgentAliasesResponse) -> dict[str, AliasTarget]:
    """An agent's aliases by name."""
    return {a.alias: AliasTarget(a.version, a.traffic_fraction) for a in response.aliases}
