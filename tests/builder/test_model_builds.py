"""Builds against a model stand-in (the real openai SDK over HTTP): fixes, budgets, cancel, restart, outages."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from tdev.builder.v1 import build_pb2
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc
from tdev.registry.v1 import registry_service_pb2 as reg_pb2

from builder_svc.repository import SqlRepository
from tdev_common.db import create_engine
from tdev_common.llm import LLMClient
from tdev_common.llm.offline.codegen import generate
from tests.builder.conftest import (
    ROOT,
    STAND_IN_KEY,
    STAND_IN_PRICE,
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
    stand_in_llm,
    struct,
    watch,
)
from tests.builder.model_standin import ModelStandIn, Script, broken, offline_answer
from tests.support.netproxy import tcp_proxy

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]
SORT_DESCENDING = "Sort the numbers in descending order"
CALL_COST = (100 * 1.0 + 50 * 2.0) / 1_000_000  # default stand-in usage at the test price

TRUNCATING_SORTER = '''"""Sorts numbers: a draft that keeps only the first eight."""


class NumberSorter:
    """Sorts a list of numbers in ascending order."""

    def execute(self, inputs: dict) -> dict:
        """The sorted numbers."""
        return {"numbers": sorted(inputs["numbers"])[:8]}

    def get_capabilities(self) -> dict:
        """Name and schemas."""
        schema = {"type": "object", "required": ["numbers"], "properties": {"numbers": {"type": "array"}}}
        return {"name": "NumberSorter", "description": "Sorts numbers.", "input_schema": schema,
                "output_schema": schema}
'''


@pytest.fixture
def stand_in() -> Iterator[ModelStandIn]:
    """A started model stand-in; tests set its script."""
    server = ModelStandIn().start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def model(stand_in: ModelStandIn, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LLMClient]:
    """tdev_common.llm with the OpenAI provider at the stand-in's base URL and a dummy key (no offline fallback)."""
    monkeypatch.setenv("OPENAI_API_KEY", STAND_IN_KEY)
    client = await stand_in_llm(stand_in.url)
    yield client
    await client.close()


def codegen_broken(payload: dict[str, Any], index: int) -> dict[str, Any]:
    """Code generation answering code whose execute raises."""
    answer = generate(payload["spec"])
    return {**answer, "code": broken(answer["code"], 1)}


def repair_fixing_on(attempt: int) -> Any:
    """Repairs that stay broken until the given (1-based) attempt, which returns working code."""
    def answer(payload: dict[str, Any], index: int) -> dict[str, Any]:
        correct = generate(payload["spec"])["code"]
        if index + 1 >= attempt:
            return {"code": correct, "changed": True, "diagnosis": "execute raised; implemented it", "fixes": [
                {"kind": "implementation", "description": "implemented execute"}]}
        return {"code": broken(correct, index + 2), "changed": True, "diagnosis": "tried again",
                "fixes": [{"kind": "edit", "description": "rewrote execute"}]}
    return answer


async def test_fix_loop_converges_and_each_fix_keeps_its_lineage(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(answers={"codegen": codegen_broken, "repair": repair_fixing_on(2)})
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, SORT_DESCENDING, disable_reuse=True)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    done = await get_build(builder.stub, events[-1].build_id)
    (agent,) = done.package.agents
    assert (agent.version, agent.fix_attempts, agent.reused) == ("1.2.0", 2, False)
    assert [(a.agent_id, a.version, a.fix_attempts) for a in done.registered_agents] == [
        (agent.agent_id, "1.0.0", 0), (agent.agent_id, "1.1.0", 1), (agent.agent_id, "1.2.0", 2)]
    # The packaged version is labelled validated; the drafts its fixes replaced, superseded (never reused).
    marks = [await labels_once(mesh.registry_stub, agent.agent_id, version, {"build_state": state})
             for version, state in (("1.0.0", "superseded"), ("1.1.0", "superseded"), ("1.2.0", "validated"))]
    assert [m["build_fix_attempt"] for m in marks] == ["0", "1", "2"]
    lineage = await mesh.registry_stub.GetAgentLineage(
        reg_pb2.GetAgentLineageRequest(agent_id=agent.agent_id, version="1.2.0"))
    assert sorted((e.child.version, e.parent.version) for e in lineage.edges) == [("1.1.0", "1.0.0"),
                                                                                ("1.2.0", "1.1.0")]
    progress = [e.message for e in of_type(events, Event.TYPE_STAGE_PROGRESS)]
    name = f"sort_items.{done.build_id.removeprefix('build_')}"
    assert progress == [
        "sort_items: generated NumberSorter with openai/test-model",
        f"sort_items: registered {name} 1.0.0",
        f"sort_items: {name} 1.0.0 failed its examples (0/3 passed): RuntimeError: draft 1: execute is not "
        "implemented",
        "sort_items: asking for a fix (attempt 1 of 3)",
        "sort_items: openai/test-model proposed a fix: tried again",
        f"sort_items: registered {name} 1.1.0 (parent {agent.agent_id} 1.0.0)",
        f"sort_items: {name} 1.1.0 failed its examples (0/3 passed): RuntimeError: draft 2: execute is not "
        "implemented",
        "sort_items: asking for a fix (attempt 2 of 3)",
        "sort_items: openai/test-model proposed a fix: execute raised; implemented it",
        f"sort_items: registered {name} 1.2.0 (parent {agent.agent_id} 1.1.0)",
        f"sort_items: {name} 1.2.0 passed 3/3 examples in the sandbox",
        f"sort_items: ready {name} 1.2.0",
    ]
    first_repair = next(payload for purpose, payload in stand_in.requests if purpose == "repair")
    assert first_repair["failure"]["kind"] == "exception"
    assert first_repair["failure"]["exception_type"] == "RuntimeError"
    assert first_repair["failure"]["input"] == {"numbers": [3, 1, 4, 1, 5, 9, 2, 6]}
    assert 'raise RuntimeError("draft 1: execute is not implemented")' in first_repair["failure"]["traceback"]
    assert [purpose for purpose, _ in stand_in.requests] == ["analyse", "plan", "codegen", "repair", "repair"]
    usage = done.usage
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (5, 500, 250)
    assert usage.cost_usd == pytest.approx(5 * CALL_COST, rel=1e-9)
    assert list(usage.models) == ["openai/test-model"]
    select = next(s for s in done.stages if s.stage == Stage.STAGE_SELECT_OR_CREATE)
    assert (select.usage.calls, select.usage.input_tokens) == (3, 300)
    last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, {"numbers": [0.5, 3, -1]})
    assert plain(last.output) == {"numbers": [3, 0.5, -1]}


async def test_agent_never_fixed_fails_the_build_within_its_attempt_budget(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(answers={"codegen": codegen_broken, "repair": repair_fixing_on(99)})
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, SORT_DESCENDING, disable_reuse=True, max_fix_attempts=2)
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_BUILD_FAILED
    error = events[-1].error
    assert (error.code, error.stage) == ("FAILED_PRECONDITION", Stage.STAGE_SELECT_OR_CREATE)
    assert error.message == "agent sort_items still fails after 2 fix attempts: RuntimeError: draft 3: execute is " \
                            "not implemented"
    assert stand_in.count("repair") == 2
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_FAILED
    assert [a.version for a in done.registered_agents] == ["1.0.0", "1.1.0", "1.2.0"]
    assert [a["version"] for a in plain(events[-1].details)["registered_agents"]] == ["1.0.0", "1.1.0", "1.2.0"]
    assert stage_events(events, Event.TYPE_STAGE_FAILED) == [(Stage.STAGE_SELECT_OR_CREATE, 1)]
    assert done.stages[-1].state == build_pb2.StageResult.STATE_FAILED
    assert not done.HasField("package")
    for registered in done.registered_agents:
        labels = await labels_once(mesh.registry_stub, registered.agent_id, registered.version,
                                   {"build_state": "failed"})
        assert (labels["build_error"], labels["build_error_stage"]) == ("FAILED_PRECONDITION", "select_or_create")


async def test_token_budget_exhaustion_fails_the_build_and_lists_what_it_registered(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    # The code generation reports 15,000 tokens, so the repair that follows cannot be reserved in 20,000.
    stand_in.script = Script(answers={"codegen": codegen_broken}, usage={"codegen": (1000, 14_000)})
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, SORT_DESCENDING, disable_reuse=True, max_tokens=20_000)
    assert events[-1].type == Event.TYPE_BUILD_FAILED
    error = events[-1].error
    assert (error.code, error.stage) == ("RESOURCE_EXHAUSTED", Stage.STAGE_SELECT_OR_CREATE)
    assert error.message.startswith(f"select or create: LLM budget 'build {events[-1].build_id}' exhausted: "
                                    "a openai/test-model call for code_repair (max_tokens=4000) may use up to ")
    assert error.message.endswith("tokens but only 4700 of 20000 are left")
    assert [purpose for purpose, _ in stand_in.requests] == ["analyse", "plan", "codegen"]
    done = await get_build(builder.stub, events[-1].build_id)
    assert (done.usage.calls, done.usage.input_tokens, done.usage.output_tokens) == (3, 1200, 14_100)
    (registered,) = done.registered_agents
    details = plain(events[-1].details)
    assert details["registered_agents"] == [{"spec_name": "NumberSorter", "agent_id": registered.agent_id,
                                             "version": "1.0.0", "reused": False, "fix_attempts": 0,
                                             "node_id": "sort_items"}]
    assert details["note"] == (f"These agent versions were registered by this failed build (registry label "
                               f"build_id={done.build_id}); they were not validated as a service and are labelled "
                               "build_state=failed, build_error=RESOURCE_EXHAUSTED in the registry.")
    labels = await labels_once(mesh.registry_stub, registered.agent_id, "1.0.0", {"build_state": "failed"})
    assert labels == {"origin": "builder", "build_id": done.build_id, "build_spec": "sort_items",
                      "build_fix_attempt": "0", "build_state": "failed", "build_error": "RESOURCE_EXHAUSTED",
                      "build_error_stage": "select_or_create"}


async def test_cost_budget_too_small_for_the_first_call_fails_before_anything_is_sent(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, SORT_DESCENDING, max_cost_usd=0.001)
    error = events[-1].error
    assert (events[-1].type, error.code, error.stage) == (Event.TYPE_BUILD_FAILED, "RESOURCE_EXHAUSTED",
                                                          Stage.STAGE_ANALYSE)
    assert error.message.startswith(f"analyse: LLM budget 'build {events[-1].build_id}' exhausted: a "
                                    "openai/test-model call for requirements (max_tokens=4000) may cost up to $")
    assert error.message.endswith("but only $0.001000 of $0.0010 is left")
    assert stand_in.requests == []
    done = await get_build(builder.stub, events[-1].build_id)
    assert (done.usage.calls, done.usage.cost_usd, list(done.registered_agents)) == (0, 0.0, [])


async def test_time_budget_ends_the_build_failed_with_resource_exhausted(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(delays={"plan": 5.0})
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, SORT_DESCENDING, max_duration_seconds=1.5)
    assert_gapless(events)
    error = events[-1].error
    assert (events[-1].type, error.code, error.stage, error.message) == (
        Event.TYPE_BUILD_FAILED, "RESOURCE_EXHAUSTED", Stage.STAGE_IDENTIFY_AGENTS,
        "time budget of 1.5 s used up during identify agents")
    assert stage_events(events, Event.TYPE_STAGE_FAILED) == [(Stage.STAGE_IDENTIFY_AGENTS, 1)]
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state == BuildState.STATE_FAILED and 1.5 <= done.elapsed_seconds < 2.5
    assert done.usage.calls == 1  # the analysis; the plan call was abandoned unanswered


async def _events_until(stub: Any, build_id: str, stop: Any) -> list[build_pb2.BuildEvent]:
    """Watches until an event matches ``stop``, then leaves the stream."""
    seen = []
    call = stub.WatchBuild(pb2.WatchBuildRequest(build_id=build_id))
    async for response in call:
        seen.append(response.event)
        if stop(response.event):
            call.cancel()
            break
    return seen


def _select_started(event: build_pb2.BuildEvent) -> bool:
    return event.type == Event.TYPE_STAGE_STARTED and event.stage == Stage.STAGE_SELECT_OR_CREATE


async def test_cancel_ends_a_running_build_at_once_and_for_good(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(delays={"codegen": 5.0})
    builder = await mesh.start_builder(llm=model)
    started = (await builder.stub.StartBuild(pb2.StartBuildRequest(
        requirements=SORT_DESCENDING, constraints=build_pb2.BuildConstraints(disable_reuse=True)))).build
    watcher = asyncio.create_task(watch(builder.stub, started.build_id))
    await _events_until(builder.stub, started.build_id, _select_started)
    assert await asyncio.to_thread(stand_in.wait_for, "codegen")  # cancel while that call is in flight
    cancelled = (await builder.stub.CancelBuild(
        pb2.CancelBuildRequest(build_id=started.build_id, reason="changed my mind"))).build
    assert cancelled.state == BuildState.STATE_CANCELLED
    assert (cancelled.error.code, cancelled.error.message, cancelled.error.stage) == (
        "CANCELLED", "cancelled: changed my mind", Stage.STAGE_SELECT_OR_CREATE)
    events = await asyncio.wait_for(watcher, 5)
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_BUILD_CANCELLED and events[-1].sequence == cancelled.last_sequence
    assert stage_events(events, Event.TYPE_STAGE_SUCCEEDED) == [(Stage.STAGE_ANALYSE, 1),
                                                                (Stage.STAGE_IDENTIFY_AGENTS, 1)]
    await asyncio.sleep(0.5)
    after = await get_build(builder.stub, started.build_id)
    assert after.last_sequence == cancelled.last_sequence and after.state == BuildState.STATE_CANCELLED
    assert [(s.stage, s.state) for s in after.stages][-1] == (Stage.STAGE_SELECT_OR_CREATE,
                                                              build_pb2.StageResult.STATE_FAILED)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await builder.stub.CancelBuild(pb2.CancelBuildRequest(build_id=started.build_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stand_in.count("codegen") == 1 and stand_in.count("repair") == 0


async def test_cancel_labels_every_version_the_build_registered_cancelled(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(answers={"codegen": codegen_broken}, delays={"repair": 5.0})
    builder = await mesh.start_builder(llm=model)
    started = (await builder.stub.StartBuild(pb2.StartBuildRequest(
        requirements=SORT_DESCENDING, constraints=build_pb2.BuildConstraints(disable_reuse=True)))).build
    assert await asyncio.to_thread(stand_in.wait_for, "repair")  # 1.0.0 is registered and failed its examples
    suffix = started.build_id.removeprefix("build_")
    # As if the run had registered a version and been stopped before recording it: found by its build_id label.
    late = (await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(
        name=f"late.{suffix}", code=TRUNCATING_SORTER, labels={
            "origin": "builder", "build_id": started.build_id, "build_state": "unvalidated"}))).agent
    # A name that merely contains the suffix, without this build's label, is someone else's and stays as it is.
    other = (await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(
        name=f"other.{suffix}", code=TRUNCATING_SORTER, labels={"origin": "team"}))).agent
    cancelled = (await builder.stub.CancelBuild(pb2.CancelBuildRequest(build_id=started.build_id))).build
    assert cancelled.state == BuildState.STATE_CANCELLED
    (registered,) = cancelled.registered_agents
    expected = {"build_state": "cancelled", "build_error": "CANCELLED", "build_error_stage": "select_or_create"}
    labels = await labels_once(mesh.registry_stub, registered.agent_id, "1.0.0", expected)
    assert labels == {"origin": "builder", "build_id": started.build_id, "build_spec": "sort_items",
                      "build_fix_attempt": "0", **expected}
    assert await labels_once(mesh.registry_stub, late.agent_id, "1.0.0", expected) == {
        "origin": "builder", "build_id": started.build_id, **expected}
    stored = await mesh.registry_stub.GetAgent(reg_pb2.GetAgentRequest(agent_id=other.agent_id, exclude_code=True))
    assert dict(stored.agent.labels) == {"origin": "team"}


async def test_a_version_registered_after_a_cancel_is_labelled_once_the_fenced_run_stops(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(answers={"codegen": codegen_broken}, delays={"repair": 2.0})
    # The running replica renews its lease rarely, so it learns of the cancel only at its next write.
    runner = await mesh.start_builder(llm=model, lease_seconds=30.0)
    started = (await runner.stub.StartBuild(pb2.StartBuildRequest(
        requirements=SORT_DESCENDING, constraints=build_pb2.BuildConstraints(disable_reuse=True)))).build
    assert await asyncio.to_thread(stand_in.wait_for, "repair")
    other = await mesh.start_builder(database_url=runner.database_url, llm=model)
    cancelled = (await other.stub.CancelBuild(pb2.CancelBuildRequest(build_id=started.build_id))).build
    (first,) = cancelled.registered_agents
    expected = {"build_state": "cancelled", "build_error": "CANCELLED", "build_error_stage": "select_or_create"}
    await labels_once(mesh.registry_stub, first.agent_id, "1.0.0", expected)  # the first pass, by the other replica
    # What a run still going elsewhere may do before its next write is refused: register a version, unrecorded.
    late = (await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(
        name=f"late.{started.build_id.removeprefix('build_')}", code=TRUNCATING_SORTER,
        labels={"origin": "builder", "build_id": started.build_id, "build_state": "unvalidated"}))).agent
    # When the repair answers, the run's write is refused; its replica has the build's versions marked once more.
    labels = await labels_once(mesh.registry_stub, late.agent_id, "1.0.0", expected, timeout=15.0)
    assert labels["build_id"] == started.build_id
    after = await get_build(other.stub, started.build_id)
    assert [a.version for a in after.registered_agents] == ["1.0.0"]
    assert after.last_sequence == cancelled.last_sequence


async def test_registry_down_when_a_build_ends_keeps_it_failed_and_labels_its_versions_once_back(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(answers={"codegen": codegen_broken}, delays={"repair": 2.0})
    async with tcp_proxy(mesh.registry.port) as (port, cut):
        builder = await mesh.start_builder(llm=model, common=mesh.common(registry_address=f"127.0.0.1:{port}"),
                                           label_retry_max_seconds=0.5)
        started = (await builder.stub.StartBuild(pb2.StartBuildRequest(
            requirements=SORT_DESCENDING, constraints=build_pb2.BuildConstraints(disable_reuse=True)))).build
        assert await asyncio.to_thread(stand_in.wait_for, "repair")
        cut.set()  # the registry goes down while the repair is being written: registering it fails the build
        events = await watch(builder.stub, started.build_id)
        error = events[-1].error
        assert (events[-1].type, error.code, error.stage) == (Event.TYPE_BUILD_FAILED, "UNAVAILABLE",
                                                              Stage.STAGE_SELECT_OR_CREATE)
        (registered,) = (await get_build(builder.stub, started.build_id)).registered_agents
        engine = create_engine(builder.database_url, "builder")
        repository = SqlRepository(engine)
        await asyncio.sleep(1.5)  # several marking attempts fail meanwhile
        during = await repository.get_build(started.build_id)
        assert during is not None and (during.state, during.marking) == (BuildState.STATE_FAILED, "pending")
        stored = await mesh.registry_stub.GetAgent(reg_pb2.GetAgentRequest(
            agent_id=registered.agent_id, version="1.0.0", exclude_code=True))
        assert stored.agent.labels["build_state"] == "unvalidated"
        cut.clear()  # the registry is back: the next attempt labels the version
        labels = await labels_once(mesh.registry_stub, registered.agent_id, "1.0.0", {"build_state": "failed"},
                                   timeout=30.0)
        assert (labels["build_error"], labels["build_error_stage"]) == ("UNAVAILABLE", "select_or_create")
        for _ in range(100):  # the job is recorded done just after the registry took the labels
            after = await repository.get_build(started.build_id)
            assert after is not None and after.state == BuildState.STATE_FAILED
            if after.marking == "done":
                break
            await asyncio.sleep(0.05)
        assert after.marking == "done"
        assert (await get_build(builder.stub, started.build_id)).last_sequence == events[-1].sequence
        await engine.dispose()


async def test_restart_mid_build_resumes_without_redoing_finished_stages(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    stand_in.script = Script(delays={"codegen": 1.5})
    first = await mesh.start_builder(llm=model)
    started = (await first.stub.StartBuild(pb2.StartBuildRequest(
        requirements=SORT_DESCENDING, constraints=build_pb2.BuildConstraints(disable_reuse=True)))).build
    before = await _events_until(first.stub, started.build_id, _select_started)
    await first.close()  # cancels the run mid code generation and gives the build back
    second = await mesh.start_builder(database_url=first.database_url, llm=model)
    after = await watch(second.stub, started.build_id, before[-1].sequence)
    events = before + after
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    assert [e.type for e in after][:2] == [Event.TYPE_BUILD_RESUMED, Event.TYPE_STAGE_STARTED]
    assert after[0].message == "build resumed after a restart; finished stages are not run again " \
                               "(analyse:1, identify_agents:1)"
    assert after[1].message == "select or create started again: it had not finished before the restart"
    assert stage_events(events, Event.TYPE_STAGE_SUCCEEDED) == [
        (stage, 1) for stage in (Stage.STAGE_ANALYSE, Stage.STAGE_IDENTIFY_AGENTS, Stage.STAGE_SELECT_OR_CREATE,
                                 Stage.STAGE_COMPOSE, Stage.STAGE_VALIDATE, Stage.STAGE_PACKAGE)]
    assert [purpose for purpose, _ in stand_in.requests] == ["analyse", "plan", "codegen", "codegen"]
    done = await get_build(second.stub, started.build_id)
    assert [(s.stage, s.attempt) for s in done.stages] == [(stage, 1) for stage in range(1, 7)]
    assert done.usage.calls == 3  # the interrupted call was never answered, so it is not counted
    assert len(done.registered_agents) == 1
    (agent,) = done.package.agents
    await labels_once(mesh.registry_stub, agent.agent_id, agent.version, {"build_state": "validated"})
    last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, {"numbers": [1, 2, 3]})
    assert plain(last.output) == {"numbers": [3, 2, 1]}


async def test_validation_failure_sends_the_responsible_agent_back_to_fixing(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    requirements = "Sort the numbers in ascending order"

    def plan_with_a_long_list(payload: dict[str, Any], index: int) -> dict[str, Any]:
        answer = offline_answer("plan", payload)
        answer["examples"].append({"input": {"numbers": list(range(9, -1, -1))},
                                   "expected_output": {"numbers": list(range(10))}})
        return answer

    stand_in.script = Script(answers={
        "plan": plan_with_a_long_list,
        "codegen": lambda payload, index: {"code": TRUNCATING_SORTER, "class_name": "NumberSorter"},
        "repair": repair_fixing_on(1)})
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, requirements, disable_reuse=True)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    assert stage_events(events, Event.TYPE_STAGE_FAILED) == [(Stage.STAGE_VALIDATE, 1)]
    assert stage_events(events, Event.TYPE_STAGE_SUCCEEDED) == [
        (Stage.STAGE_ANALYSE, 1), (Stage.STAGE_IDENTIFY_AGENTS, 1), (Stage.STAGE_SELECT_OR_CREATE, 1),
        (Stage.STAGE_COMPOSE, 1), (Stage.STAGE_SELECT_OR_CREATE, 2), (Stage.STAGE_COMPOSE, 2),
        (Stage.STAGE_VALIDATE, 2), (Stage.STAGE_PACKAGE, 1)]
    failed = of_type(events, Event.TYPE_STAGE_FAILED)[0]
    assert failed.message == ('1/4 cases failed (case 4: output "numbers": expected [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], '
                              'got [0, 1, 2, 3, 4, 5, 6, 7]); going back to fix sort_items')
    repair = next(payload for purpose, payload in stand_in.requests if purpose == "repair")
    assert repair["code"] == TRUNCATING_SORTER
    assert repair["failure"] == {"kind": "wrong_output", "message": 'output "numbers": expected [0, 1, 2, 3, 4, '
                                 '5, 6, 7, 8, 9], got [0, 1, 2, 3, 4, 5, 6, 7]',
                                 "input": {"numbers": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]},
                                 "expected_output": {"numbers": list(range(10))},
                                 "actual_output": {"numbers": list(range(8))}}
    done = await get_build(builder.stub, events[-1].build_id)
    (agent,) = done.package.agents
    assert (done.package.workflow_version, agent.version, agent.fix_attempts) == ("1.1.0", "1.1.0", 1)
    assert [case.passed for case in done.package.validation_report] == [True] * 4
    last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, {"numbers": [5, 3, 9, 1, 7, 2, 8, 6, 4]})
    assert plain(last.output) == {"numbers": [1, 2, 3, 4, 5, 6, 7, 8, 9]}


async def test_model_sees_the_acceptance_cases_when_planning_and_the_failing_ones_when_fixing(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    long_list = build_pb2.AcceptanceCase(name="ten numbers", inputs=struct({"numbers": list(range(9, -1, -1))}),
                                         expected=struct({"numbers": list(range(10))}))
    stand_in.script = Script(answers={
        "codegen": lambda payload, index: {"code": TRUNCATING_SORTER, "class_name": "NumberSorter"},
        "repair": repair_fixing_on(1)})
    builder = await mesh.start_builder(llm=model)
    events = await build(builder.stub, "Sort the numbers in ascending order", disable_reuse=True,
                         acceptance_cases=[long_list])
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED, events[-1].message
    plan_request = next(payload for purpose, payload in stand_in.requests if purpose == "plan")
    assert plan_request["acceptance_cases"] == [{"inputs": {"numbers": list(range(9, -1, -1))},
                                                 "expected": {"numbers": list(range(10))}, "comparison": "exact",
                                                 "name": "ten numbers"}]
    repair = next(payload for purpose, payload in stand_in.requests if purpose == "repair")
    assert repair["failure"]["message"].startswith("acceptance case 1 (ten numbers): ")
    (shown,) = repair["spec"]["failing_acceptance_cases"]
    assert shown["case"] == "acceptance case 1 (ten numbers)"
    assert (shown["inputs"], shown["expected"]) == ({"numbers": list(range(9, -1, -1))},
                                                    {"numbers": list(range(10))})
    assert shown["actual"] == {"numbers": list(range(8))} and shown["comparison"] == "exact"
    done = await get_build(builder.stub, events[-1].build_id)
    assert done.state_detail.startswith("validated on 1 acceptance case (all passed)")


@pytest.mark.parametrize("down", ["registry", "workflow"])
async def test_a_dependency_down_fails_the_build_unavailable_at_the_stage_needing_it(
        mesh: Mesh, down: str) -> None:
    common = mesh.common(**{f"{down}_address": "127.0.0.1:1"})
    builder: Builder = await mesh.start_builder(common=common)
    events = await build(builder.stub, "Double each number")
    assert events[-1].type == Event.TYPE_BUILD_FAILED
    error = events[-1].error
    stage = Stage.STAGE_IDENTIFY_AGENTS if down == "registry" else Stage.STAGE_COMPOSE
    prefix = ("identify agents: registry SearchAgents" if down == "registry" else "compose: workflow CreateWorkflow")
    assert (error.code, error.stage) == ("UNAVAILABLE", stage)
    assert error.message.startswith(f"{prefix}: dependency unavailable (UNAVAILABLE): ")
    done = await get_build(builder.stub, events[-1].build_id)
    assert len(done.registered_agents) == (0 if down == "registry" else 1)


class BuilderProcess:
    """``python -m builder_svc`` configured through the environment, on a fixed port, killable with -9."""

    def __init__(self, mesh: Mesh, stand_in: ModelStandIn, database_url: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        common = mesh.common()
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("TDEV_", "OPENAI_"))}
        self.env.update({
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}", "TDEV_DATA_DIR": str(mesh.tmp_path / "data"),
            "TDEV_LOG_LEVEL": "INFO", "TDEV_REGISTRY_ADDRESS": common.registry_address,
            "TDEV_WORKFLOW_ADDRESS": common.workflow_address, "TDEV_BUILDER_PORT": str(self.port),
            "TDEV_BUILDER_DATABASE_URL": database_url, "TDEV_BUILDER_WORKER_ID": "builder-crash-test",
            "TDEV_BUILDER_CLAIM_INTERVAL_SECONDS": "0.2", "TDEV_BUILDER_LEASE_SECONDS": "30",
            "OPENAI_API_KEY": STAND_IN_KEY, "TDEV_LLM_OPENAI_BASE_URL": stand_in.url,
            "TDEV_LLM_OPENAI_MODEL": "test-model", "TDEV_LLM_ANTHROPIC_ENABLED": "false", "TDEV_LLM_ROUTES": "{}",
            "TDEV_LLM_DEFAULT_ROUTE": '["openai"]', "TDEV_LLM_CACHE_ENABLED": "false", "TDEV_LLM_MAX_ATTEMPTS": "1",
            "TDEV_LLM_PRICES": json.dumps({"openai:test-model": STAND_IN_PRICE.model_dump()}),
        })
        self.process: subprocess.Popen[bytes] | None = None
        self.log_dir = mesh.tmp_path
        self.logs: list[Any] = []
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb2_grpc.BuilderServiceStub(self.channel)

    def spawn(self) -> None:
        """Starts the process, its output going to a log file next to the mesh's data."""
        self.log = (self.log_dir / f"builder-{self.port}-{len(self.logs)}.log").open("wb")
        self.logs.append(self.log)
        self.process = subprocess.Popen([sys.executable, "-m", "builder_svc"], cwd=ROOT, env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        """Starts the process and waits until it answers."""
        self.spawn()
        for _ in range(300):
            try:
                await self.stub.GetBuild(pb2.GetBuildRequest(build_id="build_probe"), timeout=1)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError("the builder process did not start")

    def kill(self) -> None:
        """kill -9."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    async def close(self) -> None:
        """Stops the process if it runs."""
        await self.channel.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)
        for log in self.logs:
            log.close()


async def test_kill_9_mid_build_then_restart_resumes_from_the_last_finished_stage(
        mesh: Mesh, stand_in: ModelStandIn) -> None:
    stand_in.script = Script(delays={"codegen": 1.0})
    service = BuilderProcess(mesh, stand_in, await mesh.new_database())
    try:
        await service.start()
        started = (await service.stub.StartBuild(pb2.StartBuildRequest(
            requirements=SORT_DESCENDING, constraints=build_pb2.BuildConstraints(disable_reuse=True)))).build
        before = await _events_until(service.stub, started.build_id, _select_started)
        assert await asyncio.to_thread(stand_in.wait_for, "codegen")
        service.kill()  # mid code generation: no lease is given back
        await service.start()  # the same worker id takes its build back at once (the lease has 30 s left)
        after = await watch(service.stub, started.build_id, before[-1].sequence)
        (agent,) = (await get_build(service.stub, started.build_id)).package.agents
        await labels_once(mesh.registry_stub, agent.agent_id, agent.version, {"build_state": "validated"})
    finally:
        await service.close()
    events = before + after
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    assert [e.type for e in after][:2] == [Event.TYPE_BUILD_RESUMED, Event.TYPE_STAGE_STARTED]
    assert stage_events(events, Event.TYPE_STAGE_SUCCEEDED) == [(stage, 1) for stage in range(1, 7)]
    assert [purpose for purpose, _ in stand_in.requests] == ["analyse", "plan", "codegen", "codegen"]
    assert len(of_type(events, Event.TYPE_BUILD_RESUMED)) == 1  # resumed once, then never fenced out again


ADDS_FOUR = '''"""Adds five to every number: a draft that adds four."""


class NumberAdder:
    """Adds 5 to every number."""

    def execute(self, inputs: dict) -> dict:
        """Every number plus five."""
        return {"numbers": [n + 4 for n in inputs["numbers"]]}

    def get_capabilities(self) -> dict:
        """Name and schemas."""
        schema = {"type": "object", "required": ["numbers"], "properties": {"numbers": {"type": "array"}}}
        return {"name": "NumberAdder", "description": "Adds 5 to every number.", "input_schema": schema,
                "output_schema": schema}
'''


async def test_repair_by_evolution_fixes_an_agent_the_fix_loop_could_not(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    from tdev.evolution.v1 import evolution_service_pb2 as evo_service_pb2
    from tdev.evolution.v1 import evolution_service_pb2_grpc as evo_pb2_grpc

    from evolution_svc.config import EvolutionSettings
    from evolution_svc.server import create_server as create_evolution

    evolution = await create_evolution(EvolutionSettings(
        database_url=f"sqlite+aiosqlite:///{mesh.tmp_path / 'evolution.sqlite'}", claim_interval_seconds=0.2,
        watch_poll_seconds=0.2), mesh.common(), port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{evolution.port}")
    try:
        stand_in.script = Script(answers={
            "codegen": lambda payload, index: {"code": ADDS_FOUR, "class_name": "NumberAdder"},
            "repair": lambda payload, index: {"code": payload["code"], "changed": False,
                                              "diagnosis": "cannot see the bug", "fixes": []}})
        builder = await mesh.start_builder(llm=model, common=mesh.common(
            evolution_address=f"127.0.0.1:{evolution.port}"), evolution_repair=True,
            repair_operators="program_transform")
        events = await build(builder.stub, "Add 5 to each number", disable_reuse=True, max_fix_attempts=1,
                             max_duration_seconds=120)
        assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED, events[-1].message
        failed = of_type(events, Event.TYPE_STAGE_FAILED)
        assert [(e.stage, e.message.endswith("handing the agent to the evolution service")) for e in failed] == [
            (Stage.STAGE_SELECT_OR_CREATE, True)]
        assert stage_events(events, Event.TYPE_STAGE_SUCCEEDED) == [
            (Stage.STAGE_ANALYSE, 1), (Stage.STAGE_IDENTIFY_AGENTS, 1), (Stage.STAGE_REPAIR, 1),
            (Stage.STAGE_SELECT_OR_CREATE, 1), (Stage.STAGE_COMPOSE, 1), (Stage.STAGE_VALIDATE, 1),
            (Stage.STAGE_PACKAGE, 1)]
        repair = next(e for e in of_type(events, Event.TYPE_STAGE_SUCCEEDED) if e.stage == Stage.STAGE_REPAIR)
        details = plain(repair.details)
        assert details["evolution"]["promoted"] is True
        assert 0 < details["budget"]["seconds"] <= 60
        done = await get_build(builder.stub, events[-1].build_id)
        (agent,) = done.package.agents
        assert (agent.agent_id, agent.version) == (details["evolution"]["agent_id"], details["evolution"]["version"])
        assert (agent.agent_id, agent.version) != (details["from"]["agent_id"], details["from"]["version"])
        stub = evo_pb2_grpc.EvolutionServiceStub(channel)
        run = (await stub.GetEvolution(evo_service_pb2.GetEvolutionRequest(
            run_id=details["evolution"]["run_id"], exclude_code=True))).run
        # The run was bounded by the build's budgets: at most half the time left, no more than its cost.
        assert run.config.max_duration_seconds <= 60 and run.config.max_cost_usd <= done.constraints.max_cost_usd
        last = await run_workflow(mesh.workflow_stub, done.package.workflow_id, {"numbers": [1, 10, -5]})
        assert plain(last.output) == {"numbers": [6, 15, 0]}
    finally:
        await channel.close()
        await evolution.close(grace=0.5)


async def test_repair_by_evolution_stays_within_the_build_time_budget(
        mesh: Mesh, stand_in: ModelStandIn, model: LLMClient) -> None:
    from evolution_svc.config import EvolutionSettings
    from evolution_svc.server import create_server as create_evolution

    evolution = await create_evolution(EvolutionSettings(
        database_url=f"sqlite+aiosqlite:///{mesh.tmp_path / 'evolution-budget.sqlite'}", claim_interval_seconds=0.2,
        watch_poll_seconds=0.2), mesh.common(), port=0)
    try:
        hopeless = ADDS_FOUR.replace('[n + 4 for n in inputs["numbers"]]', '"not numbers"')
        stand_in.script = Script(answers={
            "codegen": lambda payload, index: {"code": hopeless, "class_name": "NumberAdder"},
            "repair": lambda payload, index: {"code": payload["code"], "changed": False,
                                              "diagnosis": "cannot see the bug", "fixes": []}})
        builder = await mesh.start_builder(llm=model, common=mesh.common(
            evolution_address=f"127.0.0.1:{evolution.port}"), evolution_repair=True,
            repair_operators="program_transform", repair_generations=10_000)
        events = await build(builder.stub, "Add 5 to each number", disable_reuse=True, max_fix_attempts=1,
                             max_duration_seconds=6)
        assert events[-1].type == Event.TYPE_BUILD_FAILED
        done = await get_build(builder.stub, events[-1].build_id)
        assert done.error.stage == Stage.STAGE_REPAIR
        # Either evolution stopped on its share of the time (nothing promoted) or the build's own budget ended it.
        assert (done.error.code, "repair by evolution" in done.error.message) == ("FAILED_PRECONDITION", True) or \
            done.error.code == "RESOURCE_EXHAUSTED"
        assert done.elapsed_seconds < 6.0
        started = next(e for e in events if e.type == Event.TYPE_STAGE_PROGRESS and e.stage == Stage.STAGE_REPAIR)
        assert "at most" in started.message and float(started.message.split("at most ")[1].split(" s")[0]) <= 3.0
    finally:
        await evolution.close(grace=0.5)
