"""``tdev up`` with TDEV_SANDBOX_LOCAL_WORKERS: local workers start, and the services run agent code there."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from pathlib import Path

import grpc
import pytest
from remote_helpers import WORKER_UID_COUNT
from sandbox_helpers import TEST_UID_BASE, host_processes, wait_for
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as reg_pb2_grpc

from tdev_cli.mesh import SERVICES

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio]
BIN = Path(sys.executable).parent
AGENT = '''
class Hello:
    """Says hello."""

    def get_capabilities(self) -> dict:
        return {"name": "hello"}

    def execute(self, inputs: dict) -> dict:
        return {"hello": inputs.get("who", "world")}
'''


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports nobody can be using: below the kernel's ephemeral range (so no
    outgoing connection of another process takes one meanwhile as its source port) and bindable now."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20_000, 32_000 - count)
        if all(_bindable(first + i) for i in range(count)):
            return first
    raise RuntimeError("no run of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone (pgrep's own shell matches too)
        return {}
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_tdev_up_with_local_workers_runs_agent_code_on_them(tmp_path: Path) -> None:
    ports = [consecutive_free_ports(1) for _ in SERVICES]
    worker_port = consecutive_free_ports(2)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TDEV_")}
    env.update({service.port_env: str(port) for service, port in zip(SERVICES, ports, strict=True)})
    env.update({f"TDEV_{s.name.upper()}_ADDRESS": f"127.0.0.1:{p}" for s, p in zip(SERVICES, ports, strict=True)})
    env.update({
        "TDEV_DATA_DIR": str(tmp_path / "data"), "TDEV_GRACE_SECONDS": "2",
        "TDEV_SANDBOX_LOCAL_WORKERS": "2", "TDEV_SANDBOX_WORKER_PORT": str(worker_port),
        "TDEV_SANDBOX_UID_BASE": str(TEST_UID_BASE), "TDEV_SANDBOX_UID_COUNT": str(WORKER_UID_COUNT),
        "TDEV_SANDBOX_POOL_SIZE": "1", "TDEV_REDIS_URL": "redis://127.0.0.1:6379/0",
        "TDEV_TEST_SECRET": "not-for-workers",
    })
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tdev"), "up", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        while b"Ctrl-C stops all four" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=90)
            assert line, f"tdev up ended early:\n{banner.decode()}"
            banner += line
        workers = [f"127.0.0.1:{worker_port}", f"127.0.0.1:{worker_port + 1}"]
        assert f"tier of 2 local worker(s) at {', '.join(workers)}" in banner.decode()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
            answer = await reg_pb2_grpc.RegistryServiceStub(channel).RegisterAgent(
                reg_pb2.RegisterAgentRequest(name="hello", code=AGENT), timeout=30)
        assert answer.agent.agent_id
        logs = tmp_path / "data" / "logs"
        registry_log = (logs / "registry.log").read_text()
        assert '"backend": "remote"' in registry_log and "sandbox.started" in registry_log
        # Each worker's runtime holds its own uid range, next to the other's.
        runtimes = {p.uid for p in host_processes() if p.uid in (TEST_UID_BASE, TEST_UID_BASE + WORKER_UID_COUNT)}
        assert runtimes == {TEST_UID_BASE, TEST_UID_BASE + WORKER_UID_COUNT}
        worker_pids = [int(line.split()[0]) for line in (await asyncio.to_thread(
            lambda: os.popen("pgrep -f 'tdev_common.sandbox.worker'").read())).split()]
        mine = [pid for pid in worker_pids if environ_of(pid).get("TDEV_SANDBOX_WORKER_PORT") in
                (str(worker_port), str(worker_port + 1))]
        assert len(mine) == 2
        for pid in mine:
            seen = environ_of(pid)
            assert "TDEV_REDIS_URL" not in seen and "TDEV_TEST_SECRET" not in seen, seen
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert await wait_for(lambda: not host_processes(), timeout=5.0), host_processes()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
