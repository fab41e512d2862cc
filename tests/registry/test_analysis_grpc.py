"""Asynchronous analysis over real gRPC: states, quality, models, failure, resuming after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from google.protobuf import json_format
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import Registry, Stack, analysed, eventually, example, register, start_registry
from tests.registry.fakes import FakeAnalyzer

STATE = agent_pb2.AgentAnalysis


async def _state(registry: Registry, agent_id: str) -> int:
    answer = await registry.stub.GetAgent(pb2.GetAgentRequest(agent_id=agent_id, exclude_code=True))
    return int(answer.agent.analysis.state)


async def test_analysis_succeeds_with_capabilities_quality_models_and_timing(registry: Registry) -> None:
    agent = (await register(registry.stub, "word_count", example("word_count"))).agent
    done = await analysed(registry.stub, agent.agent_id)
    analysis = done.analysis
    assert analysis.state == STATE.STATE_SUCCEEDED
    capabilities = json_format.MessageToDict(analysis.capabilities)
    assert {"summary", "input_schema", "output_schema", "dependencies", "estimated_performance",
            "confidence"} <= set(capabilities)
    assert len(analysis.models_used) >= 1 and all(analysis.models_used)
    static = json_format.MessageToDict(analysis.static_metrics)
    assert static["scores"] == {"complexity": 1.0, "documentation": 1.0, "typing": 1.0, "size": 1.0, "lint": 1.0}
    assert 0.0 < analysis.quality_score <= 1.0
    assert analysis.analysis_time.seconds > 0 and analysis.duration_ms > 0
    assert analysis.error == ""


async def test_analysis_failure_is_recorded_as_failed_with_the_error(stack: Stack, tmp_path: Path) -> None:
    registry = await start_registry(stack, tmp_path, analyzer=FakeAnalyzer(fail=True))
    try:
        agent = (await register(registry.stub, "sum_numbers", example("sum_numbers"))).agent
        done = await analysed(registry.stub, agent.agent_id)
        assert (done.analysis.state, done.analysis.error) == (STATE.STATE_FAILED, "RuntimeError: model unavailable")
        assert done.analysis.quality_score == 0.0
        assert json_format.MessageToDict(done.analysis.static_metrics)["static_score"] == 1.0
    finally:
        await registry.close()


async def test_pending_analysis_resumes_after_a_restart(stack: Stack, tmp_path: Path) -> None:
    first = await start_registry(stack, tmp_path, analysis_workers=0)
    try:
        agent = (await register(first.stub, "list_stats", example("list_stats"))).agent
        await asyncio.sleep(0.3)
        assert await _state(first, agent.agent_id) == STATE.STATE_PENDING
    finally:
        await first.close()
    second = await start_registry(stack, tmp_path)
    try:
        done = await analysed(second.stub, agent.agent_id)
        assert done.analysis.state == STATE.STATE_SUCCEEDED
    finally:
        await second.close()


async def test_running_analysis_is_handed_back_on_stop_and_finished_by_the_next_server(
        stack: Stack, tmp_path: Path) -> None:
    stuck = FakeAnalyzer()
    stuck.gate = asyncio.Event()
    first = await start_registry(stack, tmp_path, analyzer=stuck)
    try:
        agent = (await register(first.stub, "sort_numbers", example("sort_numbers"))).agent

        async def running() -> bool:
            return await _state(first, agent.agent_id) == STATE.STATE_RUNNING

        await eventually(running)
    finally:
        await first.close()
    second = await start_registry(stack, tmp_path)
    try:
        done = await analysed(second.stub, agent.agent_id)
        assert done.analysis.state == STATE.STATE_SUCCEEDED
    finally:
        await second.close()


async def test_analysis_of_a_dead_replica_is_taken_over_after_its_lease_and_its_late_result_fenced(
        stack: Stack, tmp_path: Path) -> None:
    stuck = FakeAnalyzer(quality=0.0)
    stuck.gate = asyncio.Event()
    first = await start_registry(stack, tmp_path, analyzer=stuck, analysis_lease_seconds=1.0,
                                 analysis_timeout_seconds=30.0)
    second: Registry | None = None
    try:
        agent = (await register(first.stub, "csv_to_records", example("csv_to_records"))).agent

        async def running() -> bool:
            return await _state(first, agent.agent_id) == STATE.STATE_RUNNING

        await eventually(running)
        second = await first.start_another(analysis_lease_seconds=1.0)
        done = await analysed(second.stub, agent.agent_id)
        assert done.analysis.state == STATE.STATE_SUCCEEDED
        stuck.gate.set()  # the first replica's late answer must not overwrite the result
        await asyncio.sleep(0.3)
        after = (await second.stub.GetAgent(pb2.GetAgentRequest(agent_id=agent.agent_id, exclude_code=True))).agent
        assert after.analysis.quality_score == done.analysis.quality_score
        assert list(after.analysis.models_used) == list(done.analysis.models_used)
    finally:
        if second is not None:
            await second.close()
        await first.close()
