"""``tdev up``: the four services as separate processes on loopback, watched until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console

from common.config import CommonSettings
from tdev_cli.mesh import SERVICES, MeshService, check_health


class MeshStartError(RuntimeError):
    """The mesh could not start; the message says why and what to do."""


@dataclass
class Child:
    """A started service process and its log file."""

    service: MeshService
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: TextIO


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a quick bind test, like the server's own bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def planned_ports(env: dict[str, str]) -> dict[str, int]:
    """Port of each service: its TDEV_<SVC>_PORT or the documented default."""
    return {service.name: int(env.get(service.port_env, service.default_port)) for service in SERVICES}


def child_environment(common: CommonSettings, ports: dict[str, int], data_dir: Path) -> dict[str, str]:
    """Environment of every child: the parent's, plus where everything lives."""
    env = dict(os.environ)
    env["TDEV_DATA_DIR"] = str(data_dir)
    env["TDEV_HOST"] = common.host
    for service in SERVICES:
        env[service.port_env] = str(ports[service.name])
        env[f"TDEV_{service.name.upper()}_ADDRESS"] = f"{common.host}:{ports[service.name]}"
    env.setdefault("TDEV_LOG_JSON", "true")
    return env


async def _start_child(service: MeshService, port: int, env: dict[str, str], logs: Path) -> Child:
    log_path = logs / f"{service.name}.log"
    log_file = log_path.open("a", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        service.module,
        env=env,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
    )
    return Child(service, port, process, log_path, log_file)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _wait_until_serving(children: list[Child], host: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = {child.service.name: child for child in children}
    while pending:
        for name, child in list(pending.items()):
            if child.process.returncode is not None:
                raise MeshStartError(
                    f"the {name} service exited with code {child.process.returncode} while starting; "
                    f"last lines of {child.log_path}:\n{_tail(child.log_path)}"
                )
            status = await check_health(f"{host}:{child.port}", child.service.grpc_service, timeout=1.0)
            if status == "SERVING":
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise MeshStartError(f"not SERVING after {timeout:.0f}s: {', '.join(sorted(pending))}")
        await asyncio.sleep(0.1)


async def stop_children(children: list[Child], grace: float) -> None:
    """SIGTERM to every child, then SIGKILL to whatever is still alive after ``grace`` seconds."""
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.process.wait() for c in children)), timeout=grace)
    except TimeoutError:
        for child in children:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
        await asyncio.gather(*(c.process.wait() for c in children))
    for child in children:
        child.log_file.close()


def banner(host: str, ports: dict[str, int], data_dir: Path) -> str:
    """What a person needs to start calling the mesh."""
    registry = f"{host}:{ports['registry']}"
    workflow = f"{host}:{ports['workflow']}"
    lines = ["T-Developer mesh is up (embedded mode: SQLite, in-process cache, offline LLM provider)", ""]
    for service in SERVICES:
        lines.append(f"  {service.name:<10} {host}:{ports[service.name]:<6} {service.grpc_service}")
    lines += [
        "",
        f"  data: {data_dir}   logs: {data_dir / 'logs'}",
        "",
        "Try:",
        f"  grpcurl -plaintext {registry} list",
        f"  grpcurl -plaintext -d '{{\"page_size\": 5}}' {registry} tdev.registry.v1.RegistryService/ListAgents",
        f"  grpcurl -plaintext -d '{{\"page_size\": 5}}' {workflow} tdev.workflow.v1.WorkflowService/ListWorkflows",
        "  tdev status",
        "",
        "Ctrl-C stops all four.",
    ]
    return "\n".join(lines)


async def run_mesh(
    common: CommonSettings,
    console: Console,
    *,
    start_timeout: float = 90.0,
    ready: asyncio.Event | None = None,
) -> int:
    """Starts the mesh, waits for Ctrl-C/SIGTERM or a child's death, stops everything; the exit code."""
    env = dict(os.environ)
    ports = planned_ports(env)
    taken = [f"{name} port {port}" for name, port in ports.items() if not port_is_free(common.host, port)]
    if taken:
        console.print(
            f"[red]cannot start: {', '.join(taken)} already in use on {common.host}.[/red] "
            "Stop whatever listens there, or choose other ports with TDEV_<SERVICE>_PORT "
            "(e.g. TDEV_REGISTRY_PORT=60051)."
        )
        return 2
    data_dir = common.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    child_env = child_environment(common, ports, data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[Child] = []
    try:
        for service in SERVICES:
            children.append(await _start_child(service, ports[service.name], child_env, logs))
        starting = asyncio.create_task(_wait_until_serving(children, common.host, start_timeout))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            starting.cancel()
            console.print("stopping before the mesh was ready")
            return 130
        stopping.cancel()
        try:
            starting.result()
        except MeshStartError as error:
            console.print(f"[red]{error}[/red]")
            return 1
        print(banner(common.host, ports, data_dir), flush=True)
        if ready is not None:
            ready.set()
        died = [asyncio.create_task(child.process.wait()) for child in children]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*died, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*died, stopping):
            task.cancel()
        if stopping not in done:
            dead = [c.service.name for c in children if c.process.returncode is not None]
            console.print(f"[red]{', '.join(dead)} stopped unexpectedly; stopping the mesh[/red]")
            return 1
        console.print("stopping the mesh...")
        return 0
    finally:
        await stop_children(children, common.grace_seconds + 5)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        console.print("stopped")
