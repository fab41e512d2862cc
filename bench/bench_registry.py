"""Benchmark: GetAgent on a cache hit vs a bare grpc.aio echo server with the same payload size, one run.

Each server runs in its own process; this process is the client for both. The registry is the real
one (``create_server``: the same interceptors, sandbox, SQLite and in-process cache as ``tdev up``); the
baseline is a grpc.aio server with no interceptors whose one method answers a request of the GetAgent
request's size with bytes of the GetAgent response's size. Latency is measured with one call in flight,
throughput with many. Targets: p50 <= 1.2x echo (issue 17), p99 <= 2x echo, throughput >= 0.6x echo.

    .venv/bin/python bench/bench_registry.py [--calls 2400] [--concurrency 32] [--seconds 3] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "gen"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import report  # noqa: E402
from tdev.registry.v1 import registry_service_pb2 as pb2  # noqa: E402
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc  # noqa: E402

ECHO_METHOD = "/bench.Echo/Echo"
TARGETS = {"p50": 1.2, "p99": 2.0, "throughput": 0.6}


# ---- servers (child processes) -------------------------------------------------------------------------


async def _serve_registry(data_dir: str) -> None:

    from registry_svc.config import RegistrySettings
    from registry_svc.server import create_server
    from tdev_common.config import CommonSettings
    from tdev_common.telemetry import configure_logging

    configure_logging("registry", "WARNING", json_lines=False, stream=sys.stderr)
    common = CommonSettings(data_dir=Path(data_dir), log_level="WARNING")
    settings = RegistrySettings(database_url=f"sqlite+aiosqlite:///{data_dir}/registry.sqlite")
    handle = await create_server(settings, common, port=0)
    print(json.dumps({"port": handle.port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await handle.close(grace=0.5)


def _layers(stack: str) -> list[Any]:
    """The handler layers build_server applies (embedded mode: no auth), or a part of them."""
    from tdev_common.errors import error_layer
    from tdev_common.server_tracing import tracing_layer
    from tdev_common.telemetry import tracer_provider

    chosen: list[Any] = []
    if stack in ("tracing", "common"):
        chosen.append(tracing_layer(tracer_provider()))
    if stack in ("errors", "common"):
        chosen.append(error_layer)
    return chosen


async def _serve_echo(response_size: int, stack: str) -> None:
    from google.protobuf.wrappers_pb2 import BytesValue

    from tdev_common.handler_layers import LayeredServer

    payload = b"x" * response_size

    async def echo(request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return payload

    # The error layer checks every request against the shared rules, which need a message, not raw bytes.
    decode = None if stack == "none" else BytesValue.FromString
    server = grpc.aio.server()
    LayeredServer(server, _layers(stack)).add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo, request_deserializer=decode)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.wait_for_termination()


def _spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=env,
                               cwd=ROOT)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith('{"port"'):
            return process, int(json.loads(line)["port"])
    process.kill()
    raise SystemExit(f"server {args} did not start")


# ---- client ----------------------------------------------------------------------------------------------


async def _latencies(call: Callable[[], Awaitable[Any]], calls: int, warmup: bool = True) -> list[float]:
    for _ in range(min(300, calls) if warmup else 0):
        await call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _throughput(call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float) -> tuple[int, float]:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


ECHO_NAMES = {"none": "grpc.aio echo", "errors": "echo+errors layer", "tracing": "echo+tracing layer",
              "common": "echo+tracing+errors"}


def _echo_request(size: int) -> bytes:
    """``size`` bytes that decode as a BytesValue (the interceptor stacks decode what they check)."""
    from google.protobuf.wrappers_pb2 import BytesValue

    body = BytesValue(value=b"r" * max(0, size - 2)).SerializeToString()
    return body if len(body) == size else b"r" * size


def _echo_call(channel: grpc.aio.Channel, request: bytes) -> Callable[[], Awaitable[Any]]:
    echo = channel.unary_unary(ECHO_METHOD)

    async def call() -> Any:
        return await echo(request)

    return call


async def _measure_all(calls: dict[str, Callable[[], Awaitable[Any]]], pids: dict[str, int],
                       args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Interleaves the servers round by round, so load from elsewhere on the machine hits them alike.

    Latency percentiles and throughput are medians over the rounds of each round's figure. Besides
    wall-clock figures, reports each server's own CPU time per request during the throughput phases: the
    figure least disturbed by other load on the machine.
    """
    samples: dict[str, list[list[float]]] = {name: [] for name in calls}
    served: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [0.0, 0.0] for name in calls}
    for call in calls.values():
        await _latencies(call, 300)
    for _ in range(args.rounds):
        for name, call in calls.items():
            samples[name].append(await _latencies(call, args.calls // args.rounds, warmup=False))
            before = _cpu_seconds(pids[name])
            done, elapsed = await _throughput(call, args.concurrency, args.seconds / args.rounds)
            cpu[name][0] += _cpu_seconds(pids[name]) - before
            cpu[name][1] += done
            served[name].append(done / elapsed)
    results = {}
    for name in calls:
        rps = statistics.median(served[name])
        cpu_us = cpu[name][0] / max(1.0, cpu[name][1]) * 1e6
        # Median over rounds of each round's percentile: one round hit by a burst elsewhere on the machine
        # does not decide the result.
        results[name] = {"p50": statistics.median(_percentile(r, 0.5) for r in samples[name]),
                         "p99": statistics.median(_percentile(r, 0.99) for r in samples[name]),
                         "throughput": rps, "cpu_us": cpu_us}
        print(f"{name:<26} p50 {results[name]['p50']:8.1f} us   p99 {results[name]['p99']:8.1f} us   "
              f"{rps:7.0f} req/s   server CPU {cpu_us:6.1f} us/req")
    return results


async def _prepare_registry(channel: grpc.aio.Channel) -> tuple[pb2.GetAgentRequest, int, int]:
    stub = pb2_grpc.RegistryServiceStub(channel)
    code = (ROOT / "examples" / "agents" / "word_count.py").read_text()
    answer = await stub.RegisterAgent(pb2.RegisterAgentRequest(name="word_count", code=code,
                                                               description="Counts words"))
    request = pb2.GetAgentRequest(agent_id=answer.agent.agent_id, version=answer.agent.version)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # settle the asynchronous analysis, so the cache is not invalidated
        response = await stub.GetAgent(request)
        if response.agent.analysis.state != 1 and response.agent.analysis.state != 2:
            break
        await asyncio.sleep(0.1)
    return request, request.ByteSize(), response.ByteSize()


async def _bench(args: argparse.Namespace) -> int:
    out = report.Report("registry", strict=args.strict)
    with tempfile.TemporaryDirectory(prefix="tdev-bench-") as data_dir:
        registry_process, registry_port = _spawn("--serve-registry", data_dir)
        processes = [registry_process]
        channels: list[grpc.aio.Channel] = []
        calls: dict[str, Callable[[], Awaitable[Any]]] = {}
        pids: dict[str, int] = {}
        try:
            registry_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry_port}")
            channels.append(registry_channel)
            request, request_size, response_size = await _prepare_registry(registry_channel)
            stacks = ["none", "errors", "tracing", "common"] if args.breakdown else ["none"]
            for stack in stacks:
                process, port = _spawn("--serve-echo", str(response_size), "--stack", stack)
                processes.append(process)
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
                channels.append(channel)
                calls[ECHO_NAMES[stack]] = _echo_call(channel, _echo_request(request_size))
                pids[ECHO_NAMES[stack]] = process.pid
            get_agent = pb2_grpc.RegistryServiceStub(registry_channel).GetAgent

            async def registry_call() -> Any:
                return await get_agent(request)

            calls["GetAgent (cache hit)"] = registry_call
            pids["GetAgent (cache hit)"] = registry_process.pid
            print(f"payload: request {request_size} B, response {response_size} B; {args.calls} sequential "
                  f"calls, then {args.concurrency} in flight for {args.seconds:g} s, in {args.rounds} "
                  "interleaved rounds")
            results = await _measure_all(calls, pids, args)
            for channel in channels:
                await channel.close()
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
    baseline, registry = results[ECHO_NAMES["none"]], results["GetAgent (cache hit)"]
    out.check("GetAgent p50 / echo p50", registry["p50"] / baseline["p50"], "<=", TARGETS["p50"])
    out.check("GetAgent p99 / echo p99", registry["p99"] / baseline["p99"], "<=", TARGETS["p99"])
    out.check("GetAgent throughput / echo throughput", registry["throughput"] / baseline["throughput"], ">=",
              TARGETS["throughput"])
    out.info("server CPU per request", f"{registry['cpu_us'] / baseline['cpu_us']:.2f}x the echo server's")
    return out.finish()


def main() -> int:
    """Runs the benchmark, or one of its servers when started with --serve-*."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2400, help="sequential calls for latency")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight for throughput")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of the throughput phases")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds over the servers")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time echo servers with each of tdev_common/'s handler layers, to attribute costs")
    report.add_arguments(parser)
    parser.add_argument("--stack", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--serve-registry", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", metavar="BYTES", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_registry:
        asyncio.run(_serve_registry(args.serve_registry))
        return 0
    if args.serve_echo:
        asyncio.run(_serve_echo(args.serve_echo, args.stack))
        return 0
    return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main())
