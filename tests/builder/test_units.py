"""Pure parts of the builder: admission, plan checks, JSON comparison, reuse fit, composition, blame, README."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from builder_svc import admission, blame, composition, packaging, specs
from builder_svc.domain import (
    AgentSummary,
    ExampleOutcome,
    ExecutionResult,
    NodeResult,
    PackagedAgent,
    RequestedConstraints,
    Usage,
    ValidationCase,
)
from tdev_common.errors import InvalidArgument
from tdev_common.llm.offline.planner import plan

pytestmark = pytest.mark.unit  # no I/O

DEFAULTS = admission.Defaults(max_requirements_chars=100, max_tokens=1000, max_cost_usd=1.5,
                              max_duration_seconds=60.0, max_fix_attempts=3, max_fix_attempts_limit=10,
                              max_sample_inputs=2)


def test_requirements_are_stripped_and_bounded() -> None:
    assert admission.check_requirements("  sort the numbers \n", 100) == "sort the numbers"
    with pytest.raises(InvalidArgument) as empty:
        admission.check_requirements(" \t\n", 100)
    assert empty.value.message == "requirements: must not be empty"
    assert empty.value.violations[0].field == "requirements"
    with pytest.raises(InvalidArgument) as long:
        admission.check_requirements("x" * 101, 100)
    assert long.value.message == "requirements: 101 characters; the limit is 100"


def test_constraints_get_defaults_and_every_problem_is_reported() -> None:
    resolved = admission.resolve_constraints(RequestedConstraints(max_cost_usd=0.25, disable_reuse=True), DEFAULTS)
    assert (resolved.max_tokens, resolved.max_cost_usd, resolved.max_duration_seconds, resolved.max_fix_attempts,
            resolved.disable_reuse) == (1000, 0.25, 60.0, 3, True)
    with pytest.raises(InvalidArgument) as bad:
        admission.resolve_constraints(RequestedConstraints(
            max_tokens=-1, max_duration_seconds=float("inf"), max_fix_attempts=11,
            sample_inputs=({}, {}, {})), DEFAULTS)
    assert [v.field for v in bad.value.violations] == [
        "constraints.max_tokens", "constraints.max_duration_seconds", "constraints.max_fix_attempts",
        "constraints.sample_inputs"]


def test_list_builds_tokens_round_trip_and_foreign_tokens_are_rejected() -> None:
    from tdev.builder.v1 import builder_service_pb2 as pb2

    from builder_svc import convert
    from tdev_common import paging

    request = pb2.ListBuildsRequest(page_size=900)
    token = paging.encode_token(request, [1700000000.25, "build_abc"])
    # The token keeps the stored epoch double; the domain cursor holds the same instant as a UTC datetime.
    cursor = (datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC), "build_abc")
    assert convert.list_query(pb2.ListBuildsRequest(page_token=token))[1:] == (50, cursor)
    assert convert.list_response(request, paging.Page((), cursor)).next_page_token == token
    assert convert.list_query(request)[1:] == (500, None)
    with pytest.raises(InvalidArgument):
        convert.list_query(pb2.ListBuildsRequest(page_token="nope"))


def _spec(spec_id: str, inputs: dict[str, str], depends_on: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    example = {"input": {"x": 1}, "expected_output": {"y": 1}}
    return {"id": spec_id, "name": spec_id.title().replace("_", ""), "purpose": "p",
            "input_schema": {"type": "object", "required": list(inputs)}, "output_schema": {"required": ["y"]},
            "examples": [example, example], "inputs": inputs, "depends_on": depends_on or [], **extra}


def test_offline_plans_pass_the_plan_checks() -> None:
    for text in ("Count the words in a text and report the most frequent ones",
                 "Count the sentences and the words of a text",
                 "Keep only the records where status is active, sort them by age and count records by city"):
        assert specs.check_plan(plan(text)) == []


def test_plan_checks_name_every_problem() -> None:
    bad = {
        "agents": [
            _spec("a", {"x": "inputs.x", "z": "inputs.nope"}),
            _spec("a", {"x": "nodes.ghost.output.y"}),
            _spec("c", {"q": "somewhere"}, depends_on=["ghost"]),
            {**_spec("d", {}), "examples": [{"input": {}, "expected_output": {}}]},
            _spec("e", {"x": "nodes.e.output.y"}),
        ],
        "workflow_input_schema": {"properties": {"x": {}}},
        "outputs": {"out": "inputs.x"},
        "examples": [{"input": {"x": 1}, "expected_output": {"other": 2}}],
    }
    assert specs.check_plan(bad) == [
        'agents[1].id: "a" is used twice',
        'agents[0] (a).inputs.z: workflow input "nope" is not in workflow_input_schema',
        'agents[1] (a).inputs.x: unknown agent "ghost"',
        'agents[2] (c).inputs.q: "somewhere" is not inputs.<key> or nodes.<id>.output.<key>',
        'agents[2] (c).depends_on: unknown agent "ghost"',
        "agents[3] (d).examples: at least 2 examples are needed, got 1",
        "agents[4] (e).inputs.x: an agent cannot read its own output",
        'outputs.out: "inputs.x" is not nodes.<id>.output.<key>',
        "examples[0].expected_output: keys ['other'] are not workflow outputs",
    ]


def test_plan_cycles_are_reported_as_a_path() -> None:
    cyclic = {"agents": [_spec("a", {"x": "nodes.b.output.y"}), _spec("b", {"x": "nodes.a.output.y"})],
              "outputs": {"y": "nodes.b.output.y"}}
    assert specs.check_plan(cyclic) == ["agents: the data flow has a cycle: a -> b -> a"]


def test_json_equality_keeps_booleans_apart_and_numbers_by_value() -> None:
    assert specs.json_equal(26, 26.0) and specs.json_equal(0.1 + 0.2, 0.3)
    assert not specs.json_equal(1, True) and not specs.json_equal(0, None)
    assert not specs.json_equal([1, 2], [2, 1]) and specs.json_equal({"a": [1, {"b": "c"}]}, {"a": [1.0, {"b": "c"}]})
    assert not specs.json_equal({"a": 1}, {"a": 1, "b": 2}) and not specs.json_equal("1", 1)
    assert specs.output_mismatch({"y": 2}, {"y": 2.0, "extra": 1}) is None
    assert specs.output_mismatch({"y": 2}, {"z": 2}) == 'output "y" is missing (keys: [\'z\'])'
    assert specs.output_mismatch({"y": [1]}, {"y": [2]}) == 'output "y": expected [1], got [2]'


def test_example_failures_take_the_repair_prompt_shape() -> None:
    example = {"input": {"x": 1}, "expected_output": {"y": 2}}
    assert specs.failure_of(example, ExampleOutcome("ok", output={"y": 2})) is None
    assert specs.failure_of(example, ExampleOutcome("ok", output={"y": 3})) == {
        "kind": "wrong_output", "message": 'output "y": expected 2, got 3', "input": {"x": 1},
        "expected_output": {"y": 2}, "actual_output": {"y": 3}}
    raised = specs.failure_of(example, ExampleOutcome("error", error_type="KeyError", message="'x'", traceback="tb"))
    assert raised == {"kind": "exception", "exception_type": "KeyError", "message": "'x'", "traceback": "tb",
                      "input": {"x": 1}, "expected_output": {"y": 2}}
    assert specs.failure_of(example, ExampleOutcome("timeout", message="wall clock"))["kind"] == "timeout"
    assert specs.failure_of(example, ExampleOutcome("killed", message="SIGSEGV")) == {
        "kind": "invalid_output", "message": "killed: SIGSEGV", "input": {"x": 1}, "expected_output": {"y": 2}}


def _agent(inputs: dict[str, Any], outputs: dict[str, Any], **labels: str) -> AgentSummary:
    return AgentSummary("agent_1", "n", "1.0.0", "N", "d", {"input_schema": inputs, "output_schema": outputs},
                        labels)


def test_registry_agents_fit_when_inputs_are_given_and_outputs_produced() -> None:
    spec = _spec("s", {"x": "inputs.x"})
    assert specs.fits(_agent({"required": ["x"]}, {"properties": {"y": {}, "z": {}}}), spec)
    assert not specs.fits(_agent({"required": ["x", "w"]}, {"properties": {"y": {}}}), spec)
    assert not specs.fits(_agent({"required": ["x"]}, {"properties": {"z": {}}}), spec)
    assert not specs.fits(AgentSummary("a", "n", "1.0.0", "N", "d", {}), spec)


def test_independent_branches_are_joined_by_ordering_only_dependencies() -> None:
    planned = plan("Count the sentences and the words of a text")
    agents = {a["id"]: {"agent_id": f"agent_{a['id']}", "version": "1.0.0"} for a in planned["agents"]}
    definition = composition.compose("build_1", "svc_1", "1.0.0", "Count ...", planned, agents, 10.0)
    assert [(n.node_id, n.agent_id, n.agent_version, n.depends_on) for n in definition.nodes] == [
        ("count_sentences", "agent_count_sentences", "1.0.0", ()),
        ("count_words", "agent_count_words", "1.0.0", ("count_sentences",))]
    assert definition.to_json()["nodes"][1]["inputs"] == {"text": {"$ref": "inputs.text"}}
    assert definition.name == "text_pipeline-build_1" and definition.metadata["service_id"] == "svc_1"
    assert composition.workflow_version(3) == "1.2.0"


def _result(outputs: dict[str, Any] | None, nodes: dict[str, NodeResult], state: str = "SUCCEEDED",
            error_node: str = "") -> ExecutionResult:
    return ExecutionResult("ex_1", state, outputs, nodes, error_node=error_node)


def test_blame_points_at_a_failed_node_with_the_input_it_got() -> None:
    planned = plan("Filter out negative numbers, then compute the sum and the average")
    nodes = {"filter_numbers": NodeResult("filter_numbers", "SUCCEEDED", {"numbers": []}),
             "statistics": NodeResult("statistics", "FAILED", None, "ValueError", "empty list", "tb")}
    found = blame.responsible(planned, {"numbers": [-1]}, {"sum": 0, "mean": 0},
                              _result(None, nodes, "FAILED", "statistics"))
    assert found is not None and found.spec_id == "statistics"
    assert found.failure == {"kind": "exception", "exception_type": "ValueError", "message": "empty list",
                             "traceback": "tb", "input": {"numbers": []}}


def test_blame_finds_the_earliest_agent_contradicting_its_own_example() -> None:
    planned = plan("Filter out negative numbers, then compute the sum and the average")
    example_in = planned["examples"][0]["input"]
    first = planned["agents"][0]["examples"][0]
    wrong_filter = {"numbers": [*first["expected_output"]["numbers"], -1]}
    nodes = {"filter_numbers": NodeResult("filter_numbers", "SUCCEEDED", wrong_filter),
             "statistics": NodeResult("statistics", "SUCCEEDED", {"sum": 22.5, "mean": 4.5})}
    found = blame.responsible(planned, example_in, planned["examples"][0]["expected_output"],
                              _result({"sum": 22.5, "mean": 4.5}, nodes))
    assert found is not None and found.spec_id == "filter_numbers"
    assert found.failure["kind"] == "wrong_output" and found.failure["actual_output"] == wrong_filter


def test_blame_falls_back_to_the_producer_with_the_workflow_expectation() -> None:
    planned = plan("Sort the numbers in ascending order")
    nodes = {"sort_items": NodeResult("sort_items", "SUCCEEDED", {"numbers": [1, 2]})}
    found = blame.responsible(planned, {"numbers": [3, 2, 1]}, {"numbers": [1, 2, 3]},
                              _result({"numbers": [1, 2]}, nodes))
    assert found is not None and found.spec_id == "sort_items"
    assert found.example == {"input": {"numbers": [3, 2, 1]}, "expected_output": {"numbers": [1, 2, 3]}}


def test_readme_quotes_inputs_for_the_shell() -> None:
    case = ValidationCase({"text": "It's a \"test\"", "n": [1, 2]}, {"y": 1}, {"y": 1}, True, "ex_1")
    text = packaging.readme(
        service_id="svc_1", build_id="build_1", workflow_id="wf_1", workflow_version="1.0.0", requirements="Do it",
        analysis={"summary": "demo"}, agents=[PackagedAgent("Demo", "agent_1", "1.0.0", node_id="demo")],
        agent_names={"demo": "demo.1"}, input_schema={}, output_schema={}, outputs={"y": "nodes.demo.output.y"},
        report=[case], usage=Usage(1, 2, 0.5, 1, ("offline/x (not a model)",)), build_seconds=1.5,
        workflow_address="127.0.0.1:50052")
    assert text.startswith("# demo\n")
    assert ("grpcurl -plaintext -d '{\"inputs\": {\"n\": [1, 2], \"text\": \"It'\"'\"'s a \\\"test\\\"\"}, "
            "\"workflow_id\": \"wf_1\"}' 127.0.0.1:50052 tdev.workflow.v1.WorkflowService/ExecuteWorkflow") in text
    assert "tdev workflows run wf_1 -i 'text=It'\"'\"'s a \"test\"' -i 'n=[1, 2]' --follow" in text
    assert "| 1 | derived | " \
        "{\"n\": [1, 2], \"text\": \"It's a \\\"test\\\"\"} | {\"y\": 1} | {\"y\": 1} | passed |" in text
