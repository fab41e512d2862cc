"""Proto <-> domain conversion and page tokens; with servicer.py, the only module importing pb2."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2

from registry_svc.aliases import AliasView
from registry_svc.domain import (
    AgentAlias,
    AgentCase,
    AgentVersion,
    Analysis,
    AnalysisState,
    CapturedCase,
    CaseFilter,
    ExecutionRecord,
    LabelUpdate,
    Lineage,
    ListQuery,
    Metrics,
    OrderBy,
    RecordResult,
    RegisterCommand,
    Registration,
    RolloutPolicy,
    SearchHit,
    Selector,
    VersionRef,
    VersionStats,
)
from tdev_common import idempotency, paging
from tdev_common.clock import from_timestamp, to_timestamp
from tdev_common.enums import from_proto, optional_from_proto, to_proto
from tdev_common.paging import Page
from tdev_common.protojson import struct_to_dict

_STATE = agent_pb2.AgentAnalysis.State
_ORDER = pb2.ListAgentsRequest.OrderBy

# ---- domain -> proto --------------------------------------------------------------------------------


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if value:
        struct.update(dict(value))
    return struct


def version_ref(ref: VersionRef) -> agent_pb2.AgentVersionRef:
    """A reference as proto."""
    return agent_pb2.AgentVersionRef(agent_id=ref.agent_id, version=ref.version)


def analysis(value: Analysis) -> agent_pb2.AgentAnalysis:
    """An analysis as proto."""
    return agent_pb2.AgentAnalysis(
        state=to_proto(value.state, _STATE, "STATE_"), capabilities=_struct(value.capabilities),
        quality_score=value.quality_score or 0.0, static_metrics=_struct(value.static_metrics),
        models_used=list(value.models_used), analysis_time=to_timestamp(value.analysis_time),
        duration_ms=value.duration_ms, error=value.error,
    )


def metrics(value: Metrics) -> agent_pb2.AgentMetrics:
    """Metrics as proto."""
    return agent_pb2.AgentMetrics(
        execution_count=value.execution_count, success_count=value.success_count,
        failure_count=value.failure_count, average_duration_ms=value.average_duration_ms,
        p95_duration_ms=value.p95_duration_ms, total_tokens=value.total_tokens,
        total_cost_usd=value.total_cost_usd, success_rate=value.success_rate,
    )


def agent(value: AgentVersion) -> agent_pb2.Agent:
    """An agent version as proto (code empty when the domain object has none)."""
    return agent_pb2.Agent(
        agent_id=value.agent_id, name=value.name, version=value.version, description=value.description,
        code=value.code or "", code_hash=value.code_hash, class_name=value.class_name,
        declared_capabilities=_struct(value.declared_capabilities), execute_is_async=value.execute_is_async,
        parents=[version_ref(p) for p in value.parents], labels=dict(value.labels),
        analysis=analysis(value.analysis), metrics=metrics(value.metrics),
        create_time=to_timestamp(value.create_time), update_time=to_timestamp(value.update_time),
        code_size_bytes=value.code_size_bytes, reuses_warm_process=value.reuses_warm_process,
    )


# ---- RegisterAgent ----------------------------------------------------------------------------------


def register_command(request: pb2.RegisterAgentRequest) -> RegisterCommand:
    """RegisterAgentRequest -> command."""
    return RegisterCommand(
        name=request.name, code=request.code, description=request.description,
        parents=tuple(VersionRef(p.agent_id, p.version) for p in request.parents),
        version=request.version, request_id=request.request_id, labels=dict(request.labels),
        fingerprint=idempotency.fingerprint(request),
    )


def register_response(value: Registration) -> pb2.RegisterAgentResponse:
    """Registration -> RegisterAgentResponse."""
    return pb2.RegisterAgentResponse(agent=agent(value.agent), created=value.created)


# ---- UpdateAgentLabels ------------------------------------------------------------------------------


def label_update(request: pb2.UpdateAgentLabelsRequest) -> LabelUpdate:
    """UpdateAgentLabelsRequest -> change."""
    return LabelUpdate(ref=VersionRef(request.agent_id, request.version), set_labels=dict(request.set_labels),
                       remove_labels=tuple(request.remove_labels), request_id=request.request_id)


def update_labels_response(value: AgentVersion) -> pb2.UpdateAgentLabelsResponse:
    """AgentVersion -> UpdateAgentLabelsResponse."""
    return pb2.UpdateAgentLabelsResponse(agent=agent(value))


# ---- GetAgent ---------------------------------------------------------------------------------------


def get_agent_key(request: pb2.GetAgentRequest) -> tuple[str, str, str, bool]:
    """The response-cache key of a GetAgent request."""
    return request.agent_id, request.name, request.version, request.exclude_code


def selector(request: pb2.GetAgentRequest | pb2.ListAgentVersionsRequest) -> Selector:
    """The agent a request names (version only for GetAgent)."""
    version = request.version if isinstance(request, pb2.GetAgentRequest) else ""
    return Selector(agent_id=request.agent_id, name=request.name, version=version)


def get_agent_response(value: AgentVersion) -> pb2.GetAgentResponse:
    """AgentVersion -> GetAgentResponse."""
    return pb2.GetAgentResponse(agent=agent(value))


# ---- ListAgents / ListAgentVersions -----------------------------------------------------------------


def list_query(request: pb2.ListAgentsRequest) -> ListQuery:
    """ListAgentsRequest -> query, decoding and checking the page token.

    Raises:
        InvalidArgument: a bad page token, analysis state or order.
    """
    after = paging.decode_token(
        request, lambda value: isinstance(value, list) and len(value) == 2 and isinstance(value[1], str))
    state = optional_from_proto(request.analysis_state, AnalysisState, _STATE, "STATE_", field="analysis_state")
    # The proto has no ORDER_BY_UPDATED: UNSPECIFIED is the documented default order, most recently updated first.
    order = from_proto(request.order_by, OrderBy, _ORDER, "ORDER_BY_", field="order_by", default=OrderBy.UPDATED)
    return ListQuery(
        name_contains=request.name_contains, capability=request.capability,
        state=state, min_quality=request.min_quality_score,
        order=order, page_size=request.page_size,
        after=(after[0], after[1]) if after is not None else None, include_code=not request.exclude_code,
    )


def list_response(request: pb2.ListAgentsRequest, page: Page[AgentVersion]) -> pb2.ListAgentsResponse:
    """A page -> ListAgentsResponse with a token bound to the request's filters."""
    return pb2.ListAgentsResponse(agents=[agent(a) for a in page.items],
                                  next_page_token=paging.encode_token(request, page.after))


def versions_after(request: pb2.ListAgentVersionsRequest) -> int | None:
    """The position a ListAgentVersions token encodes.

    Raises:
        InvalidArgument: a bad token.
    """
    after: int | None = paging.decode_token(request, lambda value: isinstance(value, int))
    return after


def versions_response(request: pb2.ListAgentVersionsRequest,
                      page: Page[AgentVersion]) -> pb2.ListAgentVersionsResponse:
    """A page of versions -> ListAgentVersionsResponse."""
    return pb2.ListAgentVersionsResponse(versions=[agent(a) for a in page.items],
                                         next_page_token=paging.encode_token(request, page.after))


# ---- lineage, search, executions --------------------------------------------------------------------


def lineage_response(value: Lineage) -> pb2.GetAgentLineageResponse:
    """Lineage -> GetAgentLineageResponse."""
    return pb2.GetAgentLineageResponse(
        root=version_ref(value.root),
        edges=[agent_pb2.LineageEdge(child=version_ref(e.child), parent=version_ref(e.parent))
               for e in value.edges],
        agents=[agent(a) for a in value.agents],
    )


def search_response(hits: list[SearchHit]) -> pb2.SearchAgentsResponse:
    """Hits -> SearchAgentsResponse."""
    return pb2.SearchAgentsResponse(results=[
        agent_pb2.SearchResult(agent=agent(h.agent), score=h.score, text_score=h.text_score,
                               reasons=list(h.reasons), matcher=h.matcher) for h in hits])


def execution_records(request: pb2.RecordExecutionsRequest) -> list[ExecutionRecord]:
    """RecordExecutionsRequest -> records."""
    return [
        ExecutionRecord(
            execution_id=r.execution_id, agent_id=r.agent_id, version=r.version, success=r.success,
            duration_ms=r.duration_ms, tokens=r.tokens, cost_usd=r.cost_usd,
            finish_time=from_timestamp(r.finish_time) if r.HasField("finish_time") else None,
            error_type=r.error_type,
            case=_captured_case(r.captured_case) if r.HasField("captured_case") else None,
        )
        for r in request.records
    ]


def _captured_case(value: agent_pb2.CapturedCase) -> CapturedCase:
    return CapturedCase(inputs=struct_to_dict(value.inputs),
                        output=struct_to_dict(value.output) if value.HasField("output") else None,
                        error_message=value.error_message, source=value.source)


# ---- production cases -------------------------------------------------------------------------------


def agent_case(value: AgentCase) -> agent_pb2.AgentCase:
    """A stored case as proto."""
    message = agent_pb2.AgentCase(
        case_id=value.case_id, agent_id=value.agent_id, version=value.version, execution_id=value.execution_id,
        success=value.success, inputs=_struct(value.inputs), error_type=value.error_type,
        error_message=value.error_message, source=value.source, labelled=value.labelled,
        create_time=to_timestamp(value.create_time), label_time=to_timestamp(value.label_time))
    if value.output is not None:
        message.output.CopyFrom(_struct(value.output))
    if value.expected is not None:
        message.expected.CopyFrom(_struct(value.expected))
    return message


def cases_query(request: pb2.ListAgentCasesRequest) -> tuple[CaseFilter, list[Any] | None]:
    """The filter and keyset position of a ListAgentCases request.

    Raises:
        InvalidArgument: an unknown filter or a bad token.
    """
    return CaseFilter(request.filter), paging.decode_token(request, paging.is_keyset)


def cases_response(request: pb2.ListAgentCasesRequest, page: Page[AgentCase]) -> pb2.ListAgentCasesResponse:
    """A page of cases -> ListAgentCasesResponse."""
    return pb2.ListAgentCasesResponse(cases=[agent_case(c) for c in page.items],
                                      next_page_token=paging.encode_token(request, page.after))


def label_expected(request: pb2.LabelAgentCaseRequest) -> dict[str, Any] | None:
    """The expected output of a LabelAgentCase request (None: not given)."""
    return struct_to_dict(request.expected) if request.HasField("expected") else None


def record_response(value: RecordResult) -> pb2.RecordExecutionsResponse:
    """RecordResult -> RecordExecutionsResponse."""
    return pb2.RecordExecutionsResponse(accepted_count=value.accepted, duplicate_count=value.duplicates)


def parse_get_agent_response(data: bytes) -> pb2.GetAgentResponse:
    """Bytes from the shared cache -> GetAgentResponse."""
    return pb2.GetAgentResponse.FromString(data)


def serialize(message: Any) -> bytes:
    """Any message -> bytes for the shared cache."""
    return bytes(message.SerializeToString())



# ---- aliases ----------------------------------------------------------------------------------------


def rollout_policy(request: pb2.SetAgentAliasRequest) -> RolloutPolicy | None:
    """The rollout policy of a SetAgentAlias request (None: not given)."""
    if not request.HasField("rollout"):
        return None
    given = request.rollout
    return RolloutPolicy(given.min_sample, given.max_success_rate_drop, given.max_latency_ratio,
                         given.min_latency_increase_ms)


def agent_alias(value: AgentAlias) -> agent_pb2.AgentAlias:
    """An alias as proto."""
    message = agent_pb2.AgentAlias(agent_id=value.agent_id, alias=value.alias, version=value.version,
                                   traffic_fraction=value.traffic_fraction, update_time=to_timestamp(value.update_time))
    if value.rollout is not None:
        message.rollout.CopyFrom(agent_pb2.RolloutPolicy(
            min_sample=value.rollout.min_sample, max_success_rate_drop=value.rollout.max_success_rate_drop,
            max_latency_ratio=value.rollout.max_latency_ratio,
            min_latency_increase_ms=value.rollout.min_latency_increase_ms))
    return message


def stats_since(request: pb2.GetAgentExecutionStatsRequest) -> datetime | None:
    """The start of GetAgentExecutionStats' window; None counts every execution."""
    return from_timestamp(request.start_time) if request.HasField("start_time") else None


def execution_stats_response(stats: VersionStats) -> pb2.GetAgentExecutionStatsResponse:
    """GetAgentExecutionStats' answer."""
    return pb2.GetAgentExecutionStatsResponse(stats=_stats(stats))


def _stats(value: VersionStats) -> agent_pb2.VersionStats:
    return agent_pb2.VersionStats(version=value.version, executions=value.executions,
                                  success_rate=value.success_rate, median_duration_ms=value.median_duration_ms)


def aliases_response(view: AliasView) -> pb2.ListAgentAliasesResponse:
    """An agent's aliases, events and rollout numbers -> ListAgentAliasesResponse."""
    response = pb2.ListAgentAliasesResponse(
        aliases=[agent_alias(a) for a in view.aliases],
        events=[agent_pb2.AliasEvent(agent_id=e.agent_id, alias=e.alias,
                                     kind=to_proto(e.kind, agent_pb2.AliasEvent.Kind, "KIND_"),
                                     version=e.version, message=e.message, time=to_timestamp(e.time))
                for e in view.events])
    if view.stable is not None and view.canary is not None:
        response.rollout.CopyFrom(agent_pb2.RolloutStatus(stable=_stats(view.stable), canary=_stats(view.canary)))
    return response
