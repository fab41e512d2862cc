"""The peers a user would pick instead of our workflow service, running the same no-op DAGs in-process.

* DBOS Transact (``dbos``): durable workflows on Postgres, its own scratch database; every node a
  ``@DBOS.step`` whose completion is committed, so a crash loses nothing (the same durability as ours);
* Prefect 3 in its local ephemeral mode: one flow, one task per node;
* dask's local threaded scheduler: no durability at all, the floor of "scheduling a Python function".

None of them isolates the node code: the steps run inside the benchmark's own process. Each runner returns
milliseconds (or a string saying why the peer could not run: that is reported as a FAIL, never skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services import Shape, scratch_database


def noop(*_dependencies: Any) -> None:
    """The no-op task of the baselines."""
    return None


def sinks(shape: Shape) -> list[str]:
    """Nodes nothing depends on."""
    needed = {dep for deps in shape.values() for dep in deps}
    return [node_id for node_id in shape if node_id not in needed]


# -- dask -----------------------------------------------------------------------------------------------------
def dask_dag(shape: Shape, concurrency: int) -> float | str:
    """Milliseconds for one run of the DAG on dask's threaded scheduler (after a warm-up run)."""
    try:
        import dask.threaded
    except ImportError:
        return "dask is not installed (pip install '.[bench]')"
    graph = {node_id: (noop, *deps) for node_id, deps in shape.items()}
    dask.threaded.get(graph, sinks(shape), num_workers=concurrency)
    started = time.perf_counter()
    dask.threaded.get(graph, sinks(shape), num_workers=concurrency)
    return (time.perf_counter() - started) * 1000


# -- prefect --------------------------------------------------------------------------------------------------
def prefect_dags(shapes: dict[str, Shape], concurrency: int) -> dict[str, float] | str:
    """Milliseconds per shape with Prefect 3 (local ephemeral mode): one flow, one task per node."""
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    # No network here: no telemetry, no update checks (they only fail and log).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-bench-"))
    try:
        from prefect import flow, task
        from prefect.task_runners import ThreadPoolTaskRunner
    except ImportError:
        return "prefect is not installed (pip install '.[bench]')"
    prefect_noop = task(noop, name="noop", persist_result=False)  # type: ignore[call-overload]

    def make_flow(shape: Shape) -> Any:
        runner: Any = ThreadPoolTaskRunner(max_workers=concurrency)

        @flow(name="bench", task_runner=runner, persist_result=False)
        def run() -> None:
            futures: dict[str, Any] = {}
            for node_id, deps in shape.items():
                futures[node_id] = prefect_noop.submit(wait_for=[futures[d] for d in deps])
            for future in futures.values():
                future.wait()

        return run

    results = {}
    make_flow({"warm": []})()
    for shape_name, shape in shapes.items():
        run = make_flow(shape)
        started = time.perf_counter()
        run()
        results[shape_name] = (time.perf_counter() - started) * 1000
    return results


# -- DBOS -----------------------------------------------------------------------------------------------------
class Dbos:
    """DBOS Transact launched in this process on its own scratch Postgres database.

    A DAG is one ``@DBOS.workflow`` (async) in which each node is a ``@DBOS.step`` started as soon as its
    dependencies finished, with at most ``concurrency`` steps in flight (the same bound as ours): DBOS
    records each step's completion in Postgres before the workflow goes on, and the workflow's own
    status at start and end.
    """

    def __init__(self, run_dag: Callable[[Shape, int], Awaitable[int]]) -> None:
        self.run_dag = run_dag

    async def dag(self, shape: Shape, concurrency: int) -> float:
        """Milliseconds for one workflow over the DAG."""
        started = time.perf_counter()
        count = await self.run_dag(shape, concurrency)
        elapsed = (time.perf_counter() - started) * 1000
        assert count == len(shape), count
        return elapsed


@contextlib.asynccontextmanager
async def dbos() -> AsyncIterator[Dbos | str]:
    """DBOS launched on a scratch database (destroyed afterwards), or why it cannot run here."""
    try:
        from dbos import DBOS, DBOSConfig
    except ImportError:
        yield "dbos is not installed (pip install '.[bench]')"
        return
    async with scratch_database("h17_dbos_bench") as url:
        config: DBOSConfig = {"name": "tdev-bench", "system_database_url": url, "log_level": "WARNING",
                              "sys_db_pool_size": 40}
        DBOS(config=config)
        logging.getLogger("dbos").setLevel(logging.WARNING)

        @DBOS.step()
        async def noop_step() -> None:
            return None

        @DBOS.workflow()
        async def run_dag(shape: Shape, concurrency: int) -> int:
            loop = asyncio.get_running_loop()
            finished = {node_id: loop.create_future() for node_id in shape}
            slots = asyncio.Semaphore(concurrency)

            async def node(node_id: str) -> None:
                for dep in shape[node_id]:
                    await finished[dep]
                async with slots:
                    await noop_step()
                finished[node_id].set_result(None)

            await asyncio.gather(*(node(node_id) for node_id in shape))
            return len(shape)

        try:
            await asyncio.to_thread(DBOS.launch)
            runner = Dbos(run_dag)
            await runner.dag({"warm": []}, 1)
            yield runner
        finally:
            await asyncio.to_thread(DBOS.destroy, destroy_registry=True)


# -- many small executions ------------------------------------------------------------------------------------
async def closed_loop(one: Callable[[], Awaitable[None]], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` callers, each starting its next execution as soon as its last one finished, for
    ``seconds``: executions per second and start-to-finish latency percentiles (ms)."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await one()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"rate": len(latencies) / elapsed, "count": float(len(latencies)),
            "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]}
