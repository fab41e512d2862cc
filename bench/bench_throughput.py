"""Many small executions: 5-node workflows, 200 started concurrently and back to back for a fixed time.

Each of 200 callers starts an execution, waits for its end and starts the next, for ``--seconds``; printed
for each system: executions per second and the p50/p99 start-to-finish latency the caller saw.
  * ours -- ExecuteWorkflow over gRPC (``batch_events``, as tdev_client asks) against ``python -m workflow_svc``
            (and the registry) on Postgres:
            every node runs in its own sandboxed process, every event and node result is committed before
            it is streamed; the replica runs all 200 at once (TDEV_WORKFLOW_MAX_ACTIVE_EXECUTIONS=200);
  * dbos -- DBOS Transact on the same Postgres (its own database): the same DAG as one durable workflow
            whose nodes are steps run in-process (no isolation), each step's completion committed.
The workflow is a diamond of no-op nodes: a -> (b, c, d) -> e. Target (issue 17): our executions per second
at least DBOS's. Run: ``python bench/bench_throughput.py [--seconds 8] [--clients 200] [--strict]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import grpc  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
from services import Shape, create_workflow, execute, mesh  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc  # noqa: E402

from tdev_common.telemetry import configure_logging  # noqa: E402

DIAMOND: Shape = {"a": [], "b": ["a"], "c": ["a"], "d": ["a"], "e": ["b", "c", "d"]}
CONCURRENCY = 16  # per execution; more than a diamond needs


async def bench_ours(clients: int, seconds: float) -> dict[str, float]:
    """Closed-loop figures for our service, plus its CPU seconds per execution."""
    env = {"TDEV_WORKFLOW_MAX_ACTIVE_EXECUTIONS": str(max(64, clients))}
    async with mesh(env) as services:
        # Several channels: one HTTP/2 connection would serialise 200 streams through one socket and one
        # client-side reader, which measures the client, not the service.
        channels = [grpc.aio.insecure_channel(services.workflow) for _ in range(4)]
        try:
            stubs = [pb2_grpc.WorkflowServiceStub(channel) for channel in channels]
            workflow_id = await create_workflow(stubs[0], "bench-diamond", DIAMOND, services.agent_id, CONCURRENCY)
            turn = 0

            async def one() -> None:
                nonlocal turn
                turn += 1
                await execute(stubs[turn % len(stubs)], workflow_id, batch_events=True)

            await peers.closed_loop(one, clients, min(2.0, seconds))  # warm-up
            cpu_before = services.cpu_seconds()
            figures = await peers.closed_loop(one, clients, seconds)
            figures["cpu_ms"] = (services.cpu_seconds() - cpu_before) * 1000 / max(1.0, figures["count"])
            figures["load"] = float(report.load_average().split()[0])
            return figures
        finally:
            for channel in channels:
                await channel.close()


async def bench_dbos(clients: int, seconds: float) -> dict[str, float] | str:
    """Closed-loop figures for DBOS, or why it could not run."""
    async with peers.dbos() as runner:
        if isinstance(runner, str):
            return runner

        async def one() -> None:
            await runner.dag(DIAMOND, CONCURRENCY)

        await peers.closed_loop(one, clients, min(2.0, seconds))  # warm-up
        figures = await peers.closed_loop(one, clients, seconds)
        figures["load"] = float(report.load_average().split()[0])
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per system")
    parser.add_argument("--clients", type=int, default=200, help="executions in flight")
    report.add_arguments(parser)
    args = parser.parse_args()
    configure_logging("bench", "WARNING", json_lines=False)
    logging.getLogger().setLevel(logging.WARNING)
    out = report.Report("throughput", strict=args.strict)
    print(f"5-node diamond workflows, {args.clients} in flight back to back for {args.seconds:g} s each; "
          "Postgres durability on for both")
    ours = asyncio.run(bench_ours(args.clients, args.seconds))
    dbos = asyncio.run(bench_dbos(args.clients, args.seconds))
    print(f"{'system':<8} {'exec/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'count':>7} {'load':>6}")
    for name, figures in (("ours", ours), ("dbos", dbos)):
        if isinstance(figures, dict):
            print(f"{name:<8} {figures['rate']:>8.1f} {figures['p50']:>9.1f} {figures['p99']:>9.1f} "
                  f"{figures['count']:>7.0f} {figures['load']:>6.2f}")
    out.info("ours: service CPU per execution", f"{ours['cpu_ms']:.1f} ms (registry + workflow processes, "
             "sandboxed children included)")
    if isinstance(dbos, str):
        out.fail("peer dbos", dbos)
    else:
        out.check("executions/s ours / dbos", ours["rate"] / dbos["rate"], ">=", 1.0,
                  note=f"({ours['rate']:.0f}/s against {dbos['rate']:.0f}/s; every node of ours isolated)")
        out.info("p50 latency ours / dbos", f"{ours['p50'] / dbos['p50']:.2f}x")
        out.info("p99 latency ours / dbos", f"{ours['p99'] / dbos['p99']:.2f}x")
    return out.finish()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
