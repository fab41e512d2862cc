"""Workflow engine benchmark: 1000-node no-op DAGs end to end, next to their baselines, in one run.

Shapes: wide (1 -> 998 parallel -> 1) and deep (a chain of 1000). Printed per node:
  * workflow   -- ExecuteWorkflow over gRPC to the final event; every node runs in its own sandboxed
                  process and every event and result is committed to Postgres;
  * sandbox    -- the sandbox's own per-execution cost for the same shape (the floor): the same no-op
                  agent run 1000 times straight through tdev_common.sandbox, one at a time (deep) or with the
                  workflow's concurrency (wide), alternating with the workflow runs (best of 3 each);
  * dask       -- dask's local threaded scheduler on the same DAG of no-op Python functions;
  * prefect    -- Prefect 3 (local ephemeral mode) running the same DAG of no-op tasks in one flow.
Targets: engine overhead (workflow - sandbox) <= 1 ms per node, and workflow <= 0.75x Prefect per node.

Needs Postgres (TDEV_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres; a
scratch database is created and dropped) and, when reachable, Redis. Run: ``python bench/bench_workflow.py``
(``--strict``: exit status 1 when a target is missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import asyncpg  # noqa: E402
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tdev.registry.v1 import registry_service_pb2 as reg_pb2  # noqa: E402
from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc  # noqa: E402
from tdev.workflow.v1 import workflow_pb2 as wf_pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2 as pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc  # noqa: E402

from tdev_common.sandbox import Sandbox, SandboxSettings  # noqa: E402
from tdev_common.telemetry import configure_logging  # noqa: E402

NODES = 1000
CONCURRENCY = 16
ADMIN_URL = os.environ.get("TDEV_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TDEV_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NOOP_AGENT = '''"""No-op agent."""


class Noop:
    """Does nothing."""

    def get_capabilities(self) -> dict:
        return {"name": "noop"}

    def execute(self, inputs: dict) -> dict:
        return {}
'''
Shape = dict[str, list[str]]  # node id -> dependencies


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


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# -- the workflow service -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {key: value for key, value in os.environ.items() if not key.startswith("TDEV_")}
    full.update(env)
    full["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen'}"
    with log.open("wb") as out:
        command = [sys.executable, "-m", module]
        return subprocess.Popen(command, cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT)


async def _ready(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                tail = await asyncio.to_thread(log.read_text)
                raise RuntimeError(f"service at {address} exited:\n{tail[-3000:]}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"service at {address} did not start")
            await asyncio.sleep(0.1)


async def bench_workflow(shapes: dict[str, Shape], rounds: int = 3) -> tuple[dict[str, float], dict[str, float],
                                                                           dict[str, Any]]:
    """(workflow ms per node, sandbox floor ms per node, info), each the best of ``rounds``.

    The services run as deployed, each its own process (``python -m registry_svc``, ``python -m
    workflow_svc``) on Postgres (and Redis when reachable); this process is only the gRPC client, and runs
    the floor through its own sandbox. Floor and workflow runs alternate within each round, so drifting
    load on the machine hits both alike.
    """
    name = f"tdev_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    redis_url = REDIS_URL if _reachable("127.0.0.1", 6379) else None
    workflow: dict[str, list[float]] = {shape: [] for shape in shapes}
    floor: dict[str, list[float]] = {shape: [] for shape in shapes}
    info: dict[str, Any] = {"redis": bool(redis_url)}
    processes: list[subprocess.Popen[bytes]] = []
    sandbox: Sandbox | None = None
    with tempfile.TemporaryDirectory() as data:
        base = {"TDEV_DATA_DIR": data, "TDEV_LOG_LEVEL": "WARNING"}
        if redis_url:
            base["TDEV_REDIS_URL"] = redis_url
        registry_port, workflow_port = _free_port(), _free_port()
        try:
            registry_log = Path(data) / "registry.log"
            processes.append(_spawn("registry_svc", {
                **base, "TDEV_REGISTRY_PORT": str(registry_port), "TDEV_REGISTRY_DATABASE_URL": database_url,
                "TDEV_REGISTRY_ANALYSIS_WORKERS": "0"}, registry_log))
            await _ready(f"127.0.0.1:{registry_port}", processes[-1], registry_log)
            workflow_log = Path(data) / "workflow.log"
            processes.append(_spawn("workflow_svc", {
                **base, "TDEV_WORKFLOW_PORT": str(workflow_port), "TDEV_WORKFLOW_DATABASE_URL": database_url,
                "TDEV_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}",
                "TDEV_WORKFLOW_MAX_CONCURRENCY": str(CONCURRENCY), "TDEV_WORKFLOW_MAX_NODES": str(NODES)},
                workflow_log))
            await _ready(f"127.0.0.1:{workflow_port}", processes[-1], workflow_log)
            sandbox = await Sandbox.start(SandboxSettings.for_embedded())
            async with grpc.aio.insecure_channel(f"127.0.0.1:{registry_port}") as channel:
                agent = await reg_pb2_grpc.RegistryServiceStub(channel).RegisterAgent(
                    reg_pb2.RegisterAgentRequest(name="bench_noop", code=NOOP_AGENT)
                )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{workflow_port}") as channel:
                stub = pb2_grpc.WorkflowServiceStub(channel)
                workflow_ids = {}
                for shape_name, shape in shapes.items():
                    definition = json_format.ParseDict(
                        {
                            "name": f"bench-{shape_name}",
                            "max_concurrency": CONCURRENCY,
                            "nodes": [
                                {"id": node_id, "agent_id": agent.agent.agent_id, "depends_on": deps}
                                for node_id, deps in shape.items()
                            ],
                        },
                        wf_pb2.Workflow(),
                    )
                    created = await stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=definition))
                    workflow_ids[shape_name] = created.workflow.workflow_id
                    await _run_workflow(stub, workflow_ids[shape_name])  # warm-up: code cached, connections open
                    await _run_floor(sandbox, shape_name, 50)
                for _ in range(rounds):
                    for shape_name, shape in shapes.items():
                        floor[shape_name].append(await _run_floor(sandbox, shape_name, NODES) / NODES)
                        elapsed, events = await _run_workflow(stub, workflow_ids[shape_name])
                        per_node = elapsed / len(shape)
                        if not workflow[shape_name] or per_node < min(workflow[shape_name]):
                            info[shape_name] = in_run_costs(events, shape)
                        workflow[shape_name].append(per_node)
        finally:
            if sandbox is not None:
                await sandbox.close()
            for process in reversed(processes):
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)
                if process.poll() is None:
                    process.kill()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    best = {shape: min(values) for shape, values in workflow.items()}
    return best, {shape: min(values) for shape, values in floor.items()}, info


async def _run_workflow(stub: pb2_grpc.WorkflowServiceStub, workflow_id: str) -> tuple[float, list[Any]]:
    """ExecuteWorkflow to the last event; (elapsed ms, events)."""
    started = time.perf_counter()
    request = pb2.ExecuteWorkflowRequest(workflow_id=workflow_id)
    events = [answer.event async for answer in stub.ExecuteWorkflow(request)]
    elapsed = (time.perf_counter() - started) * 1000
    assert events[-1].type == wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED, events[-1]
    return elapsed, events


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


# -- baselines ----------------------------------------------------------------------------------------------
def noop(*_dependencies: Any) -> None:
    """The no-op task of the baselines."""
    return None


def bench_dask(shapes: dict[str, Shape]) -> dict[str, float] | str:
    """Per-node milliseconds with dask's threaded scheduler (num_workers = the workflow concurrency)."""
    try:
        import dask.threaded
    except ImportError:
        return "dask is not installed (pip install '.[bench]')"
    results = {}
    for shape_name, shape in shapes.items():
        graph = {node_id: (noop, *deps) for node_id, deps in shape.items()}
        sinks = [n for n in shape if not any(n in deps for deps in shape.values())]
        dask.threaded.get(graph, sinks, num_workers=CONCURRENCY)
        started = time.perf_counter()
        dask.threaded.get(graph, sinks, num_workers=CONCURRENCY)
        results[shape_name] = (time.perf_counter() - started) * 1000 / len(shape)
    return results


def bench_prefect(shapes: dict[str, Shape]) -> dict[str, float] | str:
    """Per-node milliseconds with Prefect 3 in its local ephemeral mode: one flow, one task per node."""
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
        runner: Any = ThreadPoolTaskRunner(max_workers=CONCURRENCY)

        @flow(name="bench", task_runner=runner, persist_result=False)
        def run() -> None:
            futures: dict[str, Any] = {}
            for node_id, deps in shape.items():
                futures[node_id] = prefect_noop.submit(wait_for=[futures[d] for d in deps])
            for future in futures.values():
                future.wait()

        return run

    results = {}
    for shape_name, shape in shapes.items():
        run = make_flow(shape)
        make_flow({"warm": []})()
        started = time.perf_counter()
        run()
        results[shape_name] = (time.perf_counter() - started) * 1000 / len(shape)
    return results


# -- report -------------------------------------------------------------------------------------------------
def main() -> int:
    """Runs everything and prints a table with ratios and PASS/FAIL; with ``--strict``, exit status 1 on a
    FAIL (by default 0, so ``make bench`` goes on to the other benchmarks)."""
    configure_logging("bench", "WARNING", json_lines=False)
    logging.getLogger().setLevel(logging.WARNING)
    shapes = {name: make() for name, make in SHAPES.items()}
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"workflow benchmark: {NODES}-node no-op DAGs, concurrency {CONCURRENCY}, {os.cpu_count()} CPUs, "
          f"load average {load} (other work on the machine skews every column)")
    workflow, floor, info = asyncio.run(bench_workflow(shapes))
    dask_result = bench_dask(shapes)
    prefect_result = bench_prefect(shapes)
    print(f"durability: Postgres (every event and node result committed); redis pub/sub: {info['redis']}")
    header = f"{'shape':<6} {'workflow':>10} {'sandbox':>10} {'overhead':>10} {'dask':>10} {'prefect':>10}"
    print(header + "   (ms per node)")
    failed = False
    verdicts = []
    for name in shapes:
        overhead = workflow[name] - floor[name]
        dask_ms = dask_result[name] if isinstance(dask_result, dict) else float("nan")
        prefect_ms = prefect_result[name] if isinstance(prefect_result, dict) else float("nan")
        print(
            f"{name:<6} {workflow[name]:>10.3f} {floor[name]:>10.3f} {overhead:>10.3f} {dask_ms:>10.3f} "
            f"{prefect_ms:>10.3f}"
        )
        overhead_ok = overhead <= 1.0
        verdicts.append(f"{name}: engine overhead {overhead:.3f} ms/node <= 1.000: {'PASS' if overhead_ok else 'FAIL'}")
        failed |= not overhead_ok
        if isinstance(prefect_result, dict):
            ratio = workflow[name] / prefect_ms
            ratio_ok = ratio <= 0.75
            verdicts.append(f"{name}: workflow/prefect = {ratio:.3f} <= 0.75: {'PASS' if ratio_ok else 'FAIL'}")
            failed |= not ratio_ok
        if isinstance(dask_result, dict):
            verdicts.append(f"{name}: workflow/dask = {workflow[name] / dask_ms:.1f}x (dask runs no isolation)")
    for message in (dask_result, prefect_result):
        if isinstance(message, str):
            verdicts.append(f"baseline missing: {message}")
            failed = True
    for name in ("deep",):  # wide attempts also queue for sandbox slots, so only the chain is read this way
        costs = info.get(name)
        if isinstance(costs, dict):
            verdicts.append(
                f"{name}: in the run itself, per node: sandbox-reported execution {costs['sandbox']:.3f} ms, "
                f"attempt as the engine saw it {costs['attempt']:.3f} ms, dependency-done to start "
                f"{costs['gap']:.3f} ms"
            )
    for line in verdicts:
        print(line)
    print("RESULT:", "FAIL" if failed else "PASS")
    return 1 if failed and "--strict" in sys.argv else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
