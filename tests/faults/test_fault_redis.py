"""Redis faults (issue #18): a hung or killed Redis never stalls the engine, watchers or GetAgent, and never
leaves a stale GetAgent answer behind for longer than the documented bound (docs/registry.md)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from redis.exceptions import RedisError
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_common.cache import RedisCache, RedisUnavailable
from tdev_common.clock import utc_now
from tdev_common.config import CommonSettings
from tests.registry.conftest import Registry, Stack, register, start_registry, tiny_agent
from tests.support.servers import RedisServer
from tests.workflow.conftest import (
    AGENTS,
    Mesh,
    _NoAnalyzer,
    assert_gapless,
    create,
    create_database,
    definition,
    drop_database,
    node,
)
from workflow_svc.bus import EventBus
from workflow_svc.domain import Event, EventType

pytestmark = [pytest.mark.mesh, pytest.mark.fault]

Figure = Callable[[str, float, str], None]
WATCH_POLL_SECONDS = 1.0  # the second replica's fallback while Redis carries nothing
CHAIN = 8  # nodes in the workflow run through an outage
NODE_SECONDS = 0.25
# docs/registry.md, "Cache consistency when Redis fails", with the default settings.
STALENESS_BOUND = max(RegistrySettings().cache_heartbeat_seconds + 2 * CommonSettings().redis_timeout_seconds,
                      RegistrySettings().cache_degraded_ttl_seconds)


# -- a mesh (registry + workflow replicas) on the test's own Redis ------------------------------------------
@dataclass
class OwnRedisMesh(Mesh):
    """The workflow tests' mesh, but every service talks to a Redis the test may pause or kill."""

    redis_url: str = ""

    def common(self, redis: bool = True) -> CommonSettings:
        return CommonSettings(data_dir=self.tmp_path / "data", redis_url=self.redis_url if redis else None,
                              registry_address=self.registry_address, log_json=True, log_level="WARNING")


@pytest.fixture
async def redis_mesh(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[OwnRedisMesh]:
    registry_db = await create_database()
    workflow_db = await create_database()
    common = CommonSettings(data_dir=tmp_path / "data", redis_url=own_redis.url, log_json=True,
                            log_level="WARNING")
    settings = RegistrySettings(database_url=registry_db, analysis_workers=0,
                                cache_namespace=f"tdev-test:{uuid.uuid4().hex[:8]}:")
    handle = await create_registry(settings, common, port=0, analyzer=_NoAnalyzer())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}")
    from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc

    mesh = OwnRedisMesh(tmp_path, handle, reg_pb2_grpc.RegistryServiceStub(channel), channel, workflow_db,
                        redis_url=own_redis.url)
    mesh.extra_databases.append(registry_db)
    for name in ("wf_noop", "wf_sleep"):
        answer = await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(name=name, code=AGENTS[name]))
        mesh.agents[name] = answer.agent.agent_id
    try:
        yield mesh
    finally:
        await mesh.close()
        for url in (workflow_db, *mesh.extra_databases):
            await drop_database(url)


def chain_workflow() -> wf_pb2.Workflow:
    nodes = [node("n0", "wf_noop")]
    for i in range(1, CHAIN):
        nodes.append(node(f"n{i}", "wf_sleep", {"seconds": NODE_SECONDS, "value": i}, [f"n{i - 1}"]))
    return definition(f"chain-{uuid.uuid4().hex[:6]}", nodes)


@dataclass
class Watched:
    """What one watcher received, with how late each event arrived."""

    events: list[wf_pb2.ExecutionEvent]
    delays: list[float]

    @property
    def max_delay(self) -> float:
        return max(self.delays)


async def watch_timed(stub: pb2_grpc.WorkflowServiceStub, execution_id: str) -> Watched:
    """WatchExecution to the end; the delay of an event is its arrival minus the time it happened."""
    events: list[wf_pb2.ExecutionEvent] = []
    delays: list[float] = []
    call = stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id), timeout=60)
    async for answer in call:
        arrived = time.time()
        events.append(answer.event)
        delays.append(arrived - answer.event.time.ToMicroseconds() / 1e6)
    return Watched(events, delays)


async def run_watched(owner: pb2_grpc.WorkflowServiceStub, other: pb2_grpc.WorkflowServiceStub,
                      workflow_id: str) -> tuple[Watched, Watched, float]:
    """Starts an execution on ``owner`` and watches it there and on ``other``; returns both and its wall time."""
    started = time.monotonic()
    answer = await owner.StartExecution(pb2.StartExecutionRequest(workflow_id=workflow_id))
    execution_id = answer.execution.execution_id
    on_owner, on_other = await asyncio.gather(watch_timed(owner, execution_id), watch_timed(other, execution_id))
    return on_owner, on_other, time.monotonic() - started


def assert_complete(watched: Watched) -> None:
    assert_gapless(watched.events)
    assert watched.events[-1].type == wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED
    assert {e.node_id for e in watched.events if e.type == wf_pb2.ExecutionEvent.TYPE_NODE_SUCCEEDED} == {
        f"n{i}" for i in range(CHAIN)}


async def outage_then_recovery(mesh: OwnRedisMesh, figure: Figure, label: str,
                               fail: Callable[[], None], recover: Callable[[], None]) -> None:
    """Runs a workflow through a Redis outage, then checks that cross-replica delivery comes back."""
    owner = await mesh.start_workflows(worker_id=f"owner-{uuid.uuid4().hex[:4]}",
                                       watch_poll_seconds=WATCH_POLL_SECONDS)
    other = await mesh.start_workflows(worker_id=f"other-{uuid.uuid4().hex[:4]}",
                                       watch_poll_seconds=WATCH_POLL_SECONDS)
    workflow = await create(owner.stub, chain_workflow())
    # Warm up with Redis healthy: the engine has the agents' code and both replicas are subscribed.
    warm_owner, warm_other, _ = await run_watched(owner.stub, other.stub, workflow.workflow_id)
    assert_complete(warm_owner)
    assert_complete(warm_other)

    fail()
    try:
        on_owner, on_other, wall = await run_watched(owner.stub, other.stub, workflow.workflow_id)
    finally:
        recover()
    assert_complete(on_owner)
    assert_complete(on_other)
    figure(f"redis {label}: watcher max delay, owning replica", on_owner.max_delay, "s")
    figure(f"redis {label}: watcher max delay, second replica", on_other.max_delay, "s")
    figure(f"redis {label}: execution wall time ({CHAIN - 1} x {NODE_SECONDS} s nodes)", wall, "s")
    # Committing and local delivery never wait for Redis.
    assert on_owner.max_delay < 0.5, on_owner.delays
    # The second replica falls back to reading storage every watch_poll_seconds.
    assert on_other.max_delay < WATCH_POLL_SECONDS + 0.75, on_other.delays
    assert wall < (CHAIN - 1) * NODE_SECONDS + 3.0

    # Back: the second replica hears of new events through Redis again, well before its storage poll
    # (short executions, so the time it takes is measured finely). Their events span more than 0.45 s, so
    # one storage poll (every second) cannot deliver all of them within 0.3 s: only notices can.
    short = await create(owner.stub, definition(f"short-{uuid.uuid4().hex[:6]}", [
        node("n0", "wf_noop"), *(node(f"n{i}", "wf_sleep", {"seconds": 0.15}, [f"n{i - 1}"]) for i in (1, 2, 3))]))
    recovered_at = time.monotonic()
    while True:
        after_owner, after_other, _ = await run_watched(owner.stub, other.stub, short.workflow_id)
        for watched in (after_owner, after_other):
            assert_gapless(watched.events)
            assert watched.events[-1].type == wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED
        if after_other.max_delay < 0.3:
            break
        assert time.monotonic() - recovered_at < 15.0, f"cross-replica delivery did not resume: {after_other.delays}"
    figure(f"redis {label}: cross-replica delivery back after recovery within", time.monotonic() - recovered_at, "s")
    figure(f"redis {label}: second-replica max delay once recovered", after_other.max_delay, "s")


async def test_workflows_and_watchers_keep_going_while_redis_is_paused(
        redis_mesh: OwnRedisMesh, own_redis: RedisServer, figure: Figure) -> None:
    await outage_then_recovery(redis_mesh, figure, "paused", own_redis.pause, own_redis.resume)


async def test_workflows_and_watchers_keep_going_while_redis_is_killed(
        redis_mesh: OwnRedisMesh, own_redis: RedisServer, figure: Figure) -> None:
    # A restarted Redis comes back on the same port, empty.
    await outage_then_recovery(redis_mesh, figure, "killed", own_redis.kill, own_redis.start)


async def test_publishing_never_waits_for_a_hung_redis(own_redis: RedisServer, figure: Figure) -> None:
    bus = EventBus(own_redis.url, f"tdev:test:{uuid.uuid4().hex[:8]}", max_buffer=100)
    await bus.start()
    try:
        subscription = bus.subscribe("ex_1")
        own_redis.pause()
        try:
            slowest = 0.0
            for sequence in range(1, 51):
                event = Event("ex_1", sequence, EventType.NODE_STARTED, utc_now(), node_id="n")
                started = time.monotonic()
                async with asyncio.timeout(5):  # a hung call fails the test instead of hanging it
                    await bus.published("ex_1", [event])
                    await bus.cancel("ex_2", "test")
                    await bus.work_available()
                slowest = max(slowest, time.monotonic() - started)
            assert [e.sequence for e in subscription.buffer] == list(range(1, 51))
        finally:
            own_redis.resume()
        figure("redis paused: slowest publish/cancel/work notice call", slowest, "s")
        assert slowest < 0.05
    finally:
        await bus.close()


async def test_queued_notices_are_bounded_while_redis_hangs_and_sent_once_it_is_back(own_redis: RedisServer) -> None:
    from redis.asyncio import Redis

    channel = f"tdev:test:{uuid.uuid4().hex[:8]}"
    bus = EventBus(own_redis.url, channel, max_buffer=100, max_queued_notices=100)
    await bus.start()
    listener = Redis.from_url(own_redis.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    try:
        own_redis.pause()
        try:
            for i in range(500):
                await bus.published(f"ex_{i}", [Event(f"ex_{i}", 1, EventType.NODE_STARTED, time.time())])
            await asyncio.sleep(0.1)
        finally:
            own_redis.resume()
        announced: set[str] = set()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and len(announced) < 100:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                announced.add(json.loads(message["data"])["x"])
        # Anything still to come would be a notice beyond the bound.
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
            announced.add(json.loads(message["data"])["x"])
        # The newest notices were kept, the oldest dropped.
        assert announced == {f"ex_{i}" for i in range(400, 500)}
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await bus.close()


# -- the registry's GetAgent cache ----------------------------------------------------------------------------
@pytest.fixture
async def registry_pair(own_redis: RedisServer, make_postgres_database: Callable[[], str],
                        tmp_path: Path) -> AsyncIterator[tuple[Registry, Registry]]:
    stack = Stack("postgres", make_postgres_database(), own_redis.url)
    first = await start_registry(stack, tmp_path, analysis_workers=0)
    try:
        second = await first.start_another(analysis_workers=0)
        yield first, second
    finally:
        for other in first.others:
            await other.close()
        await first.close()


async def _labels(registry: Registry, agent_id: str) -> dict[str, str]:
    answer = await registry.stub.GetAgent(
        reg_pb2.GetAgentRequest(agent_id=agent_id, version="1.0.0", exclude_code=True), timeout=10)
    return dict(answer.agent.labels)


async def _fresh_within(check: Callable[[], Awaitable[bool]], limit: float) -> float:
    """Seconds until ``check`` holds; fails past ``limit``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"still stale after {limit} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_label_change_during_a_redis_stall_is_served_within_the_bound(
        registry_pair: tuple[Registry, Registry], own_redis: RedisServer, figure: Figure) -> None:
    first, second = registry_pair
    agent = (await register(first.stub, "stall", tiny_agent("stall"))).agent
    # Both replicas (and the shared tier) hold the unlabelled answer.
    for replica in (first, second):
        for _ in range(3):
            assert await _labels(replica, agent.agent_id) == {}

    own_redis.pause()
    paused_at = time.monotonic()
    try:
        answer = await first.stub.UpdateAgentLabels(reg_pb2.UpdateAgentLabelsRequest(
            agent_id=agent.agent_id, version="1.0.0", set_labels={"stage": "final"}), timeout=10)
        assert dict(answer.agent.labels) == {"stage": "final"}
        changed_at = time.monotonic()

        async def both_fresh() -> bool:
            return all([await _labels(replica, agent.agent_id) == {"stage": "final"} for replica in (first, second)])

        during = await _fresh_within(both_fresh, STALENESS_BOUND + 1.0)
        # Keep the stall going for a while (the issue paused Redis 5 s): answers must stay fresh.
        while time.monotonic() - paused_at < 4.0:
            assert await both_fresh()
            await asyncio.sleep(0.1)
    finally:
        own_redis.resume()
    figure("redis paused: label change visible on both replicas after", during, "s")
    # Redis is back with the old answer still in its shared tier until the invalidation is published.
    after = time.monotonic()
    for _ in range(40):
        assert await both_fresh(), "a stale answer came back from Redis after it recovered"
        await asyncio.sleep(0.05)
    figure("redis paused: UpdateAgentLabels latency while Redis hangs", changed_at - paused_at, "s")
    assert time.monotonic() - after < 10


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def test_get_agent_stays_fast_while_redis_hangs(
        registry_pair: tuple[Registry, Registry], own_redis: RedisServer, figure: Figure) -> None:
    first, _second = registry_pair
    agents = [(await register(first.stub, f"fast{i}", tiny_agent(f"fast{i}"))).agent for i in range(6)]
    # Every request below is a miss of the in-process cache, so each one would consult Redis.
    requests = [reg_pb2.GetAgentRequest(agent_id=a.agent_id, exclude_code=c) for a in agents for c in (False, True)]
    requests += [reg_pb2.GetAgentRequest(name=a.name, exclude_code=c) for a in agents for c in (False, True)]
    requests += [reg_pb2.GetAgentRequest(agent_id=a.agent_id, version="1.0.0", exclude_code=c)
                 for a in agents for c in (False, True)]
    own_redis.pause()
    latencies: list[float] = []
    try:
        for request in requests:
            started = time.monotonic()
            try:
                answer = await first.stub.GetAgent(request, timeout=3)
                assert answer.agent.agent_id in {a.agent_id for a in agents}
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            latencies.append(time.monotonic() - started)
            if sum(latencies) > 15:
                break  # a hung cache: no need to wait for every request to fail the same way
    finally:
        own_redis.resume()
    figure("redis paused: GetAgent p50 (cache misses)", statistics.median(latencies), "s")
    figure("redis paused: GetAgent p99 (cache misses)", _percentile(latencies, 0.99), "s")
    figure("redis paused: GetAgent max (cache misses)", max(latencies), "s")
    assert len(latencies) == len(requests)
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 1.0, latencies



# -- every Redis client ---------------------------------------------------------------------------------------
def test_every_redis_client_is_built_with_timeouts() -> None:
    # A client opened anywhere else would miss the socket timeouts that keep a hung Redis from stalling callers.
    root = Path(__file__).resolve().parents[2]
    packages = ("tdev_common", "registry_svc", "workflow_svc", "builder_svc", "evolution_svc", "tdev_cli")
    opened = [str(path.relative_to(root)) for package in packages for path in (root / package).rglob("*.py")
              if "redis.asyncio" in path.read_text(encoding="utf-8")]
    assert opened == ["tdev_common/cache.py"]


async def test_shared_cache_fails_fast_while_redis_hangs_and_recovers(own_redis: RedisServer, figure: Figure) -> None:
    cache = RedisCache(own_redis.url, f"tdev-test:{uuid.uuid4().hex[:8]}:")
    try:
        await cache.set("k", b"v")
        own_redis.pause()
        latencies: list[float] = []
        try:
            for _ in range(20):
                started = time.monotonic()
                with pytest.raises((RedisError, RedisUnavailable)):  # a timeout first, then skipped at once
                    async with asyncio.timeout(5):
                        await cache.get("k")
                latencies.append(time.monotonic() - started)
        finally:
            own_redis.resume()
        figure("redis paused: shared cache get, first call (socket timeout)", latencies[0], "s")
        figure("redis paused: shared cache get, later calls max", max(latencies[1:]), "s")
        assert latencies[0] < CommonSettings().redis_timeout_seconds + 0.25
        assert max(latencies[1:]) < 0.01

        async def answers() -> bool:
            try:
                return await cache.get("k") == b"v"
            except (RedisError, RedisUnavailable):
                return False

        await _fresh_within(answers, 3.0)
    finally:
        await cache.close()
