"""The one enum rule (tdev_common.enums): every domain enum member has a proto counterpart by name, and back."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from tdev.builder.v1 import build_pb2
from tdev.evolution.v1 import evolution_pb2
from tdev.registry.v1 import agent_pb2, registry_service_pb2
from tdev.workflow.v1 import workflow_pb2

from builder_svc import domain as builder
from evolution_svc import domain as evolution
from registry_svc import domain as registry
from tdev_common import enums
from tdev_common.errors import InvalidArgument
from workflow_svc import domain as workflow

pytestmark = pytest.mark.unit

# (domain enum, generated enum, prefix, domain members standing for UNSPECIFIED)
PAIRS: list[tuple[type[enum.Enum], Any, str, set[str]]] = [
    (registry.AnalysisState, agent_pb2.AgentAnalysis.State, "STATE_", set()),
    # ListAgents' default order has no proto name of its own: ORDER_BY_UNSPECIFIED means it.
    (registry.OrderBy, registry_service_pb2.ListAgentsRequest.OrderBy, "ORDER_BY_", {"UPDATED"}),
    (workflow.FailurePolicy, workflow_pb2.FailurePolicy, "FAILURE_POLICY_", set()),
    (workflow.ExecutionState, workflow_pb2.Execution.State, "STATE_", set()),
    (workflow.NodeState, workflow_pb2.NodeRun.State, "STATE_", set()),
    (workflow.EventType, workflow_pb2.ExecutionEvent.Type, "TYPE_", set()),
    (builder.BuildState, build_pb2.Build.State, "STATE_", set()),
    (builder.Stage, build_pb2.Stage, "STAGE_", set()),
    (builder.StageState, build_pb2.StageResult.State, "STATE_", set()),
    (builder.EventType, build_pb2.BuildEvent.Type, "TYPE_", set()),
    (evolution.ScoringMode, evolution_pb2.ScoringMode, "SCORING_MODE_", set()),
    (evolution.OperatorSet, evolution_pb2.OperatorSet, "OPERATOR_SET_", set()),
    (evolution.RunState, evolution_pb2.EvolutionRun.State, "STATE_", set()),
    (evolution.StopReason, evolution_pb2.StopReason, "STOP_REASON_", set()),
    (evolution.EventType, evolution_pb2.EvolutionEvent.Type, "TYPE_", set()),
]
IDS = [f"{domain.__module__.split('.')[0]}.{domain.__name__}" for domain, *_ in PAIRS]


@pytest.mark.parametrize(("domain", "wrapper", "prefix", "default_only"), PAIRS, ids=IDS)
def test_domain_and_proto_enums_have_the_same_names_except_unspecified(
        domain: type[enum.Enum], wrapper: Any, prefix: str, default_only: set[str]) -> None:
    domain_names = set(domain.__members__) - {enums.UNSPECIFIED} - default_only
    assert domain_names == enums.proto_names(wrapper, prefix) - {enums.UNSPECIFIED}


@pytest.mark.parametrize(("domain", "wrapper", "prefix", "default_only"), PAIRS, ids=IDS)
def test_every_domain_member_round_trips_through_its_proto_number(
        domain: type[enum.Enum], wrapper: Any, prefix: str, default_only: set[str]) -> None:
    for member in domain:
        if member.name in default_only:
            continue
        number = enums.to_proto(member, wrapper, prefix)
        assert enums.from_proto(number, domain, wrapper, prefix, field="f") is member


def test_from_proto_rejects_an_unknown_number_with_a_field_violation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        enums.from_proto(99, evolution.RunState, evolution_pb2.EvolutionRun.State, "STATE_", field="state")
    assert caught.value.reason == "INVALID_FIELD"
    assert [(v.field, v.description) for v in caught.value.violations] == [("state", "unknown value 99")]


def test_from_proto_rejects_unspecified_when_required_and_no_default() -> None:
    with pytest.raises(InvalidArgument) as caught:
        enums.from_proto(0, evolution.RunState, evolution_pb2.EvolutionRun.State, "STATE_", field="run.state")
    assert [(v.field, v.description) for v in caught.value.violations] == [("run.state", "is required")]


def test_unspecified_maps_to_the_default_none_or_the_unspecified_member() -> None:
    state = evolution_pb2.EvolutionRun.State
    assert enums.optional_from_proto(0, evolution.RunState, state, "STATE_", field="state") is None
    assert enums.from_proto(0, evolution.ScoringMode, evolution_pb2.ScoringMode, "SCORING_MODE_", field="s",
                            default=evolution.ScoringMode.EXACT) is evolution.ScoringMode.EXACT
    assert enums.from_proto(0, workflow.FailurePolicy, workflow_pb2.FailurePolicy, "FAILURE_POLICY_",
                            field="p") is workflow.FailurePolicy.UNSPECIFIED


def test_to_proto_maps_by_name_not_by_value() -> None:
    # evolution's values are text; workflow's happen to equal the numbers, which the mapping never relies on.
    assert enums.to_proto(evolution.RunState.RUNNING, evolution_pb2.EvolutionRun.State, "STATE_") == (
        evolution_pb2.EvolutionRun.STATE_RUNNING)
    assert enums.to_proto(workflow.NodeState.SKIPPED, workflow_pb2.NodeRun.State, "STATE_") == (
        workflow_pb2.NodeRun.STATE_SKIPPED)
