"""RecordExecutions (exact totals under 50 concurrent writers, idempotency), cache invalidation, database down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import (
    Registry,
    Stack,
    analysed,
    eventually,
    register,
    rpc_error,
    start_registry,
    tiny_agent,
)
from tests.support.netproxy import tcp_proxy

pytestmark = pytest.mark.mesh  # real servers or subprocesses


def _record(execution_id: str, agent_id: str, version: str = "1.0.0", *, success: bool = True,
            duration_ms: float = 10.0, tokens: int = 0, cost_usd: float = 0.0,
            finish_seconds: int = 0) -> agent_pb2.ExecutionRecord:
    record = agent_pb2.ExecutionRecord(execution_id=execution_id, agent_id=agent_id, version=version,
                                       success=success, duration_ms=duration_ms, tokens=tokens, cost_usd=cost_usd,
                                       error_type="" if success else "ValueError")
    if finish_seconds:
        record.finish_time.CopyFrom(timestamp_pb2.Timestamp(seconds=finish_seconds))
    return record


async def _metrics(registry: Registry, agent_id: str, version: str = "1.0.0") -> agent_pb2.AgentMetrics:
    answer = await registry.stub.GetAgent(pb2.GetAgentRequest(agent_id=agent_id, version=version, exclude_code=True))
    return answer.agent.metrics


async def test_record_executions_aggregates_exact_metrics_and_ignores_replays(registry: Registry) -> None:
    agent_id = (await register(registry.stub, "tiny", tiny_agent("a"))).agent.agent_id
    records = [_record(f"e{i}", agent_id, success=i % 4 != 0, duration_ms=float(i), tokens=i, cost_usd=0.125,
                       finish_seconds=1_700_000_000 + i) for i in range(1, 21)]
    first = await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=records))
    assert (first.accepted_count, first.duplicate_count) == (20, 0)
    replay = await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(
        records=[*records[:5], records[5], records[5], _record("e21", agent_id, duration_ms=21.0)]))
    assert (replay.accepted_count, replay.duplicate_count) == (1, 7)
    metrics = await _metrics(registry, agent_id)
    assert (metrics.execution_count, metrics.success_count, metrics.failure_count) == (21, 16, 5)
    assert metrics.average_duration_ms == 11.0
    assert metrics.p95_duration_ms == 20.0
    assert (metrics.total_tokens, metrics.total_cost_usd) == (210, 2.5)
    assert metrics.success_rate == 16 / 21


async def test_a_full_batch_of_records_counts_each_new_one_once(registry: Registry) -> None:
    # The largest call allowed (1000 records), 400 of them already recorded: one statement runs with every
    # row, and the totals count exactly the 600 new ones.
    agent_id = (await register(registry.stub, "tiny", tiny_agent("a"))).agent.agent_id
    earlier = [_record(f"b{i:04d}", agent_id, duration_ms=1.0) for i in range(400)]
    first = await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=earlier))
    full = [*earlier, *(_record(f"b{i:04d}", agent_id, success=i % 2 == 0, duration_ms=3.0) for i in range(400, 1000))]
    answer = await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=full))
    metrics = await _metrics(registry, agent_id)
    assert (first.accepted_count, answer.accepted_count, answer.duplicate_count) == (400, 600, 400)
    assert (metrics.execution_count, metrics.success_count, metrics.failure_count) == (1000, 700, 300)
    assert metrics.average_duration_ms == (400 * 1.0 + 600 * 3.0) / 1000


async def test_record_executions_unknown_version_writes_nothing(registry: Registry) -> None:
    agent_id = (await register(registry.stub, "tiny", tiny_agent("a"))).agent.agent_id
    error = await rpc_error(registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[
        _record("ok-1", agent_id), _record("bad-1", agent_id, version="2.0.0"), _record("bad-2", "agent_nobody")])))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        f"unknown agent versions: records[1]: {agent_id}@2.0.0, records[2]: agent_nobody@1.0.0")
    assert (await _metrics(registry, agent_id)).execution_count == 0
    again = await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[_record("ok-1", agent_id)]))
    assert again.accepted_count == 1


async def test_record_executions_rejects_malformed_records(registry: Registry) -> None:
    agent_id = (await register(registry.stub, "tiny", tiny_agent("a"))).agent.agent_id
    cases = [
        (_record("", agent_id), "records[0].execution_id: 1 to 128 characters required"),
        (_record("x", agent_id, duration_ms=-1.0), "records[0].duration_ms: must be a finite number >= 0 (got -1.0)"),
        (_record("x", agent_id, version="latest"), 'records[0].version: "latest" is not a semantic version like 1.2.0'),
    ]
    for record, message in cases:
        error = await rpc_error(registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[record])))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    too_many = [_record(f"r{i}", agent_id) for i in range(1001)]
    error = await rpc_error(registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=too_many)))
    assert error.details() == "records: 1001 records; the limit is 1000 per call"


async def test_record_executions_50_concurrent_writers_give_exact_totals(registry: Registry) -> None:
    first = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
    second = (await register(registry.stub, "tiny", tiny_agent("b"))).agent

    async def writer(index: int) -> pb2.RecordExecutionsResponse:
        records = [
            _record(f"w{index}-{n}", first.agent_id, "1.0.0" if n % 2 else "1.1.0", success=n != 0,
                    duration_ms=float(n + 1), tokens=10, cost_usd=0.25)
            for n in range(4)
        ]
        # Every writer also replays a record of its neighbour: exactly one of the two copies counts.
        records.append(_record(f"w{(index + 1) % 50}-0", first.agent_id, "1.1.0", success=False, duration_ms=1.0,
                               tokens=10, cost_usd=0.25))
        answer: pb2.RecordExecutionsResponse = await registry.stub.RecordExecutions(
            pb2.RecordExecutionsRequest(records=records))
        return answer

    answers = await asyncio.gather(*(writer(i) for i in range(50)))
    assert sum(a.accepted_count for a in answers) == 200
    assert sum(a.duplicate_count for a in answers) == 50
    old, new = await _metrics(registry, first.agent_id, "1.0.0"), await _metrics(registry, second.agent_id, "1.1.0")
    assert (old.execution_count, old.success_count, old.failure_count) == (100, 100, 0)
    assert (new.execution_count, new.success_count, new.failure_count) == (100, 50, 50)
    assert (old.average_duration_ms, new.average_duration_ms) == (3.0, 2.0)
    assert (old.total_tokens, new.total_tokens) == (1000, 1000)
    assert (old.total_cost_usd, new.total_cost_usd) == (25.0, 25.0)
    assert (old.p95_duration_ms, new.p95_duration_ms) == (4.0, 3.0)


async def test_get_agent_cache_is_invalidated_by_executions_versions_and_analysis(registry: Registry) -> None:
    first = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
    await analysed(registry.stub, first.agent_id)
    request = pb2.GetAgentRequest(name="tiny", exclude_code=True)
    assert (await registry.stub.GetAgent(request)).agent.metrics.execution_count == 0
    await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[_record("c1", first.agent_id)]))
    assert (await registry.stub.GetAgent(request)).agent.metrics.execution_count == 1
    await register(registry.stub, "tiny", tiny_agent("b"))
    latest = (await registry.stub.GetAgent(request)).agent
    assert latest.version == "1.1.0"
    final = await analysed(registry.stub, first.agent_id)
    assert (await registry.stub.GetAgent(request)).agent.analysis.state == final.analysis.state
    assert final.analysis.state == agent_pb2.AgentAnalysis.STATE_SUCCEEDED


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # replicas, outages: Postgres + Redis only
async def test_get_agent_cache_is_invalidated_across_replicas(registry: Registry) -> None:
    replica = await registry.start_another()
    agent = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
    request = pb2.GetAgentRequest(agent_id=agent.agent_id, version="1.0.0", exclude_code=True)
    assert (await replica.stub.GetAgent(request)).agent.metrics.execution_count == 0
    await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[_record("x1", agent.agent_id)]))

    async def replica_sees_it() -> bool:
        return bool((await replica.stub.GetAgent(request)).agent.metrics.execution_count == 1)

    await eventually(replica_sees_it, timeout=2.0)
    await register(registry.stub, "tiny", tiny_agent("b"))

    async def replica_sees_new_version() -> bool:
        answer = await replica.stub.GetAgent(pb2.GetAgentRequest(name="tiny", exclude_code=True))
        return bool(answer.agent.version == "1.1.0")

    await eventually(replica_sees_new_version, timeout=2.0)


# ---- database down ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # replicas, outages: Postgres + Redis only
async def test_database_down_is_unavailable_and_recovers(stack: Stack, tmp_path: Path) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(stack.database_url)
    async with tcp_proxy(parts.port or 5432) as (port, cut):
        proxied = Stack("postgres", stack.database_url.replace(f":{parts.port}/", f":{port}/"), stack.redis_url)
        registry = await start_registry(proxied, tmp_path)
        try:
            agent = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
            cut.set()
            calls = [
                registry.stub.RegisterAgent(pb2.RegisterAgentRequest(name="other", code=tiny_agent("b"))),
                registry.stub.GetAgent(pb2.GetAgentRequest(name="tiny", version="1.0.0")),
                registry.stub.ListAgents(pb2.ListAgentsRequest()),
                registry.stub.SearchAgents(pb2.SearchAgentsRequest(query="tiny")),
                registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[_record("d1", agent.agent_id)])),
            ]
            for call in calls:
                error = await rpc_error(call)
                # A refused connect surfaces as ConnectionRefusedError, a cut one as a DBAPI error.
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert error.details() in ("database unavailable; retry later",
                                           "a dependency is unavailable; retry later")
            cut.clear()
            listed = await registry.stub.ListAgents(pb2.ListAgentsRequest())
            assert [a.name for a in listed.agents] == ["tiny"]
        finally:
            await registry.close()


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # replicas, outages: Postgres + Redis only
async def test_redis_down_degrades_get_agent_to_the_database(stack: Stack, tmp_path: Path) -> None:
    registry = await start_registry(Stack("postgres", stack.database_url, "redis://127.0.0.1:1/0"), tmp_path)
    try:
        agent = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
        request = pb2.GetAgentRequest(agent_id=agent.agent_id, exclude_code=True)
        assert (await registry.stub.GetAgent(request)).agent.version == "1.0.0"
        await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[_record("r1", agent.agent_id)]))
        assert (await registry.stub.GetAgent(request)).agent.metrics.execution_count == 1
    finally:
        await registry.close()
