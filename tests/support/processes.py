"""A ``python -m <service>`` process for fault tests: configured through the environment, killable with -9."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """One service module run as a child process on a fixed port (the same port across restarts)."""

    def __init__(self, module: str, service: str, env: dict[str, str], log_dir: Path) -> None:
        self.module = module
        self.service = service  # the full gRPC service name its health check reports
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("TDEV_", "OPENAI_"))}
        self.env.update({"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}", "TDEV_LOG_LEVEL": "INFO"})
        self.env.update(env)
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        """Starts the process, its output going to a log file in ``log_dir``."""
        log = (self.log_dir / f"{self.module}-{self.port}-{self.starts}.log").open("wb")
        self.starts += 1
        try:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()  # the child has its own descriptor
        return self.process

    async def start(self) -> float:
        """Starts the process and waits until its health check says SERVING; returns that moment (time.time())."""
        process = self.spawn()
        deadline = time.monotonic() + 60
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise AssertionError(f"{self.module} exited with {process.returncode}")
                try:
                    answer = await stub.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.time()
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.module} on port {self.port} never became SERVING")

    def kill(self) -> None:
        """kill -9: nothing is given back, no lease released."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    async def stop(self) -> None:
        """SIGTERM, if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)
