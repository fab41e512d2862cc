"""``python -m evolution_svc`` killed with SIGKILL mid-run resumes from its last finished generation after a
restart and completes the same run an uninterrupted service completes, with every candidate stored once (SQLite,
and Postgres with Redis)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tdev.evolution.v1 import evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_pb2_grpc

from registry_svc.config import RegistrySettings
from registry_svc.server import create_server as create_registry
from tdev_common.config import CommonSettings
from tests.evolution.conftest import ROOT, example_code, example_suite_json, suite_message
from tests.evolution.test_grpc_examples import EXPECTED
from tests.support.ports import free_port

pytestmark = pytest.mark.mesh  # real servers or subprocesses

E = evolution_pb2.EvolutionEvent


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while asyncio.get_running_loop().time() < deadline:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="tdev.evolution.v1.EvolutionService"), timeout=1
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"evolution service at {address} never became SERVING")


async def spawn(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evolution_svc",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_serving(f"127.0.0.1:{env['TDEV_EVOLUTION_PORT']}")
    return process


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_kill_9_mid_run_resumes_from_the_last_finished_generation(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis_url = None
    if database == "sqlite":
        evolution_db = f"sqlite+aiosqlite:///{tmp_path / 'evolution.sqlite'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        evolution_db = make()
        redis_url = request.getfixturevalue("redis_url")
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    registry = await create_registry(
        RegistrySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}", analysis_workers=0),
        common,
        port=0,
    )
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TDEV_")}
    env.update(
        {
            "TDEV_DATA_DIR": str(tmp_path / "data"),
            "TDEV_LOG_LEVEL": "WARNING",
            "TDEV_REGISTRY_ADDRESS": f"127.0.0.1:{registry.port}",
            "TDEV_EVOLUTION_PORT": str(port),
            "TDEV_EVOLUTION_DATABASE_URL": evolution_db,
            "TDEV_EVOLUTION_LEASE_SECONDS": "1.5",
            "TDEV_EVOLUTION_CLAIM_INTERVAL_SECONDS": "0.2",
            "TDEV_EVOLUTION_WATCH_POLL_SECONDS": "0.2",
            "TDEV_EVOLUTION_CACHE_NAMESPACE": f"tdev-test:{uuid.uuid4().hex[:10]}:",
            "TDEV_EVOLUTION_CACHE_SIGNING_KEY": "test-signing-key",
        }
    )
    if redis_url:
        env["TDEV_REDIS_URL"] = redis_url
    process = await spawn(env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    registry_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}")
    try:
        await registry_pb2_grpc.RegistryServiceStub(registry_channel).RegisterAgent(
            registry_pb2.RegisterAgentRequest(name="shipping_cost", code=example_code("shipping_cost"))
        )
        stub = pb2_grpc.EvolutionServiceStub(channel)
        run = (
            await stub.StartEvolution(
                pb2.StartEvolutionRequest(
                    agent_id="shipping_cost",
                    suite=suite_message(example_suite_json("shipping_cost")),
                    config=evolution_pb2.EvolutionConfig(
                        population_size=20,
                        generations=6,
                        seed=3,
                        plateau_generations=0,
                        speed_weight=0.0,
                        operators=evolution_pb2.OPERATOR_SET_PROGRAM_TRANSFORM,
                    ),
                )
            )
        ).run
        seen: list[evolution_pb2.EvolutionEvent] = []
        async for message in stub.WatchEvolution(pb2.WatchEvolutionRequest(run_id=run.run_id)):
            seen.append(message.event)
            if message.event.report.generation == 2:
                process.send_signal(signal.SIGKILL)
                break
        assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
        process = await spawn(env)
        rest = [
            m.event
            async for m in stub.WatchEvolution(
                pb2.WatchEvolutionRequest(run_id=run.run_id, after_sequence=seen[-1].sequence), timeout=60
            )
        ]
        events = [*seen, *rest]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        resumed = [i for i, e in enumerate(events) if e.type == E.TYPE_RUN_RESUMED]
        assert len(resumed) == 1
        before = events[resumed[0] - 1]
        assert before.type == E.TYPE_GENERATION_COMPLETED and before.report.generation >= 2
        assert events[resumed[0]].message == (f"resumed from the checkpoint of generation {before.report.generation}")
        generations = [e.report.generation for e in events if e.type == E.TYPE_GENERATION_COMPLETED]
        assert generations == [1, 2, 3, 4, 5, 6]
        assert events[-1].type == E.TYPE_RUN_SUCCEEDED
        final = (await stub.GetEvolution(pb2.GetEvolutionRequest(run_id=run.run_id))).run
        seed_fitness, bests, _ = EXPECTED["shipping_cost"]
        assert (final.seed_fitness, [g.best_fitness for g in final.generations]) == (seed_fitness, bests)
        assert final.state == evolution_pb2.EvolutionRun.STATE_SUCCEEDED and final.promotion.promoted
        # Each generation's children are stored with its event, once: the kill lost none and added none.
        listed = await stub.ListCandidates(pb2.ListCandidatesRequest(run_id=run.run_id, page_size=500,
                                                                     exclude_code=True))
        per_generation = {g: sum(1 for c in listed.candidates if c.generation == g) for g in range(7)}
        assert per_generation == {0: 1, **{g.generation: g.evaluations for g in final.generations}}
    finally:
        await channel.close()
        await registry_channel.close()
        if process.returncode is None:
            process.terminate()
            await process.wait()
        await registry.close(grace=1.0)
