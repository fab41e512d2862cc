"""Asynchronous analysis over real gRPC: states, quality, models, failure, resuming after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import Registry, Stack, analysed, eventually, example, register, start_registry

pytestmark = pytest.mark.mesh  # real servers or subprocesses

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


async def test_analysis_failure_is_recorded_as_failed_with_the_error(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real LLM layer, routed to a model server that is not there, with no retries and no fallback.
    monkeypatch.setenv("TDEV_LLM_ROUTES", json.dumps({"analysis": ["openai"]}))
    monkeypatch.setenv("TDEV_LLM_ENSEMBLE_PURPOSES", "[]")
    monkeypatch.setenv("TDEV_LLM_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("TDEV_LLM_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("TDEV_LLM_CACHE_ENABLED", "false")
    registry = await start_registry(stack, tmp_path)
    try:
        agent = (await register(registry.stub, "sum_numbers", example("sum_numbers"))).agent
        done = await analysed(registry.stub, agent.agent_id)
        assert done.analysis.state == STATE.STATE_FAILED
        assert done.analysis.error.startswith("ProviderUnavailable: "), done.analysis.error
        assert done.analysis.quality_score == 0.0 and list(done.analysis.models_used) == []
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


@contextlib.asynccontextmanager
async def _hanging_model() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A model server that accepts requests and never answers until the event is set, then drops them."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.transport.abort()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], release
    finally:
        release.set()
        server.close()


@contextlib.contextmanager
def _analysis_routed_to(port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Servers started inside send analyses (through the real LLM layer) only to the model at ``port``."""
    with monkeypatch.context() as patch:
        patch.setenv("TDEV_LLM_ROUTES", json.dumps({"analysis": ["openai"]}))
        patch.setenv("TDEV_LLM_ENSEMBLE_PURPOSES", "[]")
        patch.setenv("TDEV_LLM_OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
        patch.setenv("TDEV_LLM_MAX_ATTEMPTS", "1")
        patch.setenv("TDEV_LLM_CACHE_ENABLED", "false")
        yield


async def _running(registry: Registry, agent_id: str) -> None:
    async def running() -> bool:
        return await _state(registry, agent_id) == STATE.STATE_RUNNING

    await eventually(running)


async def test_running_analysis_is_handed_back_on_stop_and_finished_by_the_next_server(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _hanging_model() as (port, _):
        with _analysis_routed_to(port, monkeypatch):
            first = await start_registry(stack, tmp_path)
        try:
            agent = (await register(first.stub, "sort_numbers", example("sort_numbers"))).agent
            await _running(first, agent.agent_id)
        finally:
            await first.close()
    second = await start_registry(stack, tmp_path)  # the default LLM set-up: the offline analyser
    try:
        done = await analysed(second.stub, agent.agent_id)
        assert done.analysis.state == STATE.STATE_SUCCEEDED
    finally:
        await second.close()


async def test_analysis_of_a_dead_replica_is_taken_over_after_its_lease_and_its_late_result_fenced(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    second: Registry | None = None
    async with _hanging_model() as (port, release):
        with _analysis_routed_to(port, monkeypatch):
            first = await start_registry(stack, tmp_path, analysis_lease_seconds=1.0, analysis_timeout_seconds=30.0)
        try:
            agent = (await register(first.stub, "csv_to_records", example("csv_to_records"))).agent
            await _running(first, agent.agent_id)
            second = await first.start_another(analysis_lease_seconds=1.0)  # the offline analyser
            done = await analysed(second.stub, agent.agent_id)
            assert done.analysis.state == STATE.STATE_SUCCEEDED
            release.set()  # the first replica's model call now fails: its late FAILED must be fenced off
            await asyncio.sleep(0.5)
            after = (await second.stub.GetAgent(
                pb2.GetAgentRequest(agent_id=agent.agent_id, exclude_code=True))).agent
            assert after.analysis.state == STATE.STATE_SUCCEEDED
            assert after.analysis.quality_score == done.analysis.quality_score
        finally:
            if second is not None:
                await second.close()
            await first.close()
