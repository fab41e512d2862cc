"""The peers a user would pick instead of our workflow service, running the same no-op DAGs in-process.

* DBOS Transact (``dbos``): durable workflows on Postgres, its own scratch database; every node a
  ``@DBOS.step`` whose completion is committed, so a crash loses nothing (the same durability as ours);
* Prefect 3 in its local ephemeral mode: one flow, one task per node, submitted to a thread pool with
  ``wait_for`` its dependencies, or, for a chain, called one after the other in the flow (how Prefect's
  documentation writes sequential work; submitting a chain is much slower and erratic);
* dask's local threaded scheduler: no durability at all, the floor of "scheduling a Python function".

None of them isolates the node code: the steps run inside the benchmark's own process. Each runner returns
milliseconds (or a string saying why the peer could not run: that is reported as a FAIL, never skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services import Shape, scratch_database


def noop(*_dependencies: Any) -> None:
    """The no-op task of the baselines."""
    return None


def is_chain(shape: Shape) -> bool:
    """True when the DAG is one path: no two of its nodes could ever run at the same time."""
    dependents = [dep for deps in shape.values() for dep in deps]
    roots = [node_id for node_id, deps in shape.items() if not deps]
    return len(roots) == 1 and all(len(deps) <= 1 for deps in shape.values()) and \
        len(dependents) == len(set(dependents))


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
    """Milliseconds per shape with Prefect 3 (local ephemeral mode): one flow, one task per node, each shape
    in a fresh process with its own ephemeral server.

    A fresh server per shape because Prefect's server goes on recording a finished flow's task events in the
    background: 36-50 s after a 1000-task flow of 7-9 s here. A second flow started in that time ran 8-12x
    slower per node (75-83 against 7-9 ms), so whichever shape ran second measured the backlog, not Prefect.
    The processes share one Prefect home: the second server finds its database migrated (10 s less), as
    any deployed server does.
    """
    results = {}
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="prefect-bench-")}
    for shape_name, shape in shapes.items():
        answer = subprocess.run([sys.executable, __file__, "prefect", str(concurrency)], input=json.dumps(shape),
                                capture_output=True, text=True, check=False, env=env)
        lines = answer.stdout.strip().splitlines()
        if answer.returncode != 0 or not lines:
            return lines[-1] if lines else f"prefect exited with status {answer.returncode}: {answer.stderr[-500:]}"
        try:
            results[shape_name] = float(lines[-1])
        except ValueError:
            return lines[-1]
    return results


def _prefect_dag(shape: Shape, concurrency: int) -> float | str:
    """Milliseconds for one flow over ``shape`` after a one-task warm-up flow (run in a fresh process)."""
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
        order = list(graphlib.TopologicalSorter(shape).static_order())

        if is_chain(shape):
            # Nothing can run in parallel, so a Prefect user calls the tasks one after the other in the flow.
            # Submitting a chain instead parks pool threads on their upstream futures: 3-6x slower per node
            # here (21-46 against 7 ms), and erratic.
            @flow(name="bench", task_runner=runner, persist_result=False)
            def run_chain() -> None:
                for _ in order:
                    prefect_noop()

            return run_chain

        @flow(name="bench", task_runner=runner, persist_result=False)
        def run() -> None:
            futures: dict[str, Any] = {}
            for node_id in order:
                futures[node_id] = prefect_noop.submit(wait_for=[futures[d] for d in shape[node_id]])
            for future in futures.values():
                future.wait()

        return run

    make_flow({"warm": []})()
    run = make_flow(shape)
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


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


if __name__ == "__main__" and sys.argv[1:2] == ["prefect"]:
    # One Prefect measurement in this fresh process: the shape as JSON on stdin, milliseconds (or why it
    # could not run) as the last line of stdout.
    print(_prefect_dag(json.load(sys.stdin), int(sys.argv[2])), flush=True)
