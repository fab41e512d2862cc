"""Protobuf <-> domain: the builder's own messages and those of the registry and workflow services it calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from tdev.builder.v1 import build_pb2
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.evolution.v1 import evolution_pb2 as evo_pb2
from tdev.evolution.v1 import evolution_service_pb2 as evo_service_pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as evo_service_pb2_grpc
from tdev.registry.v1 import agent_pb2 as registry_agent_pb2
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_pb2_grpc
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as wf_service_pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as wf_service_pb2_grpc

from builder_svc.admission import Cursor
from builder_svc.domain import (
    AcceptanceCase,
    AgentRegistration,
    AgentSummary,
    Build,
    BuildError,
    BuildEvent,
    BuildFilter,
    BuildState,
    ExecutionResult,
    NodeResult,
    PackagedAgent,
    RepairRequest,
    RepairResult,
    RequestedConstraints,
    ServicePackage,
    Stage,
    StageResult,
    StartCommand,
    StoredWorkflow,
    Usage,
    ValidationCase,
    WorkflowDefinition,
)
from tdev_common import idempotency, paging
from tdev_common.clock import from_epoch, to_epoch, to_timestamp
from tdev_common.enums import optional_from_proto, to_proto
from tdev_common.paging import Page
from tdev_common.protojson import dict_to_struct as struct
from tdev_common.protojson import struct_to_dict


def _stage_number(stage: Stage | None) -> build_pb2.Stage:
    # Events and errors outside any stage carry no stage: STAGE_UNSPECIFIED on the wire.
    return build_pb2.STAGE_UNSPECIFIED if stage is None else to_proto(stage, build_pb2.Stage, "STAGE_")


# ---- builder requests ------------------------------------------------------------------------------------
def comparison_mode(value: int) -> str:
    """``COMPARISON_JSON_SUBSET`` -> ``"json_subset"``; unspecified (and unknown numbers) -> ``"exact"``."""
    if value not in build_pb2.Comparison.values() or value == build_pb2.COMPARISON_UNSPECIFIED:
        return "exact"
    return build_pb2.Comparison.Name(value).removeprefix("COMPARISON_").lower()  # type: ignore[arg-type]


def comparison_number(mode: str) -> build_pb2.Comparison:
    """Inverse of :func:`comparison_mode`."""
    return build_pb2.Comparison.Value("COMPARISON_" + (mode or "exact").upper())  # type: ignore[return-value]


def _acceptance(message: build_pb2.AcceptanceCase) -> AcceptanceCase:
    return AcceptanceCase(struct_to_dict(message.inputs), struct_to_dict(message.expected),
                          comparison_mode(message.comparison), message.tolerance, message.name)


def _constraints(message: build_pb2.BuildConstraints) -> RequestedConstraints:
    return RequestedConstraints(
        max_tokens=message.max_tokens, max_cost_usd=message.max_cost_usd,
        max_duration_seconds=message.max_duration_seconds, max_fix_attempts=message.max_fix_attempts,
        disable_reuse=message.disable_reuse,
        sample_inputs=tuple(struct_to_dict(sample) for sample in message.sample_inputs),
        acceptance_cases=tuple(_acceptance(case) for case in message.acceptance_cases),
    )


def start_command(request: pb2.StartBuildRequest | pb2.BuildServiceRequest) -> StartCommand:
    """StartBuild and BuildService requests carry the same fields (so a request id replays through either)."""
    return StartCommand(request.requirements, _constraints(request.constraints), request.request_id,
                        fingerprint=idempotency.fingerprint(request))


def list_query(request: pb2.ListBuildsRequest) -> tuple[BuildFilter, int, Cursor | None]:
    """Filter, page size and the (create time, id) position of ListBuilds.

    Raises:
        InvalidArgument: an unknown state, a negative page size or a token not issued for this query.
    """
    state = optional_from_proto(request.state, BuildState, build_pb2.Build.State, "STATE_", field="state")
    after = paging.decode_token(request, paging.is_keyset)
    # The token's position is the stored epoch double, as before; the domain cursor holds a datetime.
    cursor = (from_epoch(float(after[0])), str(after[1])) if after is not None else None
    return BuildFilter(state=state), paging.page_size(request.page_size), cursor


# ---- builder messages ------------------------------------------------------------------------------------
def usage_message(usage: Usage | None) -> build_pb2.Usage:
    """Usage as a message."""
    if usage is None:
        return build_pb2.Usage()
    return build_pb2.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                           cost_usd=usage.cost_usd, calls=usage.calls, models=list(usage.models))


def _error(error: BuildError | None) -> build_pb2.BuildError | None:
    if error is None:
        return None
    return build_pb2.BuildError(code=error.code, message=error.message, stage=_stage_number(error.stage))


def _stage(result: StageResult) -> build_pb2.StageResult:
    return build_pb2.StageResult(
        stage=_stage_number(result.stage), state=to_proto(result.state, build_pb2.StageResult.State, "STATE_"),
        summary=result.summary,
        details=struct(result.details), duration_ms=result.duration_ms, usage=usage_message(result.usage),
        attempt=result.attempt)


def _agent(agent: PackagedAgent) -> build_pb2.PackagedAgent:
    return build_pb2.PackagedAgent(spec_name=agent.spec_name, agent_id=agent.agent_id, version=agent.version,
                                   reused=agent.reused, fix_attempts=agent.fix_attempts, node_id=agent.node_id)


def _origin(origin: str) -> build_pb2.ValidationCase.Origin:
    if not origin:
        return build_pb2.ValidationCase.ORIGIN_UNSPECIFIED
    return build_pb2.ValidationCase.Origin.Value(f"ORIGIN_{origin.upper()}")  # type: ignore[return-value]


def _case(case: ValidationCase) -> build_pb2.ValidationCase:
    return build_pb2.ValidationCase(inputs=struct(case.inputs), expected=struct(case.expected),
                                    actual=struct(case.actual), passed=case.passed,
                                    execution_id=case.execution_id, message=case.message,
                                    origin=_origin(case.origin), name=case.name,
                                    comparison=comparison_number(case.comparison))


def acceptance_message(case: AcceptanceCase) -> build_pb2.AcceptanceCase:
    """An acceptance case as a message."""
    return build_pb2.AcceptanceCase(name=case.name, inputs=struct(case.inputs), expected=struct(case.expected),
                                    comparison=comparison_number(case.comparison), tolerance=case.tolerance)


def _package(package: ServicePackage | None) -> build_pb2.ServicePackage | None:
    if package is None:
        return None
    return build_pb2.ServicePackage(
        service_id=package.service_id, workflow_id=package.workflow_id, workflow_version=package.workflow_version,
        agents=[_agent(a) for a in package.agents], input_schema=struct(package.input_schema),
        output_schema=struct(package.output_schema), readme=package.readme,
        validation_report=[_case(c) for c in package.validation_report], usage=usage_message(package.usage),
        build_seconds=package.build_seconds, derived_examples_only=package.derived_examples_only,
        validation_basis=package.validation_basis)


def build_message(build: Build) -> build_pb2.Build:
    """A build as a message."""
    return build_pb2.Build(
        build_id=build.build_id, requirements=build.requirements,
        constraints=build_pb2.BuildConstraints(
            max_tokens=build.constraints.max_tokens, max_cost_usd=build.constraints.max_cost_usd,
            max_duration_seconds=build.constraints.max_duration_seconds,
            max_fix_attempts=build.constraints.max_fix_attempts, disable_reuse=build.constraints.disable_reuse,
            sample_inputs=[struct(s) for s in build.constraints.sample_inputs],
            acceptance_cases=[acceptance_message(c) for c in build.constraints.acceptance_cases]),
        state=to_proto(build.state, build_pb2.Build.State, "STATE_"),
        stages=[_stage(s) for s in build.stages], package=_package(build.package), error=_error(build.error),
        usage=usage_message(build.usage), last_sequence=build.last_sequence,
        create_time=to_timestamp(build.create_time), update_time=to_timestamp(build.update_time),
        registered_agents=[_agent(a) for a in build.registered_agents], elapsed_seconds=build.elapsed_seconds,
        state_detail=build.state_detail)


def event_message(event: BuildEvent) -> build_pb2.BuildEvent:
    """An event as a message."""
    return build_pb2.BuildEvent(
        sequence=event.sequence, build_id=event.build_id, type=to_proto(event.type, build_pb2.BuildEvent.Type, "TYPE_"),
        time=to_timestamp(event.time), stage=_stage_number(event.stage),
        message=event.message, details=struct(event.details), duration_ms=event.duration_ms,
        usage=usage_message(event.usage) if event.usage is not None else None, error=_error(event.error))


def start_response(build: Build) -> pb2.StartBuildResponse:
    """StartBuild's answer."""
    return pb2.StartBuildResponse(build=build_message(build))


def get_response(build: Build) -> pb2.GetBuildResponse:
    """GetBuild's answer."""
    return pb2.GetBuildResponse(build=build_message(build))


def cancel_response(build: Build) -> pb2.CancelBuildResponse:
    """CancelBuild's answer."""
    return pb2.CancelBuildResponse(build=build_message(build))


def list_response(request: pb2.ListBuildsRequest, page: Page[Build]) -> pb2.ListBuildsResponse:
    """ListBuilds' answer, its next page token bound to the request's filters."""
    return pb2.ListBuildsResponse(builds=[build_message(b) for b in page.items],
                                  next_page_token=paging.encode_token(request, _position(page.after)))


def _position(after: Cursor | None) -> list[Any] | None:
    return None if after is None else [to_epoch(after[0]), after[1]]


def build_service_response(event: BuildEvent) -> pb2.BuildServiceResponse:
    """One BuildService stream message."""
    return pb2.BuildServiceResponse(event=event_message(event))


def watch_response(event: BuildEvent) -> pb2.WatchBuildResponse:
    """One WatchBuild stream message."""
    return pb2.WatchBuildResponse(event=event_message(event))


# ---- the registry ----------------------------------------------------------------------------------------
def registry_stub(channel: grpc.aio.Channel) -> registry_pb2_grpc.RegistryServiceStub:
    """A registry stub on a channel."""
    return registry_pb2_grpc.RegistryServiceStub(channel)


def search_request(query: str, top_k: int) -> registry_pb2.SearchAgentsRequest:
    """SearchAgents."""
    return registry_pb2.SearchAgentsRequest(query=query, top_k=top_k)


def get_agent_request(agent_id: str, version: str) -> registry_pb2.GetAgentRequest:
    """GetAgent with code."""
    return registry_pb2.GetAgentRequest(agent_id=agent_id, version=version)


def register_request(registration: AgentRegistration) -> registry_pb2.RegisterAgentRequest:
    """RegisterAgent."""
    return registry_pb2.RegisterAgentRequest(
        name=registration.name, code=registration.code, description=registration.description,
        parents=[registry_agent_pb2.AgentVersionRef(agent_id=a, version=v) for a, v in registration.parents],
        request_id=registration.request_id, labels=dict(registration.labels))


def update_labels_request(agent_id: str, version: str, labels: Mapping[str, str],
                          request_id: str) -> registry_pb2.UpdateAgentLabelsRequest:
    """UpdateAgentLabels setting labels."""
    return registry_pb2.UpdateAgentLabelsRequest(agent_id=agent_id, version=version, set_labels=dict(labels),
                                                 request_id=request_id)


def list_agents_request(name_contains: str, page_token: str) -> registry_pb2.ListAgentsRequest:
    """ListAgents by name, without code, in a stable order."""
    return registry_pb2.ListAgentsRequest(name_contains=name_contains, page_size=500, page_token=page_token,
                                          order_by=registry_pb2.ListAgentsRequest.ORDER_BY_RECENT, exclude_code=True)


def list_versions_request(agent_id: str, page_token: str) -> registry_pb2.ListAgentVersionsRequest:
    """ListAgentVersions of one agent."""
    return registry_pb2.ListAgentVersionsRequest(agent_id=agent_id, page_size=500, page_token=page_token)


def agent_summary(agent: registry_agent_pb2.Agent) -> AgentSummary:
    """A registry agent version."""
    return AgentSummary(
        agent_id=agent.agent_id, name=agent.name, version=agent.version, class_name=agent.class_name,
        description=agent.description, capabilities=struct_to_dict(agent.declared_capabilities),
        labels=dict(agent.labels), code=agent.code, code_hash=agent.code_hash)


def search_results(response: registry_pb2.SearchAgentsResponse) -> list[AgentSummary]:
    """SearchAgents' hits, best first."""
    return [agent_summary(result.agent) for result in response.results]


# ---- the workflow service --------------------------------------------------------------------------------
def workflow_stub(channel: grpc.aio.Channel) -> wf_service_pb2_grpc.WorkflowServiceStub:
    """A workflow stub on a channel."""
    return wf_service_pb2_grpc.WorkflowServiceStub(channel)


def create_workflow_request(definition: WorkflowDefinition, request_id: str) -> wf_service_pb2.CreateWorkflowRequest:
    """CreateWorkflow for a composed definition."""
    workflow = json_format.ParseDict(definition.to_json(), wf_pb2.Workflow())
    return wf_service_pb2.CreateWorkflowRequest(workflow=workflow, request_id=request_id)


def stored_workflow(response: wf_service_pb2.CreateWorkflowResponse) -> StoredWorkflow:
    """What CreateWorkflow stored."""
    return StoredWorkflow(response.workflow.workflow_id, response.workflow.version)


def start_execution_request(workflow_id: str, inputs: Mapping[str, Any],
                            request_id: str) -> wf_service_pb2.StartExecutionRequest:
    """StartExecution."""
    return wf_service_pb2.StartExecutionRequest(workflow_id=workflow_id, inputs=struct(inputs), request_id=request_id)


def execution_id(response: wf_service_pb2.StartExecutionResponse) -> str:
    """The started execution's id."""
    return response.execution.execution_id


def watch_execution_request(execution: str, after: int) -> wf_service_pb2.WatchExecutionRequest:
    """WatchExecution."""
    return wf_service_pb2.WatchExecutionRequest(execution_id=execution, after_sequence=after)


def get_execution_request(execution: str) -> wf_service_pb2.GetExecutionRequest:
    """GetExecution."""
    return wf_service_pb2.GetExecutionRequest(execution_id=execution)


def cancel_execution_request(execution: str, reason: str) -> wf_service_pb2.CancelExecutionRequest:
    """CancelExecution."""
    return wf_service_pb2.CancelExecutionRequest(execution_id=execution, reason=reason)


_TERMINAL_EVENTS = (wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED, wf_pb2.ExecutionEvent.TYPE_EXECUTION_FAILED,
                    wf_pb2.ExecutionEvent.TYPE_EXECUTION_CANCELLED)


def watched_event(response: wf_service_pb2.WatchExecutionResponse) -> tuple[int, bool]:
    """Sequence of a watched event and whether it ends the execution."""
    return response.event.sequence, response.event.type in _TERMINAL_EVENTS


def execution_result(response: wf_service_pb2.GetExecutionResponse) -> ExecutionResult:
    """A finished execution with its per-node outputs and errors."""
    execution = response.execution
    nodes = {
        node.node_id: NodeResult(
            node_id=node.node_id, state=wf_pb2.NodeRun.State.Name(node.state).removeprefix("STATE_"),
            output=struct_to_dict(node.output) if node.HasField("output") else None,
            error_type=node.error.type, error_message=node.error.message, traceback=node.error.traceback)
        for node in execution.nodes
    }
    return ExecutionResult(
        execution_id=execution.execution_id,
        state=wf_pb2.Execution.State.Name(execution.state).removeprefix("STATE_"),
        outputs=struct_to_dict(execution.outputs) if execution.HasField("outputs") else None, nodes=nodes,
        error_type=execution.error.type, error_message=execution.error.message, error_node=execution.error.node_id)


# ---- the evolution service -------------------------------------------------------------------------------
def evolution_stub(channel: grpc.aio.Channel) -> evo_service_pb2_grpc.EvolutionServiceStub:
    """An evolution stub on a channel."""
    return evo_service_pb2_grpc.EvolutionServiceStub(channel)


def start_evolution_request(request: RepairRequest) -> evo_service_pb2.StartEvolutionRequest:
    """StartEvolution: exact scoring on every case (none held out: they are the agent's whole contract)."""
    suite = evo_pb2.EvaluationSuite(
        cases=[evo_pb2.EvaluationCase(name=f"case {i + 1}", inputs=struct(case["input"]),
                                      expected=struct(case["expected_output"]))
               for i, case in enumerate(request.cases)],
        scoring_mode=evo_pb2.SCORING_MODE_EXACT)
    config = evo_pb2.EvolutionConfig(
        population_size=request.population_size, generations=request.generations, seed=0,
        max_duration_seconds=request.max_duration_seconds, max_cost_usd=request.max_cost_usd, promote=True,
        # A repair starts from one broken program: variation, not recombination of near-identical parents, finds
        # the fix, so most children are mutated.
        mutation_rate=0.9, crossover_rate=0.1,
        plateau_generations=0, islands=1, migration_interval=1, migration_size=1, elitism=1,
        operators=f"OPERATOR_SET_{(request.operators or 'unspecified').upper()}")  # type: ignore[arg-type]
    return evo_service_pb2.StartEvolutionRequest(agent_id=request.agent_id, agent_version=request.version,
                                                 suite=suite, config=config, request_id=request.request_id)


def get_evolution_request(run_id: str) -> evo_service_pb2.GetEvolutionRequest:
    """GetEvolution without candidate code."""
    return evo_service_pb2.GetEvolutionRequest(run_id=run_id, exclude_code=True)


def cancel_evolution_request(run_id: str, reason: str) -> evo_service_pb2.CancelEvolutionRequest:
    """CancelEvolution."""
    return evo_service_pb2.CancelEvolutionRequest(run_id=run_id, reason=reason)


_ENDED_RUNS = (evo_pb2.EvolutionRun.STATE_SUCCEEDED, evo_pb2.EvolutionRun.STATE_FAILED,
               evo_pb2.EvolutionRun.STATE_CANCELLED)


def evolution_ended(response: evo_service_pb2.GetEvolutionResponse) -> bool:
    """Whether the run has ended."""
    return response.run.state in _ENDED_RUNS


def repair_result(response: evo_service_pb2.GetEvolutionResponse) -> RepairResult:
    """How an ended run came out."""
    run = response.run
    last = run.generations[-1] if run.generations else None
    return RepairResult(
        run_id=run.run_id, state=evo_pb2.EvolutionRun.State.Name(run.state).removeprefix("STATE_"),
        stop_reason=evo_pb2.StopReason.Name(run.stop_reason).removeprefix("STOP_REASON_"),
        promoted=run.promotion.promoted, agent_id=run.promotion.agent_id, version=run.promotion.version,
        reason=run.promotion.reason or run.stop_message, seed_fitness=run.seed_fitness,
        best_correctness=run.best.correctness, generations=len(run.generations),
        evaluations=last.total_evaluations if last else 0,
        cost_usd=round(sum(g.cost_usd for g in run.generations), 12), error=run.error)
