"""Offline builds end to end: requirement texts become validated services that answer new inputs correctly."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import grpc
import pytest
import structlog
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as wf_service_pb2
from typer.testing import CliRunner

from tdev_cli.main import app
from tdev_common.llm.offline.codegen import generate
from tdev_common.llm.offline.planner import plan
from tests.builder.conftest import (
    EXAMPLE_AGENTS,
    REQUIREMENTS,
    Builder,
    BuildState,
    Event,
    Mesh,
    Stage,
    assert_gapless,
    build,
    get_build,
    labels_once,
    of_type,
    plain,
    run_workflow,
    stage_events,
    watch,
)

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]
ALL_STAGES = [Stage.STAGE_ANALYSE, Stage.STAGE_IDENTIFY_AGENTS, Stage.STAGE_SELECT_OR_CREATE, Stage.STAGE_COMPOSE,
              Stage.STAGE_VALIDATE, Stage.STAGE_PACKAGE]

# Requirement file -> (fresh inputs never used during the build, the exact outputs, the agents' node ids)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], list[str]]] = {
    "word_frequency": (
        {"text": "Red fish, blue fish. One fish, two fish!"},
        {"word_count": 8, "unique_words": 5,
         "top_words": [{"word": "fish", "count": 4}, {"word": "blue", "count": 1}, {"word": "one", "count": 1}]},
        ["tokenize_words", "word_frequency"]),
    "number_summary": (
        {"numbers": [10, 2, 8, 4]},
        {"mean": 6, "median": 6, "min": 2, "max": 10, "stddev": 3.162278},
        ["statistics"]),
    "positive_sum_average": (
        {"numbers": [-5, 1, 2, 3.5]}, {"sum": 6.5, "mean": 2.166667}, ["filter_numbers", "statistics"]),
    "user_record_cleanup": (
        {"record": {"first_name": "Linus", "password": "x", "id": 7,
                    "team": {"name": "kernel", "lead": {"city": "Portland"}}}},
        {"record": {"firstName": "Linus", "id": 7, "team.name": "kernel", "team.lead.city": "Portland"}},
        ["rename_fields", "drop_fields", "flatten_record"]),
    "active_records_by_city": (
        {"records": [{"name": "A", "status": "active", "age": 30, "city": "Oslo"},
                     {"name": "B", "status": "inactive", "age": 20, "city": "Oslo"},
                     {"name": "C", "status": "active", "age": 25, "city": "Lima"},
                     {"name": "D", "status": "active", "age": 41, "city": "Oslo"}]},
        {"counts": {"Oslo": 2, "Lima": 1}},
        ["filter_records", "sort_records", "count_by_field"]),
    "replace_and_shout": (
        {"text": "my cat likes other cats"}, {"text": "MY DOG LIKES OTHER DOGS"}, ["replace_text", "change_case"]),
    "celsius_to_fahrenheit": (
        {"numbers": [25, -10, 36.6]}, {"numbers": [77, 14, 97.9]}, ["convert_temperature", "round_numbers"]),
    "csv_price_average": (
        {"text": "item,price\nA,10\nB,20.5\nC,30\n"}, {"mean": 20.166667}, ["parse_csv", "pluck_field", "statistics"]),
}


async def test_registry_agent_failing_the_spec_examples_is_not_reused(mesh: Mesh, builder: Builder) -> None:
    # First in the module, so sort_numbers is the only candidate: it sorts ascending unless told otherwise, so it
    # fits the schema of a descending sort but the spec's examples show it wrong; the builder generates instead.
    await mesh.register("sort_numbers", (EXAMPLE_AGENTS / "sort_numbers.py").read_text(),
                        "Sorts a list of numbers in ascending or descending order.")
    events = await build(builder.stub, "Order the numbers from largest to smallest")
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_SUCCEEDED
    (agent,) = done.package.agents
    assert not agent.reused and agent.agent_id == done.registered_agents[0].agent_id
    rejected = [e.message for e in of_type(events, Event.TYPE_STAGE_PROGRESS) if "does not fit" in e.message]
    assert rejected == ["sort_items: registry agent sort_numbers 1.0.0 does not fit: wrong_output: output "
                        "\"numbers\": expected [9, 6, 5, 4, 3, 2, 1, 1], got [1, 1, 2, 3, 4, 5, 6, 9]"]
    last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, {"numbers": [2, 11, -3, 7]})
    assert plain(last.output) == {"numbers": [11, 7, 2, -3]}


@pytest.mark.parametrize("name", list(CASES))
async def test_offline_build_gives_a_validated_service_that_answers_new_inputs(
        mesh: Mesh, builder: Builder, name: str) -> None:
    requirements = (REQUIREMENTS / f"{name}.txt").read_text().strip()
    fresh, expected, node_ids = CASES[name]
    events = await build(builder.stub, requirements, disable_reuse=True)  # independent of earlier builds
    assert_gapless(events)
    assert events[0].type == Event.TYPE_BUILD_STARTED
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    assert stage_events(events, Event.TYPE_STAGE_STARTED) == [(stage, 1) for stage in ALL_STAGES]
    assert stage_events(events, Event.TYPE_STAGE_SUCCEEDED) == [(stage, 1) for stage in ALL_STAGES]
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_SUCCEEDED
    assert done.last_sequence == events[-1].sequence
    assert [(s.stage, s.state, s.attempt) for s in done.stages] == [(stage, 2, 1) for stage in ALL_STAGES]
    assert all(s.summary and s.duration_ms > 0 for s in done.stages)
    package = done.package
    assert package.service_id == "svc_" + done.build_id.removeprefix("build_")
    assert package.workflow_version == "1.0.0"
    assert [a.node_id for a in package.agents] == node_ids
    assert all(not a.reused and a.fix_attempts == 0 and a.version == "1.0.0" for a in package.agents)
    assert sorted((a.agent_id, a.version) for a in done.registered_agents) == sorted(
        (a.agent_id, a.version) for a in package.agents)
    assert len(package.validation_report) >= 2 and all(case.passed for case in package.validation_report)
    assert sorted(plain(package.output_schema)["required"]) == sorted(expected)
    assert done.usage.calls == 2 + len(node_ids) and done.usage.cost_usd == 0
    assert list(done.usage.models) == ["offline/rule-planner (not a model)", "offline/template-library (not a model)"]
    assert 0 < package.build_seconds <= done.elapsed_seconds
    assert "grpcurl -plaintext -d '{\"inputs\": " in package.readme
    assert f"tdev workflows run {package.workflow_id} -i " in package.readme
    # The packaged workflow, run by the test through the workflow service on inputs the build never saw.
    assert not any(plain(case.inputs) == fresh for case in package.validation_report)
    last = await run_workflow(mesh.workflow_stub, package.workflow_id, fresh)
    assert last.type == wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED
    assert plain(last.output) == expected


async def test_registered_agents_carry_builder_labels_and_the_workflow_pins_them(mesh: Mesh, builder: Builder) -> None:
    events = await build(builder.stub, "Square each number", disable_reuse=True)
    done = await get_build(builder.stub, events[-1].build_id)
    (agent,) = done.package.agents
    stored = (await mesh.registry_stub.GetAgent(reg_pb2.GetAgentRequest(agent_id=agent.agent_id))).agent
    assert stored.name == f"transform_numbers.{done.build_id.removeprefix('build_')}"
    # Registered as unvalidated; labelled validated once the build has succeeded.
    assert await labels_once(mesh.registry_stub, agent.agent_id, "1.0.0", {"build_state": "validated"}) == {
        "origin": "builder", "build_id": done.build_id, "build_spec": "transform_numbers", "build_fix_attempt": "0",
        "build_state": "validated"}
    workflow = (await mesh.workflow_stub.GetWorkflow(
        wf_service_pb2.GetWorkflowRequest(workflow_id=done.package.workflow_id))).workflow
    assert [(n.id, n.agent_id, n.agent_version) for n in workflow.nodes] == [
        ("transform_numbers", agent.agent_id, "1.0.0")]
    assert dict(workflow.outputs) == {"numbers": "nodes.transform_numbers.output.numbers"}
    assert plain(workflow.metadata)["build_id"] == done.build_id
    last = await run_workflow(mesh.workflow_stub, workflow.workflow_id, {"numbers": [2, 1.5, -3]})
    assert plain(last.output) == {"numbers": [4, 2.25, 9]}


async def test_build_reuses_registry_agents_that_pass_the_spec_examples(mesh: Mesh, builder: Builder) -> None:
    requirements = "Keep only numbers greater than 10, then sort the numbers in ascending order"
    planned = plan(requirements)
    filter_spec = planned["agents"][0]
    team_filter = await mesh.register("team.keep_greater_than_10", generate(filter_spec)["code"],
                                      "Keeps the numbers greater than 10.")
    sorter = await mesh.register("sort_numbers", (EXAMPLE_AGENTS / "sort_numbers.py").read_text(),
                                 "Sorts a list of numbers in ascending or descending order.")
    events = await build(builder.stub, requirements)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    done = await get_build(builder.stub, events[-1].build_id)
    assert [(a.node_id, a.agent_id, a.version, a.reused) for a in done.package.agents] == [
        ("filter_numbers", team_filter.agent.agent_id, "1.0.0", True),
        ("sort_items", sorter.agent.agent_id, "1.0.0", True)]
    assert list(done.registered_agents) == []
    assert done.usage.calls == 2  # analysis and plan; no code was generated
    progress = [e.message for e in of_type(events, Event.TYPE_STAGE_PROGRESS)]
    assert ("filter_numbers: registry agent team.keep_greater_than_10 1.0.0 passed 3/3 examples in the sandbox; "
            "reusing it") in progress
    assert "sort_items: registry agent sort_numbers 1.0.0 passed 3/3 examples in the sandbox; reusing it" in progress
    mine = await mesh.registry_stub.ListAgents(
        reg_pb2.ListAgentsRequest(name_contains=done.build_id.removeprefix("build_")))
    assert list(mine.agents) == []
    last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, {"numbers": [40, 3, 11, 10, 25.5]})
    assert plain(last.output) == {"numbers": [11, 25.5, 40]}


async def test_only_versions_labelled_validated_by_their_build_are_reused(mesh: Mesh, builder: Builder) -> None:
    requirements = "Halve each number"
    first = await build(builder.stub, requirements, disable_reuse=True)
    done = await get_build(builder.stub, first[-1].build_id)
    (made,) = done.package.agents
    await labels_once(mesh.registry_stub, made.agent_id, made.version, {"build_state": "validated"})
    again = await build(builder.stub, requirements)
    reused = await get_build(builder.stub, again[-1].build_id)
    assert [(a.agent_id, a.version, a.reused) for a in reused.package.agents] == [(made.agent_id, "1.0.0", True)]
    assert list(reused.registered_agents) == []
    candidate = made
    for state in ("superseded", "failed", "cancelled"):
        # Label the only fitting agent as its build would have, once its own build's marking is done.
        await labels_once(mesh.registry_stub, candidate.agent_id, candidate.version, {"build_state": "validated"})
        await mesh.registry_stub.UpdateAgentLabels(reg_pb2.UpdateAgentLabelsRequest(
            agent_id=candidate.agent_id, version=candidate.version, set_labels={"build_state": state}))
        other = await get_build(builder.stub, (await build(builder.stub, requirements))[-1].build_id)
        (agent,) = other.package.agents
        assert not agent.reused and agent.agent_id != candidate.agent_id, state
        candidate = agent


async def test_watch_replays_from_any_sequence_without_gap_or_duplicate(builder: Builder) -> None:
    events = await build(builder.stub, "Extract all email addresses from a text")
    build_id = events[-1].build_id
    assert [e.SerializeToString() for e in await watch(builder.stub, build_id)] == [
        e.SerializeToString() for e in events]
    assert [e.sequence for e in await watch(builder.stub, build_id, 7)] == list(range(8, events[-1].sequence + 1))
    assert await watch(builder.stub, build_id, events[-1].sequence) == []


async def test_start_build_is_idempotent_per_request_id_and_watchable(builder: Builder) -> None:
    request = pb2.StartBuildRequest(requirements="Count the sentences and the words of a text",
                                    request_id="builder-test-idempotent-1")
    first = (await builder.stub.StartBuild(request)).build
    second = (await builder.stub.StartBuild(request)).build
    assert first.build_id == second.build_id and first.state == BuildState.STATE_PENDING
    events = await watch(builder.stub, first.build_id)
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    again = (await builder.stub.StartBuild(request)).build
    assert again.build_id == first.build_id and again.state == BuildState.STATE_SUCCEEDED


async def test_unsupported_requirements_fail_at_identify_with_what_is_supported(builder: Builder) -> None:
    events = await build(builder.stub, "Book me a flight to Paris")
    assert events[-1].type == Event.TYPE_BUILD_FAILED
    error = events[-1].error
    assert (error.code, error.stage) == ("FAILED_PRECONDITION", Stage.STAGE_IDENTIFY_AGENTS)
    assert error.message.startswith("identify agents: the offline provider (rules and templates, not a model) "
                                    "found no supported step in 'Book me a flight to Paris'. It understands: ")
    assert stage_events(events, Event.TYPE_STAGE_FAILED) == [(Stage.STAGE_IDENTIFY_AGENTS, 1)]
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_FAILED and done.error == error
    assert [(s.stage, s.state) for s in done.stages] == [(Stage.STAGE_ANALYSE, 2), (Stage.STAGE_IDENTIFY_AGENTS, 3)]


async def test_bad_requests_get_invalid_argument_and_unknown_builds_not_found(builder: Builder) -> None:
    async def code_of(call: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            result = call()
            if hasattr(result, "__aiter__"):
                async for _ in result:
                    pass
            else:
                await result
        return caught.value.code()

    stub = builder.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(lambda: stub.StartBuild(pb2.StartBuildRequest(requirements=""))) == invalid
    assert await code_of(lambda: stub.StartBuild(pb2.StartBuildRequest(requirements=" \n\t "))) == invalid
    assert await code_of(lambda: stub.StartBuild(pb2.StartBuildRequest(requirements="x" * 20_001))) == invalid
    assert await code_of(lambda: stub.BuildService(pb2.BuildServiceRequest(requirements=""))) == invalid
    negative = pb2.StartBuildRequest(requirements="Sort the numbers")
    negative.constraints.max_cost_usd = -1
    assert await code_of(lambda: stub.StartBuild(negative)) == invalid
    many = pb2.StartBuildRequest(requirements="Sort the numbers")
    many.constraints.max_fix_attempts = 11
    assert await code_of(lambda: stub.StartBuild(many)) == invalid
    assert await code_of(lambda: stub.ListBuilds(pb2.ListBuildsRequest(page_token="not-a-token"))) == invalid
    backwards = pb2.WatchBuildRequest(build_id="build_x", after_sequence=-1)
    assert await code_of(lambda: stub.WatchBuild(backwards)) == invalid
    missing = grpc.StatusCode.NOT_FOUND
    assert await code_of(lambda: stub.GetBuild(pb2.GetBuildRequest(build_id="build_000000000000"))) == missing
    assert await code_of(lambda: stub.WatchBuild(pb2.WatchBuildRequest(build_id="build_000000000000"))) == missing
    assert await code_of(lambda: stub.CancelBuild(pb2.CancelBuildRequest(build_id="build_000000000000"))) == missing
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartBuild(pb2.StartBuildRequest(requirements="x" * 20_001))
    assert caught.value.details() == "requirements: 20001 characters; the limit is 20000"


async def test_list_builds_pages_newest_first_and_filters_by_state(builder: Builder) -> None:
    listed: list[Any] = []
    token = ""
    while True:
        page = await builder.stub.ListBuilds(pb2.ListBuildsRequest(page_size=3, page_token=token))
        assert len(page.builds) <= 3
        listed.extend(page.builds)
        token = page.next_page_token
        if not token:
            break
    times = [(b.create_time.ToNanoseconds(), b.build_id) for b in listed]
    assert times == sorted(times, reverse=True) and len(set(times)) == len(times) >= 10
    failed = await builder.stub.ListBuilds(pb2.ListBuildsRequest(state=BuildState.STATE_FAILED))
    assert {b.build_id for b in failed.builds} == {b.build_id for b in listed if b.state == BuildState.STATE_FAILED}
    assert len(failed.builds) >= 1


async def test_cancel_of_an_ended_build_is_a_failed_precondition(builder: Builder) -> None:
    events = await build(builder.stub, "Sort the numbers in ascending order")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await builder.stub.CancelBuild(pb2.CancelBuildRequest(build_id=events[-1].build_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_concurrent_builds_each_succeed(builder: Builder) -> None:
    texts = ["Double each number", "Reverse the words of the text", "Convert the text to title case"]
    results = await asyncio.gather(*(build(builder.stub, text) for text in texts))
    assert [events[-1].type for events in results] == [Event.TYPE_BUILD_SUCCEEDED] * 3
    for events in results:
        assert_gapless(events)


async def _tdev(builder: Builder, *args: str) -> tuple[int, str]:
    """Runs the CLI in a thread (it runs its own event loop) while the servers keep serving on ours; server logs
    go to stderr meanwhile so that they stay out of the CLI's output. A failure gives what the CLI's stderr says
    before the request id."""
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
    if result.exit_code == 0:
        return result.exit_code, result.stdout
    assert result.stdout == "", result.stdout  # errors go to stderr only
    return result.exit_code, result.stderr.strip().split("\nrequest id ")[0]


async def test_cli_build_follow_then_show_list_and_readme(builder: Builder) -> None:
    code, out = await _tdev(builder, "build", "Compute the median of the numbers", "--follow", "--no-reuse")
    assert code == 0, out
    build_id = out.split()[1]
    assert out.startswith(f"build {build_id} accepted\n")
    for stage in ("analyse", "identify agents", "select or create", "compose", "validate", "package"):
        assert stage in out
    assert f"succeeded service svc_{build_id.removeprefix('build_')}: workflow wf_" in out
    assert "validation: 3/3 cases passed" in out
    assert f"README: tdev builds show {build_id} --readme" in out
    code, shown = await _tdev(builder, "builds", "show", build_id)
    assert code == 0 and shown.startswith(f"build {build_id} succeeded: Compute the median of the numbers")
    code, readme = await _tdev(builder, "builds", "show", build_id, "--readme")
    assert code == 0 and "grpcurl -plaintext -d" in readme and "tdev workflows run wf_" in readme
    code, listed = await _tdev(builder, "builds", "list", "--limit", "3")
    assert code == 0 and build_id in listed
    code, raw = await _tdev(builder, "builds", "watch", build_id, "--after", "10")
    assert code == 0 and "build_succeeded [package] build succeeded" in raw
    code, missing = await _tdev(builder, "builds", "show", "build_000000000000")
    assert (code, missing.strip()) == (1, 'error NOT_FOUND: build "build_000000000000" does not exist')


async def test_embedded_builder_on_sqlite_builds_concurrently(mesh: Mesh) -> None:
    sqlite = await mesh.start_builder(database_url=f"sqlite+aiosqlite:///{mesh.tmp_path / 'builder.sqlite'}")
    texts = ["Keep only the even numbers, then compute the sum", "Slugify the text"]
    results = await asyncio.gather(*(build(sqlite.stub, text, disable_reuse=True) for text in texts))
    for events in results:
        assert_gapless(events)
        assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    evens = await get_build(sqlite.stub, results[0][-1].build_id)
    last = await run_workflow(mesh.workflow_stub, evens.package.workflow_id, {"numbers": [1, 2, 3, 4, 10]})
    assert plain(last.output) == {"sum": 16}
    slug = await get_build(sqlite.stub, results[1][-1].build_id)
    last = await run_workflow(mesh.workflow_stub, slug.package.workflow_id, {"text": "Hello, World: T-Developer!"})
    assert plain(last.output) == {"slug": "hello-world-t-developer"}
