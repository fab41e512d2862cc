"""Acceptance cases through real gRPC: they decide success, resolve ambiguous texts and name what failed."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import grpc
import pytest
import structlog
from tdev.builder.v1 import build_pb2
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from typer.testing import CliRunner

from tdev_cli.main import app
from tests.builder.conftest import (
    REQUIREMENTS,
    Builder,
    BuildState,
    Event,
    Mesh,
    build,
    get_build,
    plain,
    run_workflow,
    struct,
)

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]
Origin = build_pb2.ValidationCase


def case(inputs: dict[str, Any], expected: dict[str, Any], comparison: int = build_pb2.COMPARISON_EXACT,
         tolerance: float = 0.0, name: str = "") -> build_pb2.AcceptanceCase:
    """An AcceptanceCase message."""
    return build_pb2.AcceptanceCase(inputs=struct(inputs), expected=struct(expected), comparison=comparison,
                                    tolerance=tolerance, name=name)


async def outputs_of(mesh: Mesh, workflow_id: str, inputs: dict[str, Any]) -> Any:
    """The packaged workflow's outputs for inputs the build never saw (through the workflow service)."""
    last = await run_workflow(mesh.workflow_stub, workflow_id, inputs)
    assert last.type == wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED, last
    return plain(last.output)


async def test_ambiguous_text_is_read_the_way_its_cases_say(mesh: Mesh, builder: Builder) -> None:
    text = "Reverse the words of the text."
    plain_events = await build(builder.stub, text, disable_reuse=True)
    assert plain_events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    by_cases = await build(builder.stub, text, disable_reuse=True, acceptance_cases=[
        case({"text": "hello world"}, {"text": "olleh dlrow"}, name="letters of each word")])
    assert by_cases[-1].type == Event.TYPE_BUILD_SUCCEEDED, by_cases[-1].message
    without = await get_build(builder.stub, plain_events[-1].build_id)
    with_cases = await get_build(builder.stub, by_cases[-1].build_id)
    fresh = {"text": "gRPC streams events"}
    assert await outputs_of(mesh, without.package.workflow_id, fresh) == {"text": "events streams gRPC"}
    assert await outputs_of(mesh, with_cases.package.workflow_id, fresh) == {"text": "CPRg smaerts stneve"}
    identified = next(s for s in with_cases.stages if s.stage == build_pb2.STAGE_IDENTIFY_AGENTS)
    assert "reverse_text(unit='each_word')" in plain(identified.details)["plan"]["interpretation"]


async def test_build_without_cases_says_it_was_validated_on_derived_examples_only(builder: Builder) -> None:
    events = await build(builder.stub, "Sort the numbers in descending order.", disable_reuse=True)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_SUCCEEDED
    assert done.state_detail.startswith("validated on derived examples only (no acceptance cases given)")
    assert done.package.derived_examples_only is True
    assert done.package.validation_basis == done.state_detail
    assert "Validated on derived examples only" in done.package.readme
    assert "validated on derived examples only" in events[-1].message
    assert {c.origin for c in done.package.validation_report} == {Origin.ORIGIN_DERIVED}


async def test_cases_decide_success_and_are_reported_apart_from_derived_examples(mesh: Mesh,
                                                                                 builder: Builder) -> None:
    cases = [case({"values": [1, 2, 3, 4]}, {"average": 2.5, "total": 10}, name="four values"),
             case({"values": [-1, 1]}, {"average": 0}, build_pb2.COMPARISON_JSON_SUBSET),
             case({"values": [1, 2, 2]}, {"average": 1.667, "total": 5}, build_pb2.COMPARISON_NUMERIC_TOLERANCE,
                  tolerance=0.001),
             case({"values": [5]}, {"Average": 5, "TOTAL": 5}, build_pb2.COMPARISON_KEY_NAMES_EQUIVALENT)]
    events = await build(builder.stub, "Compute the average of the numbers.", disable_reuse=True,
                         acceptance_cases=cases)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED, events[-1].message
    done = await get_build(builder.stub, events[-1].build_id)
    report = done.package.validation_report
    accepted = [c for c in report if c.origin == Origin.ORIGIN_ACCEPTANCE]
    assert [(c.name, c.passed, c.comparison) for c in accepted] == [
        ("four values", True, build_pb2.COMPARISON_EXACT), ("", True, build_pb2.COMPARISON_JSON_SUBSET),
        ("", True, build_pb2.COMPARISON_NUMERIC_TOLERANCE), ("", True, build_pb2.COMPARISON_KEY_NAMES_EQUIVALENT)]
    assert any(c.origin == Origin.ORIGIN_DERIVED for c in report)
    assert done.package.derived_examples_only is False
    assert done.state_detail.startswith("validated on 4 acceptance cases (all passed); reported separately:")
    assert list(done.constraints.acceptance_cases) == cases
    # Right on fresh inputs too: the case names (values, average, total) are the service's interface.
    assert await outputs_of(mesh, done.package.workflow_id, {"values": [10, 20, 60]}) == {"average": 30, "total": 90}


async def test_cases_that_cannot_be_met_fail_the_build_naming_them(builder: Builder) -> None:
    contradictory = [case({"numbers": [3, 1, 2]}, {"numbers": [1, 2, 3]}, name="ascending"),
                     case({"numbers": [3, 1, 2]}, {"numbers": [3, 2, 1]}, name="descending")]
    events = await build(builder.stub, "Sort the numbers.", disable_reuse=True, acceptance_cases=contradictory)
    assert events[-1].type == Event.TYPE_BUILD_FAILED
    assert not [e for e in events if e.type == Event.TYPE_BUILD_SUCCEEDED]
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_FAILED
    # Validation sends the blamed agent back to fixing; no repair can meet both cases, so the build ends there,
    # its error naming the case it could not meet.
    assert done.error.code == "FAILED_PRECONDITION"
    assert done.error.stage in (build_pb2.STAGE_VALIDATE, build_pb2.STAGE_SELECT_OR_CREATE)
    assert "acceptance case 2 (descending)" in done.error.message
    assert 'expected [3, 2, 1], got [1, 2, 3]' in done.error.message
    failed_validation = [e for e in events if e.type == Event.TYPE_STAGE_FAILED and e.stage == build_pb2.STAGE_VALIDATE]
    assert failed_validation and "1/2 acceptance cases failed (acceptance case 2 (descending): inputs " \
        '{"numbers": [3, 1, 2]}' in failed_validation[0].message
    assert done.state_detail.startswith("not accepted")


async def test_empty_expected_output_is_invalid_argument(builder: Builder) -> None:
    request = pb2.BuildServiceRequest(requirements="Sort the numbers.", constraints=build_pb2.BuildConstraints(
        acceptance_cases=[build_pb2.AcceptanceCase(inputs=struct({"numbers": [1]}))]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in builder.stub.BuildService(request):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "constraints.acceptance_cases[0].expected" in str(raised.value.details()) + str(
        raised.value.trailing_metadata())


async def _tdev(builder: Builder, *args: str) -> tuple[int, str]:
    """The CLI in a thread (it runs its own event loop), server logs kept out of its output."""
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.dev.ConsoleRenderer(colors=False)],
                        logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=False)
    try:
        address = ["--address", f"127.0.0.1:{builder.handle.port}"]
        result = await asyncio.to_thread(CliRunner().invoke, app, [*args, *address], env={"COLUMNS": "250"})
    finally:
        structlog.configure(**saved)
    return result.exit_code, result.stdout


async def test_cli_build_with_cases_from_a_corpus_file_and_inline(builder: Builder) -> None:
    corpus = REQUIREMENTS
    code, out = await _tdev(builder, "build", f"@{corpus / 'reverse_each_word.txt'}", "--follow", "--no-reuse",
                            "--case", f"@{corpus / 'reverse_each_word.cases.json'}",
                            "--case", json.dumps({"inputs": {"text": "ab cd"}, "expected": {"text": "ba dc"},
                                                  "name": "inline"}))
    assert code == 0, out
    assert "validated on 3 acceptance cases (all passed)" in out
    code, out = await _tdev(builder, "build", "Sort the numbers.", "--no-reuse")
    assert code == 0 and "accepted" in out
    code, out = await _tdev(builder, "build", "Sort the numbers.", "--case",
                            json.dumps({"inputs": {}, "expected": {"x": 1}, "comparison": "fuzzy"}))
    assert code != 0


async def test_a_case_naming_inputs_the_service_does_not_read_fails_the_build_as_a_case(builder: Builder) -> None:
    # "stock" is no input of a text pipeline and the case cannot be mapped: the case fails, named in the error.
    cases = [case({"text": "ab", "stock": 3}, {"text": "AB"}), case({"other": [1, 2]}, {"text": "X"}, name="odd")]
    events = await build(builder.stub, "Convert the text to uppercase.", disable_reuse=True, acceptance_cases=cases)
    assert events[-1].type == Event.TYPE_BUILD_FAILED
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.error.code == "FAILED_PRECONDITION" and done.error.stage == build_pb2.STAGE_VALIDATE
    assert "acceptance case 2 (odd)" in done.error.message
    assert "the workflow rejected the inputs" in done.error.message
