"""RegisterAgent, GetAgent, ListAgentVersions and GetAgentLineage over real gRPC, on SQLite and Postgres."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from google.protobuf import json_format
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import Registry, example, register, rpc_error, tiny_agent

pytestmark = pytest.mark.mesh  # real servers or subprocesses

STATE = agent_pb2.AgentAnalysis


async def test_register_agent_stores_version_1_0_0_with_sandbox_capabilities(registry: Registry) -> None:
    code = example("word_count")
    answer = await register(registry.stub, "word_count", code, description="Counts words",
                            labels={"origin": "test"})
    agent = answer.agent
    assert answer.created is True
    assert agent.agent_id.startswith("agent_") and len(agent.agent_id) == 18
    assert (agent.name, agent.version, agent.class_name) == ("word_count", "1.0.0", "WordCount")
    assert agent.code == code
    assert agent.code_hash == hashlib.sha256(code.encode()).hexdigest()
    assert agent.code_size_bytes == len(code.encode())
    assert agent.execute_is_async is False
    assert dict(agent.labels) == {"origin": "test"}
    declared = json_format.MessageToDict(agent.declared_capabilities)
    assert declared["name"] == "word_count"
    assert declared["tags"] == ["text", "count", "words", "statistics"]
    assert agent.analysis.state in (STATE.STATE_PENDING, STATE.STATE_RUNNING, STATE.STATE_SUCCEEDED)
    assert agent.metrics.execution_count == 0


async def test_register_async_agent_reports_async_execute(registry: Registry) -> None:
    answer = await register(registry.stub, "records_filter", example("records_filter"))
    assert answer.agent.execute_is_async is True


async def test_register_same_name_and_code_returns_existing_version(registry: Registry) -> None:
    first = await register(registry.stub, "sum_numbers", example("sum_numbers"))
    again = await register(registry.stub, "sum_numbers", example("sum_numbers"))
    assert (again.created, again.agent.agent_id, again.agent.version) == (False, first.agent.agent_id, "1.0.0")
    versions = await registry.stub.ListAgentVersions(pb2.ListAgentVersionsRequest(name="sum_numbers"))
    assert [v.version for v in versions.versions] == ["1.0.0"]


async def test_register_new_code_bumps_minor_or_uses_given_version(registry: Registry) -> None:
    first = await register(registry.stub, "tiny", tiny_agent("a"))
    second = await register(registry.stub, "tiny", tiny_agent("b"))
    third = await register(registry.stub, "tiny", tiny_agent("c"), version="3.0.0")
    fourth = await register(registry.stub, "tiny", tiny_agent("d"))
    assert [first.agent.version, second.agent.version, third.agent.version, fourth.agent.version] == [
        "1.0.0", "1.1.0", "3.0.0", "3.1.0"]
    assert len({first.agent.agent_id, second.agent.agent_id, third.agent.agent_id}) == 1
    back = await register(registry.stub, "tiny", tiny_agent("a"))
    assert (back.created, back.agent.version) == (False, "1.0.0")


async def test_register_existing_or_lower_version_with_new_code_is_rejected(registry: Registry) -> None:
    await register(registry.stub, "tiny", tiny_agent("a"), version="2.0.0")
    exists = await rpc_error(register(registry.stub, "tiny", tiny_agent("b"), version="2.0.0"))
    assert exists.code() == grpc.StatusCode.ALREADY_EXISTS
    assert exists.details() == ("tiny 2.0.0 exists with different code; leave version empty for the next "
                                "minor version")
    lower = await rpc_error(register(registry.stub, "tiny", tiny_agent("b"), version="1.5.0"))
    assert lower.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert lower.details() == "version: 1.5.0 is not higher than the latest version 2.0.0 of tiny"


async def test_register_replayed_request_id_returns_first_result(registry: Registry) -> None:
    first = await register(registry.stub, "tiny", tiny_agent("a"), request_id="req-1")
    replay = await register(registry.stub, "tiny", tiny_agent("a"), request_id="req-1")
    assert (replay.created, replay.agent.version, replay.agent.code) == (False, "1.0.0", first.agent.code)
    # The same request id with different code is a caller's mistake, not a replay: nothing is registered.
    reused = await rpc_error(register(registry.stub, "tiny", tiny_agent("changed"), request_id="req-1"))
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (reused.details() or "").startswith("request_id 'req-1' was used before for a different request")
    versions = await registry.stub.ListAgentVersions(pb2.ListAgentVersionsRequest(agent_id=first.agent.agent_id))
    assert [v.version for v in versions.versions] == ["1.0.0"]


async def test_register_invalid_code_names_line_and_problem(registry: Registry) -> None:
    cases = {
        "class A:\n    def execute(self, inputs)\n": "code: line 2, column 30: syntax error: expected ':'",
        "x = 1\n": "code: line 1, column 1: no agent class: define one class with execute(self, inputs)",
        "class A:\n    def __init__(self, key):\n        pass\n\n    def get_capabilities(self):\n"
        "        return {}\n\n    def execute(self, inputs):\n        return {}\n":
            "code: line 2, column 5: A.__init__ must have no required arguments; it requires key",
        "class A:\n    def execute(self, inputs):\n        return {}\n":
            "code: line 1, column 1: A has no get_capabilities(self) method",
    }
    for code, message in cases.items():
        error = await rpc_error(register(registry.stub, "bad", code))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_register_oversized_code_reports_the_limit(registry: Registry) -> None:
    code = tiny_agent("big") + "#" * (64 * 1024)
    error = await rpc_error(register(registry.stub, "big", code))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"code: source is {len(code)} bytes; the limit is 65536 bytes"


async def test_register_class_crashing_in_sandbox_is_invalid_argument_and_writes_nothing(
        registry: Registry) -> None:
    crash = "import no_such_module_here\n" + tiny_agent("crash")
    error = await rpc_error(register(registry.stub, "crashy", crash))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("code: loading Tiny in the sandbox failed: ModuleNotFoundError: "
                               "No module named 'no_such_module_here'")
    listed = await registry.stub.ListAgents(pb2.ListAgentsRequest())
    assert list(listed.agents) == []
    fixed = await register(registry.stub, "crashy", tiny_agent("crash"))
    assert (fixed.created, fixed.agent.version) == (True, "1.0.0")


async def test_register_class_hanging_in_sandbox_times_out_as_invalid_argument(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.registry.conftest import start_registry

    started = await start_registry(stack, tmp_path, inspect_timeout_seconds=1.0)
    try:
        hang = tiny_agent("hang").replace('        return {"name": TAG', '        while True:\n            pass\n'
                                          '        return {"name": TAG')
        error = await rpc_error(register(started.stub, "hangs", hang))
        assert (error.code(), error.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "code: loading Tiny in the sandbox failed: timed out after 1 s")
        bad_caps = tiny_agent("caps").replace('return {"name": TAG, "tags": ["tiny"]}', "return [1, 2]")
        error = await rpc_error(register(started.stub, "caps", bad_caps))
        assert error.details() == ("code: loading Tiny in the sandbox failed: invalid_output: "
                                   "get_capabilities() must return a dict")
    finally:
        await started.close()


async def test_register_rejects_bad_names_versions_and_unknown_parents(registry: Registry) -> None:
    bad_name = await rpc_error(register(registry.stub, "no spaces", tiny_agent("a")))
    assert bad_name.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_name.details() == 'name: "no spaces" must be 1 to 100 letters, digits, "_", "-" or "."'
    bad_version = await rpc_error(register(registry.stub, "ok", tiny_agent("a"), version="1.0"))
    assert bad_version.details() == 'version: "1.0" is not a semantic version like 1.2.0'
    parent = await rpc_error(register(registry.stub, "ok", tiny_agent("a"), parents=[("agent_nope", "1.0.0")]))
    assert (parent.code(), parent.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "parents[0]: unknown agent version agent_nope@1.0.0")


async def test_get_agent_by_id_name_version_and_without_code(registry: Registry) -> None:
    first = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
    second = (await register(registry.stub, "tiny", tiny_agent("b"))).agent
    by_id = await registry.stub.GetAgent(pb2.GetAgentRequest(agent_id=first.agent_id))
    by_name = await registry.stub.GetAgent(pb2.GetAgentRequest(name="tiny"))
    old = await registry.stub.GetAgent(pb2.GetAgentRequest(name="tiny", version="1.0.0"))
    lean = await registry.stub.GetAgent(pb2.GetAgentRequest(agent_id=first.agent_id, exclude_code=True))
    assert (by_id.agent.version, by_id.agent.code) == ("1.1.0", second.code)
    assert (by_name.agent.version, by_name.agent.agent_id) == ("1.1.0", first.agent_id)
    assert (old.agent.version, old.agent.code) == ("1.0.0", first.code)
    assert (lean.agent.version, lean.agent.code, lean.agent.code_hash) == ("1.1.0", "", second.code_hash)


async def test_get_agent_unknown_is_not_found(registry: Registry) -> None:
    await register(registry.stub, "tiny", tiny_agent("a"))
    cases = [
        (pb2.GetAgentRequest(agent_id="agent_000000000000"), "no agent with agent_id agent_000000000000"),
        (pb2.GetAgentRequest(name="nobody"), "no agent with name nobody"),
        (pb2.GetAgentRequest(name="tiny", version="9.9.9"), "agent with name tiny has no version 9.9.9"),
    ]
    for request, message in cases:
        error = await rpc_error(registry.stub.GetAgent(request))
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, message)
    empty = await rpc_error(registry.stub.GetAgent(pb2.GetAgentRequest()))
    assert (empty.code(), empty.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "agent_id: is required (or give name instead)")


async def test_list_agent_versions_pages_newest_first(registry: Registry) -> None:
    for tag in "abcde":
        await register(registry.stub, "tiny", tiny_agent(tag))
    seen: list[str] = []
    token = ""
    while True:
        page = await registry.stub.ListAgentVersions(
            pb2.ListAgentVersionsRequest(name="tiny", page_size=2, page_token=token))
        assert all(v.code == "" for v in page.versions)
        seen += [v.version for v in page.versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["1.4.0", "1.3.0", "1.2.0", "1.1.0", "1.0.0"]
    other = await rpc_error(registry.stub.ListAgentVersions(
        pb2.ListAgentVersionsRequest(name="other", page_token=(await registry.stub.ListAgentVersions(
            pb2.ListAgentVersionsRequest(name="tiny", page_size=1))).next_page_token)))
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = await rpc_error(registry.stub.ListAgentVersions(pb2.ListAgentVersionsRequest(name="nobody")))
    assert (missing.code(), missing.details()) == (grpc.StatusCode.NOT_FOUND, "no agent with name nobody")


async def test_get_agent_lineage_follows_parents_to_max_depth(registry: Registry) -> None:
    base = (await register(registry.stub, "base", tiny_agent("base"))).agent
    other = (await register(registry.stub, "other", tiny_agent("other"))).agent
    child = (await register(registry.stub, "base", tiny_agent("child"),
                            parents=[(base.agent_id, "1.0.0"), (other.agent_id, "1.0.0")])).agent
    grandchild = (await register(registry.stub, "base", tiny_agent("grandchild"),
                                 parents=[(child.agent_id, child.version)])).agent
    assert [(p.agent_id, p.version) for p in grandchild.parents] == [(base.agent_id, "1.1.0")]
    lineage = await registry.stub.GetAgentLineage(pb2.GetAgentLineageRequest(agent_id=base.agent_id))
    assert (lineage.root.agent_id, lineage.root.version) == (base.agent_id, "1.2.0")
    edges = {((e.child.agent_id, e.child.version), (e.parent.agent_id, e.parent.version)) for e in lineage.edges}
    assert edges == {
        ((base.agent_id, "1.2.0"), (base.agent_id, "1.1.0")),
        ((base.agent_id, "1.1.0"), (base.agent_id, "1.0.0")),
        ((base.agent_id, "1.1.0"), (other.agent_id, "1.0.0")),
    }
    assert sorted((a.name, a.version) for a in lineage.agents) == [
        ("base", "1.0.0"), ("base", "1.1.0"), ("base", "1.2.0"), ("other", "1.0.0")]
    shallow = await registry.stub.GetAgentLineage(
        pb2.GetAgentLineageRequest(agent_id=base.agent_id, version="1.2.0", max_depth=1))
    assert [(e.parent.agent_id, e.parent.version) for e in shallow.edges] == [(base.agent_id, "1.1.0")]
    missing = await rpc_error(registry.stub.GetAgentLineage(
        pb2.GetAgentLineageRequest(agent_id=base.agent_id, version="7.0.0")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_registrations_get_distinct_versions_or_the_same_one(registry: Registry) -> None:
    import asyncio

    different = await asyncio.gather(*(register(registry.stub, "racy", tiny_agent(f"r{i}")) for i in range(8)))
    assert all(answer.created for answer in different)
    assert sorted(answer.agent.version for answer in different) == [f"1.{minor}.0" for minor in range(8)]
    assert len({answer.agent.agent_id for answer in different}) == 1
    same = await asyncio.gather(*(register(registry.stub, "same", tiny_agent("s")) for _ in range(8)))
    assert sum(answer.created for answer in same) == 1
    assert {(answer.agent.agent_id, answer.agent.version) for answer in same} == {(same[0].agent.agent_id, "1.0.0")}


async def test_register_beyond_max_agents_is_resource_exhausted(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.registry.conftest import start_registry

    started = await start_registry(stack, tmp_path, max_agents=2)
    try:
        await register(started.stub, "one", tiny_agent("1"))
        await register(started.stub, "two", tiny_agent("2"))
        error = await rpc_error(register(started.stub, "three", tiny_agent("3")))
        assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                   "the registry holds its limit of 2 agents")
        newer = await register(started.stub, "one", tiny_agent("1b"))
        assert (newer.created, newer.agent.version) == (True, "1.1.0")
    finally:
        await started.close()
