"""A watcher on another replica hears of a run's generations through Redis at once, not at its safety poll."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from tdev.evolution.v1 import evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2

from tests.conftest import REDIS_URL, require_service
from tests.evolution.conftest import _start_evolution, start_mesh, suite_message
from tests.evolution.test_grpc_lifecycle import SCALER, SCALER_SUITE

pytestmark = pytest.mark.mesh
QUIET_POLL_SECONDS = 30.0


async def test_a_watcher_on_another_replica_follows_a_run_live(
    tmp_path: Path, make_postgres_database: Callable[[], str]
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    mesh = await start_mesh(tmp_path, database="postgres", postgres=make_postgres_database, redis_url=REDIS_URL,
                            watch_poll_seconds=QUIET_POLL_SECONDS,
                            redis_channel=f"tdev:test:evolution:{uuid.uuid4().hex[:8]}")
    try:
        # A second replica on the same database that runs nothing itself: it only streams.
        watcher_handle, watcher = await _start_evolution(mesh, max_concurrent_runs=0)
        try:
            await mesh.register("scaler", SCALER)
            # Started where it runs (a replica starts its own new runs at once); watched on the other one.
            started = await mesh.evolution.StartEvolution(pb2.StartEvolutionRequest(
                agent_id="scaler", suite=suite_message(SCALER_SUITE),
                config=evolution_pb2.EvolutionConfig(operators=evolution_pb2.OPERATOR_SET_PROGRAM_TRANSFORM,
                                                     population_size=6, generations=3, seed=7)))
            began = time.monotonic()

            async def follow() -> list[evolution_pb2.EvolutionEvent]:
                stream = watcher.WatchEvolution(pb2.WatchEvolutionRequest(run_id=started.run.run_id))
                return [message.event async for message in stream]

            events = await asyncio.wait_for(follow(), timeout=QUIET_POLL_SECONDS / 2)
            followed_for = time.monotonic() - began
        finally:
            await watcher_handle.close(grace=0.5)
    finally:
        await mesh.close()
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert events[-1].type == evolution_pb2.EvolutionEvent.TYPE_RUN_SUCCEEDED
    assert followed_for < QUIET_POLL_SECONDS / 3, followed_for


async def test_the_stream_fails_cleanly_for_an_unknown_run(tmp_path: Path) -> None:
    mesh = await start_mesh(tmp_path)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in mesh.evolution.WatchEvolution(pb2.WatchEvolutionRequest(run_id="evo_none")):
                pass
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await mesh.close()
