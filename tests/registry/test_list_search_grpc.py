"""ListAgents (paging, filters, orders, tokens) and SearchAgents over real gRPC, on SQLite and Postgres."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import Registry, analysed, example, register, rpc_error, tiny_agent

pytestmark = pytest.mark.mesh  # real servers or subprocesses

EXAMPLE_NAMES = ("word_count", "text_normalize", "keyword_extract", "json_select_fields", "json_flatten",
                 "list_stats", "sum_numbers", "sort_numbers", "csv_to_records", "records_filter")


async def _all_pages(registry: Registry, request: pb2.ListAgentsRequest) -> list[str]:
    names: list[str] = []
    while True:
        page = await registry.stub.ListAgents(request)
        names += [a.name for a in page.agents]
        if not page.next_page_token:
            return names
        request.page_token = page.next_page_token


async def test_list_agents_pages_latest_versions_most_recent_first(registry: Registry) -> None:
    for index in range(7):
        await register(registry.stub, f"agent-{index}", tiny_agent(str(index)))
    await register(registry.stub, "agent-2", tiny_agent("2b"))
    request = pb2.ListAgentsRequest(page_size=3, order_by=pb2.ListAgentsRequest.ORDER_BY_RECENT, exclude_code=True)
    first = await registry.stub.ListAgents(request)
    assert [(a.name, a.version, a.code) for a in first.agents] == [
        ("agent-2", "1.1.0", ""), ("agent-6", "1.0.0", ""), ("agent-5", "1.0.0", "")]
    assert await _all_pages(registry, request) == [
        "agent-2", "agent-6", "agent-5", "agent-4", "agent-3", "agent-1", "agent-0"]
    with_code = await registry.stub.ListAgents(pb2.ListAgentsRequest(page_size=1))
    assert with_code.agents[0].code.startswith('"""Agent')


async def test_list_agents_pagination_is_stable_while_agents_are_added(registry: Registry) -> None:
    for index in range(10):
        await register(registry.stub, f"old-{index:02d}", tiny_agent(f"old{index}"))
    seen: list[str] = []
    request = pb2.ListAgentsRequest(page_size=4, order_by=pb2.ListAgentsRequest.ORDER_BY_RECENT, exclude_code=True)
    added = 0
    while True:
        page = await registry.stub.ListAgents(request)
        seen += [a.name for a in page.agents]
        await asyncio.gather(*(register(registry.stub, f"new-{added + i}", tiny_agent(f"new{added + i}"))
                               for i in range(3)))
        added += 3
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == [f"old-{index:02d}" for index in reversed(range(10))]


async def test_list_agents_filters_by_name_capability_state_and_quality(registry: Registry) -> None:
    for name in ("word_count", "sum_numbers", "sort_numbers"):
        answer = await register(registry.stub, name, example(name))
        await analysed(registry.stub, answer.agent.agent_id)
    tiny = await register(registry.stub, "numbers_tiny", tiny_agent("t"), version="1.0.0")
    await analysed(registry.stub, tiny.agent.agent_id)
    by_name = await registry.stub.ListAgents(pb2.ListAgentsRequest(name_contains="NUMBERS"))
    assert sorted(a.name for a in by_name.agents) == ["numbers_tiny", "sort_numbers", "sum_numbers"]
    by_capability = await registry.stub.ListAgents(pb2.ListAgentsRequest(capability="sort"))
    assert [a.name for a in by_capability.agents] == ["sort_numbers"]
    by_capability = await registry.stub.ListAgents(pb2.ListAgentsRequest(capability="100%_sure"))
    assert list(by_capability.agents) == []
    succeeded = await registry.stub.ListAgents(pb2.ListAgentsRequest(
        analysis_state=agent_pb2.AgentAnalysis.STATE_SUCCEEDED))
    assert sorted(a.name for a in succeeded.agents) == ["numbers_tiny", "sort_numbers", "sum_numbers", "word_count"]
    failed = await registry.stub.ListAgents(pb2.ListAgentsRequest(analysis_state=agent_pb2.AgentAnalysis.STATE_FAILED))
    assert list(failed.agents) == []
    qualities = {a.name: a.analysis.quality_score for a in succeeded.agents}
    threshold = sorted(qualities.values())[2]
    good = await registry.stub.ListAgents(pb2.ListAgentsRequest(min_quality_score=threshold))
    assert sorted(a.name for a in good.agents) == sorted(n for n, q in qualities.items() if q >= threshold)


async def test_list_agents_orders_by_quality_and_executions(registry: Registry) -> None:
    ids = {}
    for name in ("word_count", "sum_numbers"):
        ids[name] = (await register(registry.stub, name, example(name))).agent.agent_id
        await analysed(registry.stub, ids[name])
    sloppy = "import os\n" + tiny_agent("sloppy").replace('"""Runs."""', "print(inputs)")
    ids["sloppy"] = (await register(registry.stub, "sloppy", sloppy)).agent.agent_id
    await analysed(registry.stub, ids["sloppy"])
    await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[
        agent_pb2.ExecutionRecord(execution_id=f"e{i}", agent_id=ids["sloppy"], version="1.0.0", success=True,
                                  duration_ms=1.0) for i in range(3)] + [
        agent_pb2.ExecutionRecord(execution_id="w", agent_id=ids["word_count"], version="1.0.0", success=True,
                                  duration_ms=1.0)]))
    by_quality = await registry.stub.ListAgents(pb2.ListAgentsRequest(
        order_by=pb2.ListAgentsRequest.ORDER_BY_QUALITY, exclude_code=True))
    scores = [a.analysis.quality_score for a in by_quality.agents]
    assert scores == sorted(scores, reverse=True)
    assert by_quality.agents[-1].name == "sloppy"
    by_runs = await registry.stub.ListAgents(pb2.ListAgentsRequest(
        order_by=pb2.ListAgentsRequest.ORDER_BY_EXECUTIONS, exclude_code=True))
    assert [(a.name, a.metrics.execution_count) for a in by_runs.agents] == [
        ("sloppy", 3), ("word_count", 1), ("sum_numbers", 0)]


async def test_list_agents_rejects_tokens_of_another_query_and_bad_arguments(registry: Registry) -> None:
    for index in range(3):
        await register(registry.stub, f"agent-{index}", tiny_agent(str(index)))
    page = await registry.stub.ListAgents(pb2.ListAgentsRequest(page_size=1, name_contains="agent"))
    other = await rpc_error(registry.stub.ListAgents(pb2.ListAgentsRequest(
        page_size=1, name_contains="other", page_token=page.next_page_token)))
    assert (other.code(), other.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token: was issued for a different query; keep filters and order when paging")
    garbage = await rpc_error(registry.stub.ListAgents(pb2.ListAgentsRequest(page_token="garbage")))
    assert (garbage.code(), garbage.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "page_token: is malformed; pass a next_page_token exactly as received")
    negative = await rpc_error(registry.stub.ListAgents(pb2.ListAgentsRequest(page_size=-1)))
    assert negative.details() == "page_size: must not be negative (got -1)"
    quality = await rpc_error(registry.stub.ListAgents(pb2.ListAgentsRequest(min_quality_score=1.5)))
    assert quality.details() == "min_quality_score: must be in [0, 1] (got 1.5)"


async def test_search_agents_ranks_by_match_with_reasons(registry: Registry) -> None:
    for name in EXAMPLE_NAMES:
        answer = await register(registry.stub, name, example(name),
                                description=example(name).split('"""')[1].removeprefix("Agent: "))
        await analysed(registry.stub, answer.agent.agent_id)
    expected_matcher = "postgres-fts" if registry.stack.kind == "postgres" else "token-overlap"
    queries = {
        "count the words in a text": "word_count",
        "sort a list of numbers": "sort_numbers",
        "parse CSV into records": "csv_to_records",
        "flatten nested json": "json_flatten",
        "extract keywords from text": "keyword_extract",
        "mean and median statistics": "list_stats",
    }
    for query, best in queries.items():
        answer = await registry.stub.SearchAgents(pb2.SearchAgentsRequest(query=query, top_k=3))
        assert answer.results, query
        top = answer.results[0]
        assert (top.agent.name, top.matcher) == (best, expected_matcher), query
        assert top.reasons and 0 < top.text_score <= 1 and top.agent.code == ""
        scores = [r.score for r in answer.results]
        assert scores == sorted(scores, reverse=True)
        assert len(answer.results) <= 3
    words = await registry.stub.SearchAgents(pb2.SearchAgentsRequest(query="count words"))
    assert "name matches 'count'" in words.results[0].reasons
    nothing = await registry.stub.SearchAgents(pb2.SearchAgentsRequest(query="quantum teleportation"))
    assert list(nothing.results) == []


async def test_search_agents_blends_success_rate_into_the_score(registry: Registry) -> None:
    first = (await register(registry.stub, "adder-a", tiny_agent("a", description="adds numbers"),
                            description="adds numbers")).agent
    second = (await register(registry.stub, "adder-b", tiny_agent("b", description="adds numbers"),
                             description="adds numbers")).agent
    for agent in (first, second):
        await analysed(registry.stub, agent.agent_id)
    await registry.stub.RecordExecutions(pb2.RecordExecutionsRequest(records=[
        agent_pb2.ExecutionRecord(execution_id=f"{agent.name}-{i}", agent_id=agent.agent_id, version="1.0.0",
                                  success=agent is second, duration_ms=1.0)
        for agent in (first, second) for i in range(8)]))
    answer = await registry.stub.SearchAgents(pb2.SearchAgentsRequest(query="adds numbers"))
    assert [r.agent.name for r in answer.results] == ["adder-b", "adder-a"]
    assert answer.results[0].text_score == answer.results[1].text_score
    assert "success rate 100% over 8 runs" in answer.results[0].reasons


async def test_search_agents_rejects_empty_query(registry: Registry) -> None:
    error = await rpc_error(registry.stub.SearchAgents(pb2.SearchAgentsRequest(query="  ")))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "query: must not be empty")


async def test_search_agents_uses_embeddings_when_a_provider_offers_them(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.registry.conftest import start_registry
    from tests.unit.fakes.registry import FakeEmbedder

    embedder = FakeEmbedder()
    started = await start_registry(stack, tmp_path, embedder=embedder)
    try:
        for name in ("word_count", "sort_numbers", "csv_to_records"):
            answer = await register(started.stub, name, example(name))
            await analysed(started.stub, answer.agent.agent_id)
        answer = await started.stub.SearchAgents(pb2.SearchAgentsRequest(query="count the words of a text"))
        top = answer.results[0]
        assert (top.agent.name, top.matcher) == ("word_count", "embeddings")
        assert any(reason.startswith("meaning is similar (") for reason in top.reasons)
        assert embedder.calls >= 4  # three analyses and the query
    finally:
        await started.close()
