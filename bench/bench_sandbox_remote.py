"""Benchmark of the sandbox tier: a no-op agent through a worker on loopback vs the local warm pool.

Both run in one process run, sampled in alternating blocks so that load from other processes on this shared
machine hits them alike. Target: remote median at most 2x the local median. Also printed: p99 and
executions/s at concurrency 2 for both.

Run: .venv/bin/python bench/bench_sandbox_remote.py [--runs N] [--workers N] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import report
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tdev_common.sandbox import Sandbox, SandboxSettings
from tdev_common.sandbox.namespace_backend import NamespaceBackend
from tdev_common.sandbox.remote_backend import RemoteBackend
from tdev_common.sandbox.weak_backend import WeakBackend

NOOP_AGENT = """
class Noop:
    def execute(self, inputs):
        return {}

    def get_capabilities(self):
        return {}
"""
TARGET_RATIO = 2.0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_workers(count: int, settings: SandboxSettings) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """Worker processes with a minimal environment, each with its own uid range (after the local pool's)."""
    started = []
    for index in range(count):
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TDEV_SANDBOX_WORKER_PORT": str(port),
            "TDEV_SANDBOX_UID_BASE": str(settings.uid_base + (index + 1) * settings.uid_count),
            "TDEV_SANDBOX_POOL_SIZE": str(settings.pool_size),
            "TDEV_LOG_LEVEL": "WARNING",
        }
        process = subprocess.Popen([sys.executable, "-m", "tdev_common.sandbox.worker"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append((f"127.0.0.1:{port}", process))
    return started


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="tdev.sandbox.v1.SandboxService"), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"worker {address} did not start")


async def sample(sandbox: Sandbox) -> float:
    start = time.perf_counter()
    outcome = await sandbox.run(NOOP_AGENT, {})
    elapsed = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(f"no-op agent failed: {outcome}")
    return elapsed


async def latencies(local: Sandbox, remote: Sandbox, runs: int, block: int = 50) -> tuple[list[float], list[float]]:
    local_samples: list[float] = []
    remote_samples: list[float] = []
    for _ in range(10):  # warm-up: channels connected, pools filled
        await sample(local)
        await sample(remote)
    while len(local_samples) < runs:
        await asyncio.sleep(0.05)
        local_samples += [await sample(local) for _ in range(block)]
        await asyncio.sleep(0.05)
        remote_samples += [await sample(remote) for _ in range(block)]
    return local_samples, remote_samples


async def throughput(sandbox: Sandbox, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def one_caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await sample(sandbox)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(one_caller() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def line(name: str, samples: list[float]) -> tuple[float, float]:
    median, p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
    print(f"{name:<40} median {median:7.3f} ms   p99 {p99:7.3f} ms   (n={len(samples)})")
    return median, p99


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="sandbox tier workers (round-robin)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    report.add_arguments(parser)
    args = parser.parse_args()
    out = report.Report("sandbox_remote", strict=args.strict)

    settings = SandboxSettings()
    workers = start_workers(args.workers, settings)
    try:
        await asyncio.gather(*(wait_serving(address) for address, _ in workers))
        remote_settings = settings.model_copy(update={"remote_addresses": ",".join(a for a, _ in workers)})
        async with await Sandbox.start(settings, backends=(NamespaceBackend, WeakBackend)) as local, \
                await Sandbox.start(remote_settings, backends=(RemoteBackend,)) as remote:
            print(f"local:  {local.isolation}")
            print(f"remote: {remote.isolation}")
            await asyncio.sleep(0.5)
            load_before = os.getloadavg()[0]
            local_samples, remote_samples = await latencies(local, remote, args.runs)
            local_rate = await throughput(local, 2, args.seconds)
            remote_rate = await throughput(remote, 2, args.seconds)
    finally:
        for _, process in workers:
            process.terminate()
        for _, process in workers:
            process.wait(15)

    print()
    print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other processes share the machine; latencies are sampled in alternating blocks)")
    local_median, _ = line("local: no-op agent, warm pool", local_samples)
    remote_median, _ = line(f"remote: no-op agent, {args.workers} worker(s)", remote_samples)
    print(f"{'local: executions/s at concurrency 2':<40} {local_rate:8.1f} /s")
    print(f"{'remote: executions/s at concurrency 2':<40} {remote_rate:8.1f} /s")
    print()
    out.check("remote / local median", remote_median / local_median, "<=", TARGET_RATIO)
    out.info("remote / local executions/s", f"{remote_rate / local_rate:.2f}x")
    return out.finish()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
