"""Proto <-> domain for the evolution API and the registry calls; the only module besides the servicer and
the registry client that touches generated code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any

from tdev.evolution.v1 import evolution_pb2 as evo_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import policy_pb2
from tdev.registry.v1 import agent_pb2 as registry_agent_pb2
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_pb2_grpc

from evolution_svc.domain import (
    AgentSource,
    Candidate,
    CandidateQuery,
    CaseCheck,
    ConfigOverrides,
    EvaluationCase,
    EvaluationSuite,
    Event,
    EvolutionConfig,
    EvolutionRun,
    GenerationReport,
    ListQuery,
    OperatorSet,
    Promotion,
    RunState,
    ScoringMode,
    Selection,
    StartRequest,
)
from evolution_svc.policies import EvolutionPolicy, PolicyBudget, PolicyTrigger, next_reset
from evolution_svc.ports import AliasState, RolloutOutcome
from evolution_svc.production_suite import ProductionCase
from tdev_common import idempotency, paging
from tdev_common.clock import from_timestamp, to_timestamp
from tdev_common.enums import from_proto, optional_from_proto, to_proto
from tdev_common.paging import Page
from tdev_common.protojson import dict_to_struct, struct_to_dict

_RUN_STATE = evo_pb2.EvolutionRun.State
_EVENT_TYPE = evo_pb2.EvolutionEvent.Type


# -- requests ---------------------------------------------------------------------------------------------
def suite_from_proto(message: evo_pb2.EvaluationSuite) -> EvaluationSuite:
    """The suite as sent (validated later by the service)."""
    # Unset means exact comparison, the documented default.
    scoring_mode = from_proto(message.scoring_mode, ScoringMode, evo_pb2.ScoringMode, "SCORING_MODE_",
                              field="suite.scoring_mode", default=ScoringMode.EXACT)
    return EvaluationSuite(
        cases=tuple(
            EvaluationCase(
                name=case.name,
                inputs=struct_to_dict(case.inputs),
                expected=struct_to_dict(case.expected) if case.HasField("expected") else None,
                held_out=case.held_out,
                weight=case.weight,
                check=from_proto(case.check, CaseCheck, evo_pb2.CaseCheck, "CASE_CHECK_",
                                 field=f"suite.cases[{index}].check", default=CaseCheck.EXPECTED),
                output_schema=struct_to_dict(case.output_schema) if case.HasField("output_schema") else None,
            )
            for index, case in enumerate(message.cases)
        ),
        scoring_mode=scoring_mode,
        tolerance=message.tolerance,
        scorer_agent_id=message.scorer_agent_id,
        scorer_agent_version=message.scorer_agent_version,
        held_out_fraction=message.held_out_fraction,
    )


def overrides_from_proto(message: evo_pb2.EvolutionConfig) -> ConfigOverrides:
    """The fields the caller set (``optional`` presence), the rest None."""
    given: dict[str, Any] = {}
    for item in fields(ConfigOverrides):
        if item.name in ("operators", "selection"):
            continue
        if message.HasField(item.name):
            given[item.name] = getattr(message, item.name)
    operators = from_proto(message.operators, OperatorSet, evo_pb2.OperatorSet, "OPERATOR_SET_",
                           field="config.operators")
    selection = from_proto(message.selection, Selection, evo_pb2.Selection, "SELECTION_", field="config.selection")
    return ConfigOverrides(**given, operators=operators, selection=selection)


def start_request(message: pb2.StartEvolutionRequest) -> StartRequest:
    """StartEvolution's arguments."""
    return StartRequest(
        agent=message.agent_id,
        agent_version=message.agent_version,
        suite=suite_from_proto(message.suite),
        overrides=overrides_from_proto(message.config),
        request_id=message.request_id,
        fingerprint=idempotency.fingerprint(message),
    )


def list_query(message: pb2.ListEvolutionsRequest) -> ListQuery:
    """ListEvolutions' filters and paging.

    Raises:
        InvalidArgument: a negative page size, an unknown state, or a token not issued for this query.
    """
    size = paging.page_size(message.page_size)
    state = optional_from_proto(message.state, RunState, _RUN_STATE, "STATE_", field="state")
    after = paging.decode_token(message, lambda value: isinstance(value, list) and len(value) == 2
                                and all(isinstance(part, str) for part in value))
    return ListQuery(page_size=size, after=(after[0], after[1]) if after is not None else None,
                     agent_id=message.agent_id, state=state)


def candidate_query(message: pb2.ListCandidatesRequest) -> CandidateQuery:
    """ListCandidates' run and paging.

    Raises:
        InvalidArgument: a negative page size, or a token not issued for this run and exclude_code.
    """
    size = paging.page_size(message.page_size)
    after = paging.decode_token(message, lambda value: isinstance(value, list) and len(value) == 2
                                and isinstance(value[0], int) and not isinstance(value[0], bool)
                                and isinstance(value[1], str))
    return CandidateQuery(run_id=message.run_id, page_size=size,
                          after=(after[0], after[1]) if after is not None else None,
                          include_code=not message.exclude_code)


# -- responses --------------------------------------------------------------------------------------------
def suite_to_proto(suite: EvaluationSuite) -> evo_pb2.EvaluationSuite:
    """The suite as stored (held-out marks after the split)."""
    return evo_pb2.EvaluationSuite(
        cases=[
            evo_pb2.EvaluationCase(
                name=case.name,
                inputs=dict_to_struct(case.inputs),
                expected=dict_to_struct(case.expected),
                held_out=case.held_out,
                weight=case.weight,
                check=to_proto(case.check, evo_pb2.CaseCheck, "CASE_CHECK_")
                if case.check is not CaseCheck.EXPECTED else evo_pb2.CASE_CHECK_UNSPECIFIED,
                output_schema=dict_to_struct(case.output_schema) if case.output_schema else None,
            )
            for case in suite.cases
        ],
        scoring_mode=to_proto(suite.scoring_mode, evo_pb2.ScoringMode, "SCORING_MODE_"),
        tolerance=suite.tolerance,
        scorer_agent_id=suite.scorer_agent_id,
        scorer_agent_version=suite.scorer_agent_version,
        held_out_fraction=suite.held_out_fraction,
    )


def config_to_proto(config: EvolutionConfig) -> evo_pb2.EvolutionConfig:
    """The effective configuration, every field set."""
    enums = ("operators", "selection")
    values = {item.name: getattr(config, item.name) for item in fields(EvolutionConfig) if item.name not in enums}
    return evo_pb2.EvolutionConfig(
        **values,
        operators=to_proto(config.operators, evo_pb2.OperatorSet, "OPERATOR_SET_"),
        selection=to_proto(config.selection, evo_pb2.Selection, "SELECTION_"),
    )


def candidate_to_proto(candidate: Candidate) -> evo_pb2.Candidate:
    """A candidate (its code may be empty when the caller asked without code)."""
    return evo_pb2.Candidate(
        code_hash=candidate.code_hash,
        code=candidate.code,
        fitness=candidate.fitness,
        correctness=candidate.correctness,
        mean_duration_ms=candidate.mean_duration_ms,
        size=candidate.size,
        generation=candidate.generation,
        operator=candidate.operator,
        failure=candidate.failure,
        parent_hashes=list(candidate.parent_hashes),
    )


def report_to_proto(report: GenerationReport) -> evo_pb2.GenerationReport:
    """A generation report."""
    values = {
        item.name: getattr(report, item.name) for item in fields(GenerationReport) if item.name != "operator_stats"
    }
    stats = [evo_pb2.OperatorStat(**{item.name: getattr(stat, item.name) for item in fields(stat)})
             for stat in report.operator_stats]
    return evo_pb2.GenerationReport(**values, operator_stats=stats)


def promotion_to_proto(promotion: Promotion) -> evo_pb2.Promotion:
    """A promotion decision."""
    return evo_pb2.Promotion(**{item.name: getattr(promotion, item.name) for item in fields(Promotion)})


def run_to_proto(run: EvolutionRun, *, with_reports: bool = True) -> evo_pb2.EvolutionRun:
    """A run; list pages leave the reports out."""
    message = evo_pb2.EvolutionRun(
        run_id=run.run_id,
        agent_id=run.agent_id,
        agent_version=run.agent_version,
        suite=suite_to_proto(run.suite),
        config=config_to_proto(run.config),
        state=to_proto(run.state, _RUN_STATE, "STATE_"),
        stop_reason=to_proto(run.stop_reason, evo_pb2.StopReason, "STOP_REASON_"),
        stop_message=run.stop_message,
        generations=[report_to_proto(report) for report in run.generations] if with_reports else [],
        seed_fitness=run.seed_fitness,
        error=run.error,
        last_sequence=run.last_sequence,
        create_time=to_timestamp(run.create_time),
        update_time=to_timestamp(run.update_time),
        automatic=run.automatic,
        start_reason=run.start_reason,
    )
    if run.best is not None:
        message.best.CopyFrom(candidate_to_proto(run.best))
    if run.promotion is not None:
        message.promotion.CopyFrom(promotion_to_proto(run.promotion))
    return message


def runs_response(request: pb2.ListEvolutionsRequest, page: Page[EvolutionRun]) -> pb2.ListEvolutionsResponse:
    """One page of ListEvolutions."""
    return pb2.ListEvolutionsResponse(
        runs=[run_to_proto(run, with_reports=False) for run in page.items],
        next_page_token=paging.encode_token(request, page.after),
    )


def candidates_response(request: pb2.ListCandidatesRequest, page: Page[Candidate]) -> pb2.ListCandidatesResponse:
    """One page of ListCandidates."""
    return pb2.ListCandidatesResponse(
        candidates=[candidate_to_proto(candidate) for candidate in page.items],
        next_page_token=paging.encode_token(request, page.after),
    )


def event_to_proto(event: Event) -> evo_pb2.EvolutionEvent:
    """One stored event."""
    message = evo_pb2.EvolutionEvent(
        sequence=event.sequence,
        run_id=event.run_id,
        type=to_proto(event.type, _EVENT_TYPE, "TYPE_"),
        message=event.message,
        stop_reason=to_proto(event.stop_reason, evo_pb2.StopReason, "STOP_REASON_"),
        time=to_timestamp(event.time),
    )
    if event.report is not None:
        message.report.CopyFrom(report_to_proto(event.report))
    if event.promotion is not None:
        message.promotion.CopyFrom(promotion_to_proto(event.promotion))
    return message


# -- the registry -----------------------------------------------------------------------------------------
def registry_stub(channel: Any) -> registry_pb2_grpc.RegistryServiceStub:
    """The registry's generated client on ``channel``."""
    return registry_pb2_grpc.RegistryServiceStub(channel)


def get_agent_requests(agent: str, version: str) -> list[registry_pb2.GetAgentRequest]:
    """GetAgent by id, then by name (callers may give either)."""
    return [
        registry_pb2.GetAgentRequest(agent_id=agent, version=version),
        registry_pb2.GetAgentRequest(name=agent, version=version),
    ]


def agent_source(message: registry_agent_pb2.Agent) -> AgentSource:
    """What the evolution service keeps of a registry agent."""
    return AgentSource(
        agent_id=message.agent_id,
        name=message.name,
        version=message.version,
        code=message.code,
        description=message.description,
    )


def register_request(
    source: AgentSource, code: str, labels: Mapping[str, str], request_id: str
) -> registry_pb2.RegisterAgentRequest:
    """RegisterAgent of evolved code as a new version with the original as its parent."""
    return registry_pb2.RegisterAgentRequest(
        name=source.name,
        code=code,
        description=source.description,
        parents=[registry_agent_pb2.AgentVersionRef(agent_id=source.agent_id, version=source.version)],
        labels=dict(labels),
        request_id=request_id,
    )


def list_cases_request(agent_id: str, page_token: str) -> registry_pb2.ListAgentCasesRequest:
    """One page (the largest) of an agent's captured cases."""
    return registry_pb2.ListAgentCasesRequest(agent_id=agent_id, page_size=500, page_token=page_token)


def production_case(message: registry_agent_pb2.AgentCase) -> ProductionCase:
    """A captured case as the suite builder needs it."""
    return ProductionCase(
        case_id=message.case_id,
        version=message.version,
        success=message.success,
        inputs=struct_to_dict(message.inputs),
        output=struct_to_dict(message.output) if message.HasField("output") else None,
        expected=struct_to_dict(message.expected) if message.labelled else None,
        labelled=message.labelled,
        error=f"{message.error_type}: {message.error_message}" if message.error_type else message.error_message,
        label_time=from_timestamp(message.label_time) if message.HasField("label_time") else None,
    )


def execution_stats_request(agent_id: str, version: str, since: datetime) -> registry_pb2.GetAgentExecutionStatsRequest:
    """GetAgentExecutionStats of one version since a time."""
    return registry_pb2.GetAgentExecutionStatsRequest(agent_id=agent_id, version=version,
                                                      start_time=to_timestamp(since))


def set_alias_request(agent_id: str, alias: str, version: str, traffic_fraction: float,
                      min_sample: int) -> registry_pb2.SetAgentAliasRequest:
    """SetAgentAlias; a canary carries its share and sample size."""
    rollout = registry_agent_pb2.RolloutPolicy(min_sample=min_sample) if traffic_fraction else None
    return registry_pb2.SetAgentAliasRequest(agent_id=agent_id, alias=alias, version=version,
                                             traffic_fraction=traffic_fraction, rollout=rollout)


def aliases_request(agent_id: str) -> registry_pb2.ListAgentAliasesRequest:
    """ListAgentAliases."""
    return registry_pb2.ListAgentAliasesRequest(agent_id=agent_id)


def alias_view(message: registry_pb2.ListAgentAliasesResponse) -> AliasState:
    """An agent's aliases and, newest first, how its rollouts ended."""
    ended = registry_agent_pb2.AliasEvent
    outcomes = tuple(
        RolloutOutcome(version=event.version, promoted=event.kind == ended.KIND_PROMOTED, message=event.message)
        for event in message.events
        if event.kind in (ended.KIND_PROMOTED, ended.KIND_ROLLED_BACK)
    )
    return AliasState(versions={alias.alias: alias.version for alias in message.aliases}, outcomes=outcomes)


# -- policies ----------------------------------------------------------------------------------------------
def policy_from_proto(message: policy_pb2.EvolutionPolicy) -> EvolutionPolicy:
    """A policy's settings from SetEvolutionPolicy (status and times are the server's)."""
    # The proto messages and the dataclasses share their field names.
    return EvolutionPolicy(
        agent_id=message.agent_id,
        enabled=not message.disabled,
        trigger=PolicyTrigger(**{item.name: getattr(message.trigger, item.name) for item in fields(PolicyTrigger)}),
        budget=PolicyBudget(**{item.name: getattr(message.budget, item.name) for item in fields(PolicyBudget)}),
        overrides=overrides_from_proto(message.config),
        held_out_fraction=message.held_out_fraction,
        canary_traffic_fraction=message.canary_traffic_fraction,
        canary_min_sample=message.canary_min_sample,
    )


def overrides_to_proto(overrides: ConfigOverrides) -> evo_pb2.EvolutionConfig:
    """The settings a caller gave, unset ones left unset."""
    enums = ("operators", "selection")
    given = {item.name: getattr(overrides, item.name) for item in fields(ConfigOverrides)
             if item.name not in enums and getattr(overrides, item.name) is not None}
    return evo_pb2.EvolutionConfig(
        **given,
        operators=to_proto(overrides.operators, evo_pb2.OperatorSet, "OPERATOR_SET_"),
        selection=to_proto(overrides.selection, evo_pb2.Selection, "SELECTION_"),
    )


def policy_to_proto(policy: EvolutionPolicy) -> policy_pb2.EvolutionPolicy:
    """A stored policy with its status."""
    status = policy.status
    # The reset follows the day the usage was counted in (a day without any tick shows yesterday's numbers).
    reset = next_reset(datetime.fromisoformat(status.budget_day).replace(tzinfo=UTC)) if status.budget_day else None
    return policy_pb2.EvolutionPolicy(
        agent_id=policy.agent_id,
        disabled=not policy.enabled,
        trigger=policy_pb2.PolicyTrigger(**asdict(policy.trigger)),
        budget=policy_pb2.PolicyBudget(**asdict(policy.budget)),
        config=overrides_to_proto(policy.overrides),
        held_out_fraction=policy.held_out_fraction,
        canary_traffic_fraction=policy.canary_traffic_fraction,
        canary_min_sample=policy.canary_min_sample,
        status=policy_pb2.PolicyStatus(
            phase=to_proto(status.phase, policy_pb2.PolicyStatus.Phase, "PHASE_"),
            message=status.message,
            active_run_id=status.active_run_id,
            canary_version=status.canary_version,
            runs_started=status.runs_started,
            last_trigger_time=to_timestamp(status.last_trigger_time),
            last_trigger_reason=status.last_trigger_reason,
            last_outcome=status.last_outcome,
            evaluations_used_today=status.evaluations_used,
            cost_used_today_usd=status.cost_used_usd,
            budget_reset_time=to_timestamp(reset),
        ),
        create_time=to_timestamp(policy.create_time),
        update_time=to_timestamp(policy.update_time),
    )


def policies_response(request: pb2.ListEvolutionPoliciesRequest,
                      page: Page[EvolutionPolicy]) -> pb2.ListEvolutionPoliciesResponse:
    """One page of ListEvolutionPolicies."""
    return pb2.ListEvolutionPoliciesResponse(policies=[policy_to_proto(policy) for policy in page.items],
                                             next_page_token=paging.encode_token(request, page.after))


def policies_page(message: pb2.ListEvolutionPoliciesRequest) -> tuple[str | None, int]:
    """ListEvolutionPolicies' position and page size.

    Raises:
        InvalidArgument: a negative page size or a token not issued for this query.
    """
    size = paging.page_size(message.page_size)
    after = paging.decode_token(message, lambda value: isinstance(value, str))
    return after, size
