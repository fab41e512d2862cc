"""Workflow engine benchmark: 1000-node no-op DAGs end to end, next to their baselines and peers, in one run.

Shapes: wide (1 -> 998 parallel -> 1) and deep (a chain of 1000). Printed per node:
  * workflow   -- ExecuteWorkflow over gRPC to the final event, every event streamed, several to a
                  message when ready together (ExecuteWorkflowRequest.batch_events, as tdev_client streams);
                  every node runs in its own sandboxed process and every event and result is committed to
                  Postgres;
  * sandbox    -- the sandbox's own per-execution cost for the same shape (the floor): the same no-op
                  agent run 1000 times straight through tdev_common.sandbox, one at a time (deep) or with the
                  workflow's concurrency (wide), alternating with the workflow runs (best of ``--rounds`` each);
  * dbos       -- DBOS Transact on the same Postgres (its own database): one durable workflow, each node a
                  step run in-process (no isolation), its completion committed;
  * prefect    -- Prefect 3 (local ephemeral mode) running the same DAG of no-op tasks in one flow (a chain
                  as tasks called one after the other, other shapes submitted to a thread pool);
  * dask       -- dask's local threaded scheduler on the same DAG of no-op Python functions (no durability).
  * warm       -- both shapes again with the no-op opted in to warm-process reuse: nodes that start
                  together share a sandboxed process, up to TDEV_WORKFLOW_WARM_BATCH_SIZE (default 8) each, and
                  a node takes the idle warm process of an earlier one (a chain runs in one process, a fresh
                  one after every TDEV_SANDBOX_SESSION_MAX_INPUTS); still never across executions
                  (docs/workflow.md, "Warm-process reuse");
  * one event per message -- both shapes again with batch_events off (one gRPC message per event, as a
                  plain client like grpcurl gets them), printed beside (not a target).
Targets (issue 17): engine overhead (workflow - sandbox) <= 0.5 ms per node on both shapes, and workflow
<= 0.25x Prefect per node (checked for every node isolated, and for both shapes with warm reuse).

Needs Postgres (TDEV_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres; scratch
databases are created and dropped) and, when reachable, Redis. Run: ``python bench/bench_workflow.py``
(``--strict``: exit status 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import grpc  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
from services import NOOP_AGENT, Shape, create_workflow, execute, mesh  # noqa: E402
from tdev.workflow.v1 import workflow_pb2 as wf_pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc  # noqa: E402

from tdev_common.sandbox import Sandbox, SandboxSettings  # noqa: E402
from tdev_common.telemetry import configure_logging  # noqa: E402

NODES = 1000
CONCURRENCY = 16
OVERHEAD_TARGET_MS = 0.5
PREFECT_TARGET = 0.25


def wide() -> Shape:
    """1 -> 998 parallel -> 1."""
    middle = [f"m{i:03d}" for i in range(NODES - 2)]
    shape: Shape = {"start": []}
    shape.update({node_id: ["start"] for node_id in middle})
    shape["end"] = middle
    return shape


def deep() -> Shape:
    """A chain of 1000."""
    return {f"n{i:04d}": ([f"n{i - 1:04d}"] if i else []) for i in range(NODES)}


SHAPES: dict[str, Callable[[], Shape]] = {"wide": wide, "deep": deep}


async def bench_ours(shapes: dict[str, Shape], rounds: int) -> tuple[dict[str, float], dict[str, float],
                                                                      dict[str, Any]]:
    """(workflow ms per node, sandbox floor ms per node, info), each the best of ``rounds``.

    The services run as deployed, each its own process (``python -m registry_svc``, ``python -m
    workflow_svc``) on Postgres (and Redis when reachable); this process is only the gRPC client, and runs
    the floor through its own sandbox. Floor and workflow runs alternate within each round, so drifting
    load on the machine hits both alike.
    """
    workflow: dict[str, list[float]] = {shape: [] for shape in shapes}
    floor: dict[str, list[float]] = {shape: [] for shape in shapes}
    info: dict[str, Any] = {}
    env = {"TDEV_WORKFLOW_MAX_CONCURRENCY": str(CONCURRENCY), "TDEV_WORKFLOW_MAX_NODES": str(NODES)}
    async with mesh(env) as services:
        info["redis"] = services.redis
        sandbox = await Sandbox.start(SandboxSettings.for_embedded())
        try:
            async with grpc.aio.insecure_channel(services.workflow) as channel:
                stub = pb2_grpc.WorkflowServiceStub(channel)
                workflow_ids = {}
                for shape_name, shape in shapes.items():
                    workflow_ids[shape_name] = await create_workflow(stub, f"bench-{shape_name}", shape,
                                                                     services.agent_id, CONCURRENCY)
                    await _run_floor(sandbox, shape_name, 50)
                warm_ids = {shape_name: await create_workflow(stub, f"bench-{shape_name}-warm", shape,
                                                              services.warm_agent_id, CONCURRENCY)
                            for shape_name, shape in shapes.items()}
                # One warm-up for all: agent code cached, connections and the sandbox pools up. Each workflow's
                # first round also reads its definition (a few ms of a 1000-node run; the best round counts).
                await execute(stub, workflow_ids["wide"])
                warm: dict[str, list[float]] = {shape: [] for shape in shapes}
                per_message: dict[str, list[float]] = {shape: [] for shape in shapes}
                for _ in range(rounds):
                    for shape_name, shape in shapes.items():
                        started = time.perf_counter()
                        await execute(stub, warm_ids[shape_name], batch_events=True)
                        warm[shape_name].append((time.perf_counter() - started) * 1000 / len(shape))
                    for shape_name, shape in shapes.items():
                        floor[shape_name].append(await _run_floor(sandbox, shape_name, NODES) / NODES)
                        started = time.perf_counter()
                        events = await execute(stub, workflow_ids[shape_name], batch_events=True)
                        per_node = (time.perf_counter() - started) * 1000 / len(shape)
                        if not workflow[shape_name] or per_node < min(workflow[shape_name]):
                            info[shape_name] = in_run_costs(events, shape)
                        workflow[shape_name].append(per_node)
                        # Right after the batched run, so drifting load hits both alike.
                        started = time.perf_counter()
                        await execute(stub, workflow_ids[shape_name])
                        per_message[shape_name].append((time.perf_counter() - started) * 1000 / len(shape))
        finally:
            await sandbox.close()
    best = {shape: min(values) for shape, values in workflow.items()}
    info["warm"] = {shape: min(values) for shape, values in warm.items()}
    info["per_message"] = {shape: min(values) for shape, values in per_message.items()}
    return best, {shape: min(values) for shape, values in floor.items()}, info


async def _run_floor(sandbox: Sandbox, shape_name: str, count: int) -> float:
    """The sandbox alone, ``count`` no-op executions: one at a time (deep) or with the workflow's
    concurrency (wide); elapsed ms."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            outcome = await sandbox.run(NOOP_AGENT, {})
            assert outcome.ok, outcome

    started = time.perf_counter()
    if shape_name == "deep":
        for _ in range(count):
            await one()
    else:
        await one()
        await asyncio.gather(*(one() for _ in range(count - 2)))
        await one()
    return (time.perf_counter() - started) * 1000


def in_run_costs(events: list[wf_pb2.ExecutionEvent], shape: Shape) -> dict[str, float]:
    """From one run's own events (engine timestamps): mean ms per node of the sandbox-reported execution
    time, of each attempt as the engine saw it (start event to success event), and from a node's last
    dependency succeeding to the node starting (scheduling latency, plus waiting for a free slot)."""
    kind = wf_pb2.ExecutionEvent
    stamp = {e.sequence: e.time.ToMicroseconds() / 1000 for e in events}
    started = {e.node_id: stamp[e.sequence] for e in events if e.type == kind.TYPE_NODE_STARTED}
    done = {e.node_id: (stamp[e.sequence], e.duration_ms) for e in events if e.type == kind.TYPE_NODE_SUCCEEDED}
    ids = sorted(done)
    attempt = sum(done[n][0] - started[n] for n in ids) / len(ids)
    sandbox = sum(done[n][1] for n in ids) / len(ids)
    gaps = [started[n] - max(done[d][0] for d in shape[n]) for n in ids if shape[n]]
    return {"attempt": attempt, "sandbox": sandbox, "gap": sum(gaps) / len(gaps) if gaps else 0.0}


async def bench_dbos(shapes: dict[str, Shape]) -> dict[str, float] | str:
    """DBOS ms per node for each shape (one run after a warm-up workflow), or why it could not run."""
    async with peers.dbos() as runner:
        if isinstance(runner, str):
            return runner
        results = {}
        for shape_name, shape in shapes.items():
            results[shape_name] = await runner.dag(shape, CONCURRENCY) / len(shape)
        return results


def main() -> int:
    """Runs everything and prints a table with ratios and PASS/FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating workflow/floor rounds (best of)")
    report.add_arguments(parser)
    args = parser.parse_args()
    configure_logging("bench", "WARNING", json_lines=False)
    logging.getLogger().setLevel(logging.WARNING)
    out = report.Report("workflow", strict=args.strict)
    shapes = {name: make() for name, make in SHAPES.items()}
    print(f"{NODES}-node no-op DAGs, concurrency {CONCURRENCY} (other work on the machine skews every column)")
    workflow, floor, info = asyncio.run(bench_ours(shapes, args.rounds))
    load_ours = os.getloadavg()[0]
    dbos_result = asyncio.run(bench_dbos(shapes))
    dask_result: dict[str, float] | str = {}
    for name, shape in shapes.items():
        measured = peers.dask_dag(shape, CONCURRENCY)
        if isinstance(measured, str):
            dask_result = measured
            break
        assert isinstance(dask_result, dict)
        dask_result[name] = measured / len(shape)
    prefect_result = peers.prefect_dags(shapes, CONCURRENCY)
    if isinstance(prefect_result, dict):
        prefect_result = {name: ms / len(shapes[name]) for name, ms in prefect_result.items()}
    print(f"durability: Postgres (every event and node result committed); redis pub/sub: {info['redis']}; "
          f"load average after our runs {load_ours:.2f}, after the peers {report.load_average()}")

    def column(result: dict[str, float] | str, name: str) -> float:
        return result[name] if isinstance(result, dict) else float("nan")

    print(f"{'shape':<6} {'workflow':>10} {'sandbox':>10} {'overhead':>10} {'dbos':>10} {'prefect':>10} "
          f"{'dask':>10}   (ms per node)")
    for name in shapes:
        print(f"{name:<6} {workflow[name]:>10.3f} {floor[name]:>10.3f} {workflow[name] - floor[name]:>10.3f} "
              f"{column(dbos_result, name):>10.3f} {column(prefect_result, name):>10.3f} "
              f"{column(dask_result, name):>10.3f}")
    for name in shapes:
        out.check(f"{name}: engine overhead per node (workflow - sandbox)", workflow[name] - floor[name], "<=",
                  OVERHEAD_TARGET_MS, "ms", load=load_ours)
        if isinstance(prefect_result, dict):
            out.check(f"{name}: workflow / prefect per node", workflow[name] / prefect_result[name], "<=",
                      PREFECT_TARGET)
        if isinstance(dbos_result, dict):
            out.info(f"{name}: workflow / dbos per node",
                     f"{workflow[name] / dbos_result[name]:.2f}x (dbos steps run in-process, ours isolated)")
        if isinstance(dask_result, dict):
            out.info(f"{name}: workflow / dask per node",
                     f"{workflow[name] / dask_result[name]:.1f}x (dask: no durability, no isolation)")
    for name in shapes:
        warm = info["warm"][name]
        print(f"{name + ', warm reuse':<16} {warm:>10.3f} ms per node "
              f"({workflow[name] / warm:.1f}x faster than every node in a fresh process)")
    for name in shapes:
        warm = info["warm"][name]
        if isinstance(prefect_result, dict):
            out.check(f"{name}, warm reuse: workflow / prefect per node", warm / prefect_result[name], "<=",
                      PREFECT_TARGET)
        if isinstance(dbos_result, dict):
            out.info(f"{name}, warm reuse: workflow / dbos per node", f"{warm / dbos_result[name]:.2f}x")
    for peer, result in (("dbos", dbos_result), ("prefect", prefect_result), ("dask", dask_result)):
        if isinstance(result, str):
            out.fail(f"peer {peer}", result)
    for name in shapes:
        per_node = info["per_message"][name]
        out.info(f"{name}: one event per message (batch_events off)",
                 f"{per_node:.3f} ms per node, engine overhead {per_node - floor[name]:.3f} ms "
                 f"(several to a message: {workflow[name] - floor[name]:.3f} ms)")
    costs = info.get("deep")  # wide attempts also queue for sandbox slots, so only the chain is read this way
    if isinstance(costs, dict):
        out.info("deep: in the run itself, per node",
                 f"sandbox-reported execution {costs['sandbox']:.3f} ms, attempt as the engine saw it "
                 f"{costs['attempt']:.3f} ms, dependency-done to start {costs['gap']:.3f} ms")
    return out.finish()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
