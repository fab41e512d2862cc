"""UpdateAgentLabels over real gRPC (SQLite, and Postgres + Redis): labels only, atomic, idempotent, cache-safe."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tdev.registry.v1 import registry_service_pb2 as pb2

from tests.registry.conftest import Registry, analysed, eventually, register, rpc_error, tiny_agent

pytestmark = pytest.mark.mesh  # real servers or subprocesses


def _update(agent_id: str, version: str = "1.0.0", *, request_id: str = "", remove: tuple[str, ...] = (),
            **labels: str) -> pb2.UpdateAgentLabelsRequest:
    return pb2.UpdateAgentLabelsRequest(agent_id=agent_id, version=version, set_labels=labels,
                                        remove_labels=list(remove), request_id=request_id)


async def _labels(registry: Registry, agent_id: str, version: str = "1.0.0") -> dict[str, str]:
    answer = await registry.stub.GetAgent(pb2.GetAgentRequest(agent_id=agent_id, version=version, exclude_code=True))
    return dict(answer.agent.labels)


async def test_update_agent_labels_sets_and_removes_labels_and_nothing_else(registry: Registry) -> None:
    first = (await register(registry.stub, "tiny", tiny_agent("a"), labels={"origin": "test", "stage": "draft"})).agent
    await register(registry.stub, "tiny", tiny_agent("b"))
    first = await analysed(registry.stub, first.agent_id, "1.0.0")  # so only labels move update_time below
    answer = await registry.stub.UpdateAgentLabels(_update(
        first.agent_id, request_id="r-1", remove=("origin", "never-there"), build_state="failed", stage="final"))
    changed = answer.agent
    assert dict(changed.labels) == {"build_state": "failed", "stage": "final"}
    assert (changed.agent_id, changed.name, changed.version) == (first.agent_id, "tiny", "1.0.0")
    assert (changed.code_hash, changed.class_name) == (first.code_hash, first.class_name)
    assert changed.code == tiny_agent("a")
    assert changed.create_time == first.create_time
    assert changed.update_time.ToDatetime() > first.update_time.ToDatetime()
    assert await _labels(registry, first.agent_id) == {"build_state": "failed", "stage": "final"}
    assert await _labels(registry, first.agent_id, "1.1.0") == {}  # the other version is untouched
    versions = await registry.stub.ListAgentVersions(pb2.ListAgentVersionsRequest(agent_id=first.agent_id))
    assert [(v.version, dict(v.labels)) for v in versions.versions] == [
        ("1.1.0", {}), ("1.0.0", {"build_state": "failed", "stage": "final"})]
    again = await registry.stub.UpdateAgentLabels(_update(first.agent_id, request_id="r-2", stage="final"))
    assert again.agent.update_time == changed.update_time  # nothing changed, so update_time stays


async def test_update_agent_labels_replayed_request_id_changes_nothing_again(registry: Registry) -> None:
    agent = await analysed(registry.stub, (await register(registry.stub, "tiny", tiny_agent("a"))).agent.agent_id)
    first = await registry.stub.UpdateAgentLabels(_update(agent.agent_id, request_id="mark-1", state="one"))
    assert dict(first.agent.labels) == {"state": "one"}
    second = await registry.stub.UpdateAgentLabels(_update(agent.agent_id, request_id="mark-2", state="two"))
    replay = await registry.stub.UpdateAgentLabels(_update(agent.agent_id, request_id="mark-1", state="one"))
    # The replay does not write "one" over the later change; it returns the version as it is now.
    assert dict(replay.agent.labels) == {"state": "two"}
    assert replay.agent.update_time == second.agent.update_time
    error = await rpc_error(registry.stub.UpdateAgentLabels(_update(agent.agent_id, request_id="mark-1",
                                                                    state="three")))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request_id 'mark-1' was used before for a different request (the one that made a label change of "
        f"{agent.agent_id}@{agent.version}); send the same request to replay it, or a new request id for a new "
        "request")
    assert await _labels(registry, agent.agent_id) == {"state": "two"}


async def test_update_agent_labels_concurrent_calls_are_applied_one_after_the_other(registry: Registry) -> None:
    agent = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
    await asyncio.gather(*(registry.stub.UpdateAgentLabels(_update(agent.agent_id, **{f"k{i}": str(i)}))
                           for i in range(20)))
    assert await _labels(registry, agent.agent_id) == {f"k{i}": str(i) for i in range(20)}
    same = await asyncio.gather(*(registry.stub.UpdateAgentLabels(
        _update(agent.agent_id, request_id="same", remove=("k0",), k1="one")) for _ in range(10)))
    assert all(dict(answer.agent.labels) == {**{f"k{i}": str(i) for i in range(2, 20)}, "k1": "one"}
               for answer in same)


async def test_update_agent_labels_unknown_agent_or_version_is_not_found(registry: Registry) -> None:
    agent = (await register(registry.stub, "tiny", tiny_agent("a"))).agent
    error = await rpc_error(registry.stub.UpdateAgentLabels(_update("agent_000000000000", state="x")))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no agent with agent_id agent_000000000000")
    error = await rpc_error(registry.stub.UpdateAgentLabels(_update(agent.agent_id, "2.0.0", state="x")))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND, f"agent with agent_id {agent.agent_id} has no version 2.0.0")


async def test_update_agent_labels_rejects_bad_requests_naming_the_label(registry: Registry) -> None:
    agent = (await register(registry.stub, "tiny", tiny_agent("a"),
                            labels={f"seed{i}": "x" for i in range(32)})).agent
    agent_id = agent.agent_id
    cases = [
        (_update("", state="x"), "agent_id: is required"),
        (_update(agent_id, "", state="x"), "version: is required: an exact version such as 1.2.0"),
        (_update(agent_id, "latest", state="x"), 'version: "latest" is not a semantic version like 1.2.0'),
        (_update(agent_id), "set_labels: nothing to change: give set_labels or remove_labels"),
        (_update(agent_id, **{"Build State": "x"}),
         'set_labels[Build State]: keys are 1 to 63 characters of a-z, 0-9, "_", "." and "-"'),
        (_update(agent_id, **{"k" * 64: "x"}),
         f'set_labels[{"k" * 63}]: keys are 1 to 63 characters of a-z, 0-9, "_", "." and "-"'),
        (_update(agent_id, note="v" * 257), "set_labels[note]: value is 257 characters; the limit is 256"),
        (_update(agent_id, remove=("",)), "remove_labels[0]: keys are 1 to 63 characters"),
        (_update(agent_id, remove=("keep", "state"), state="x"),
         'remove_labels[1]: "state" is also in set_labels; set or remove a key, not both'),
        (_update(agent_id, request_id="r" * 129, state="x"), "request_id: 129 characters; the limit is 128"),
        (_update(agent_id, **{f"new{i}": "y" for i in range(33)}),
         "set_labels: the version would carry 65 labels; the limit is 64"),
    ]
    for request, message in cases:
        error = await rpc_error(registry.stub.UpdateAgentLabels(request))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert await _labels(registry, agent_id) == {f"seed{i}": "x" for i in range(32)}  # nothing half-written
    fits = await registry.stub.UpdateAgentLabels(_update(agent_id, remove=("seed0",),
                                                         **{f"new{i}": "y" for i in range(33)}))
    assert len(fits.agent.labels) == 64


async def test_update_agent_labels_invalidates_every_cached_get_agent_answer(registry: Registry) -> None:
    agent = (await register(registry.stub, "tiny", tiny_agent("a"), labels={"build_state": "unvalidated"})).agent
    requests = [pb2.GetAgentRequest(name="tiny"), pb2.GetAgentRequest(name="tiny", exclude_code=True),
                pb2.GetAgentRequest(agent_id=agent.agent_id, version="1.0.0"),
                pb2.GetAgentRequest(agent_id=agent.agent_id, exclude_code=True)]
    for request in requests:  # twice: the second answer comes from the cache
        assert (await registry.stub.GetAgent(request)).agent.labels["build_state"] == "unvalidated"
        assert (await registry.stub.GetAgent(request)).agent.labels["build_state"] == "unvalidated"
    await registry.stub.UpdateAgentLabels(_update(agent.agent_id, build_state="validated"))
    for request in requests:
        assert (await registry.stub.GetAgent(request)).agent.labels["build_state"] == "validated"


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # replicas, outages: Postgres + Redis only
async def test_update_agent_labels_invalidates_get_agent_on_another_replica(registry: Registry) -> None:
    replica = await registry.start_another()
    agent = (await register(registry.stub, "tiny", tiny_agent("a"), labels={"build_state": "unvalidated"})).agent
    requests = [pb2.GetAgentRequest(agent_id=agent.agent_id, version="1.0.0", exclude_code=True),
                pb2.GetAgentRequest(name="tiny")]
    for request in requests:
        assert (await replica.stub.GetAgent(request)).agent.labels["build_state"] == "unvalidated"
        assert (await replica.stub.GetAgent(request)).agent.labels["build_state"] == "unvalidated"
    await registry.stub.UpdateAgentLabels(_update(agent.agent_id, build_state="failed", build_error="CANCELLED"))

    async def replica_sees_it() -> bool:
        answers = [await replica.stub.GetAgent(request) for request in requests]
        return all(dict(a.agent.labels) == {"build_state": "failed", "build_error": "CANCELLED"} for a in answers)

    await eventually(replica_sees_it, timeout=2.0)
    # And the other way round, through a replica that never cached it.
    await replica.stub.UpdateAgentLabels(_update(agent.agent_id, remove=("build_error",)))

    async def first_sees_it() -> bool:
        return await _labels(registry, agent.agent_id) == {"build_state": "failed"}

    await eventually(first_sees_it, timeout=2.0)
