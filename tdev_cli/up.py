"""``tdev up``: the four services and the web console as separate processes on loopback, watched until Ctrl-C
or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import URL, make_url

from tdev_cli.mesh import SERVICES, MeshService, check_health
from tdev_common.config import CommonSettings, ServiceSettings
from tdev_common.sandbox import SandboxSettings, SandboxWorkerSettings
from tdev_console.config import ConsoleSettings

LOG_TAIL_LINES = 20
DEPENDENCY_TIMEOUT_SECONDS = 3.0
# The settings class of each service, read the way the service reads it (its own DSN wins over the shared one).
_SETTINGS = {"registry": "registry_svc.config:RegistrySettings", "workflow": "workflow_svc.config:WorkflowSettings",
             "builder": "builder_svc.config:BuilderSettings", "evolution": "evolution_svc.config:EvolutionSettings"}


# The web console runs as one more child (python -m tdev_console), watched like the services.
CONSOLE = MeshService("console", "tdev_console", "", "TDEV_CONSOLE_PORT", 8080)


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


def _any_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


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


SANDBOX_SERVICE = "tdev.sandbox.v1.SandboxService"
# What a local sandbox worker may see of the parent's environment: its own settings, logging, mode and the
# server's TLS/auth material. Never a database or Redis URL, nor the services' keys (it needs none).
_WORKER_ENV_PREFIXES = ("TDEV_SANDBOX_", "TDEV_LOG_", "TDEV_OTEL_", "TDEV_OTLP_")
_WORKER_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "HOME", "TDEV_MODE", "TDEV_ENV", "TDEV_TLS_CERT_FILE",
                     "TDEV_TLS_KEY_FILE", "TDEV_AUTH_TOKENS")


def planned_workers(sandbox: SandboxSettings, worker: SandboxWorkerSettings) -> list[MeshService]:
    """The local sandbox workers ``TDEV_SANDBOX_LOCAL_WORKERS`` asks for, on consecutive ports."""
    base = worker.port or 50060
    return [
        MeshService(f"sandbox-worker-{i}", "tdev_common.sandbox.worker", SANDBOX_SERVICE, "TDEV_SANDBOX_WORKER_PORT",
                    base + i)
        for i in range(sandbox.local_workers)
    ]


def worker_environment(index: int, port: int, sandbox: SandboxSettings, common: CommonSettings,
                       parent: dict[str, str]) -> dict[str, str]:
    """Environment of local sandbox worker ``index``: a filtered copy of the parent's.

    Each worker gets its own uid range: two runtimes on one host sharing uids could signal each other's
    executions.
    """
    env = {key: value for key, value in parent.items()
           if key.startswith(_WORKER_ENV_PREFIXES) or key in _WORKER_ENV_NAMES}
    env.pop("TDEV_SANDBOX_REMOTE_ADDRESSES", None)
    env.pop("TDEV_SANDBOX_LOCAL_WORKERS", None)
    env.update({
        "TDEV_SANDBOX_WORKER_HOST": common.host,
        "TDEV_SANDBOX_WORKER_PORT": str(port),
        "TDEV_SANDBOX_UID_BASE": str(sandbox.uid_base + index * sandbox.uid_count),
        "TDEV_LOG_JSON": parent.get("TDEV_LOG_JSON", "true"),
    })
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


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
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


def what_it_is(child: Child) -> str:
    """``the registry service`` / ``the console`` in messages."""
    return child.service.name if child.service is CONSOLE else f"{child.service.name} service"


async def _wait_until_listening(child: Child, host: str, timeout: float) -> None:
    # The console speaks HTTP, not gRPC health: it is ready once its port accepts connections.
    deadline = time.monotonic() + timeout
    while True:
        if child.process.returncode is not None:
            raise MeshStartError(
                f"the {child.service.name} exited with code {child.process.returncode} while starting; "
                f"last lines of {child.log_path}:\n{_tail(child.log_path)}"
            )
        try:
            _, writer = await asyncio.open_connection(host, child.port)
        except OSError:
            if time.monotonic() > deadline:
                raise MeshStartError(f"the {child.service.name} does not listen on {host}:{child.port} after "
                                     f"{timeout:.0f}s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


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


@dataclass(frozen=True)
class Database:
    """The database one service will use, and the setting that chose it."""

    url: str
    setting: str

    @property
    def is_postgres(self) -> bool:
        """True for a Postgres DSN (else it is a SQLite file)."""
        return make_url(self.url).get_backend_name() == "postgresql"

    def describe(self) -> str:
        """``Postgres 127.0.0.1:5432/tdev`` or ``SQLite /path/registry.sqlite``; never a password."""
        url = make_url(self.url)
        if not self.is_postgres:
            return f"SQLite {url.database}"
        return f"Postgres {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def planned_databases(common: CommonSettings) -> dict[str, Database]:
    """The database of each service: its TDEV_<SVC>_DATABASE_URL, else TDEV_DATABASE_URL, else its SQLite file."""
    found = {}
    for service in SERVICES:
        module, _, name = _SETTINGS[service.name].partition(":")
        settings: ServiceSettings = getattr(importlib.import_module(module), name)()
        prefix = f"TDEV_{service.name.upper()}_"
        setting = f"{prefix}DATABASE_URL" if settings.database_url else (
            "TDEV_DATABASE_URL" if common.database_url else "TDEV_DATA_DIR")
        found[service.name] = Database(settings.resolved_database_url(common, service.name), setting)
    return found


def describe_redis(url: str) -> str:
    """``Redis 127.0.0.1:6379/0``; never a password."""
    parsed = make_url(url) if "://" in url else URL.create("redis", host=url)
    return f"Redis {parsed.host or 'localhost'}:{parsed.port or 6379}/{parsed.database or '0'}"


async def _postgres_answers(url: str) -> str | None:
    """None when the Postgres of ``url`` accepts a connection, else why not."""
    import asyncpg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(dsn, timeout=DEPENDENCY_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}".strip().rstrip(":")
    await connection.close()
    return None


async def _redis_answers(url: str) -> str | None:
    """None when the Redis of ``url`` answers PING, else why not."""
    from redis.exceptions import RedisError

    from tdev_common.cache import redis_client

    client = redis_client(url, DEPENDENCY_TIMEOUT_SECONDS)
    try:
        await client.ping()
    except (OSError, RedisError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        await client.aclose()
    return None


async def dependencies_down(common: CommonSettings, databases: dict[str, Database]) -> list[str]:
    """One line per configured dependency that does not answer: what, where, why, and what to do.

    Checked before any service starts, because each would otherwise die at start-up with a traceback in its
    own log and the mesh would report only that a service exited.
    """
    problems = []
    checked: set[str] = set()
    for database in databases.values():
        if not database.is_postgres or database.url in checked:
            continue
        checked.add(database.url)
        why = await _postgres_answers(database.url)
        if why is not None:
            users = ", ".join(name for name, item in databases.items() if item.url == database.url)
            problems.append(
                f"{database.describe()} ({database.setting}, used by {users}) is not usable ({why}). "
                f"Start it, or fix or unset {database.setting} (unset, services use SQLite files under the data dir)."
            )
    if common.redis_url:
        why = await _redis_answers(common.redis_url)
        if why is not None:
            problems.append(
                f"{describe_redis(common.redis_url)} (TDEV_REDIS_URL) is not usable ({why}). "
                "Start it, or fix or unset TDEV_REDIS_URL (unset, services use the in-process cache)."
            )
    return problems


def banner(host: str, ports: dict[str, int], data_dir: Path, *, databases: dict[str, Database] | None = None,
           redis_url: str | None = None, sandbox_workers: list[str] | None = None,
           console_url: str | None = None) -> str:
    """What a person needs to start calling the mesh, and what it really runs on (from the settings)."""
    registry = f"{host}:{ports['registry']}"
    workflow = f"{host}:{ports['workflow']}"
    lines = ["T-Developer mesh is up", ""]
    for service in SERVICES:
        lines.append(f"  {service.name:<10} {host}:{ports[service.name]:<6} {service.grpc_service}")
    if console_url:
        lines.append(f"  {'console':<10} {console_url}  (web console: agents, executions, builds, evolution)")
    lines.append("")
    databases = databases or {}
    described = {name: database.describe() for name, database in databases.items()}
    if databases and not any(database.is_postgres for database in databases.values()):
        lines.append(f"  database: SQLite, a file per service under {data_dir}")
    elif len(set(described.values())) == 1:
        lines.append(f"  database: {next(iter(described.values()))} (a schema per service)")
    else:
        lines += [f"  database: {name} on {text}" for name, text in described.items()]
    lines.append(f"  cache:    {describe_redis(redis_url)} (shared)" if redis_url
                 else "  cache:    in-process (TDEV_REDIS_URL unset)")
    if sandbox_workers:
        lines.append(f"  sandbox:  tier of {len(sandbox_workers)} local worker(s) at {', '.join(sandbox_workers)} "
                     "(TDEV_SANDBOX_LOCAL_WORKERS)")
    lines += [
        f"  data: {data_dir}   logs: {data_dir / 'logs'}",
        "",
        "Try:",
        f"  grpcurl -plaintext {registry} list",
        f"  grpcurl -plaintext -d '{{\"page_size\": 5}}' {registry} tdev.registry.v1.RegistryService/ListAgents",
        f"  grpcurl -plaintext -d '{{\"page_size\": 5}}' {workflow} tdev.workflow.v1.WorkflowService/ListWorkflows",
        "  tdev status",
        "",
        "Ctrl-C stops all four" + (" and the console." if console_url else "."),
    ]
    return "\n".join(lines)


async def run_mesh(
    common: CommonSettings,
    console: Console,
    *,
    start_timeout: float = 90.0,
    ready: asyncio.Event | None = None,
    as_json: bool = False,
) -> int:
    """Starts the mesh, waits for Ctrl-C/SIGTERM or a child's death, stops everything; the exit code."""
    env = dict(os.environ)
    ports = planned_ports(env)
    sandbox = SandboxSettings()
    workers = planned_workers(sandbox, SandboxWorkerSettings())
    console_settings = ConsoleSettings()
    planned = {**ports, **{worker.name: worker.default_port for worker in workers}}
    taken = [f"{name} port {port}" for name, port in planned.items() if not port_is_free(common.host, port)]
    if console_settings.port and not port_is_free(console_settings.host, console_settings.port):
        taken.append(f"console port {console_settings.port} (TDEV_CONSOLE_PORT)")
    if taken:
        console.print(
            f"[red]cannot start: {', '.join(taken)} already in use on {common.host}.[/red] "
            "Stop whatever listens there, or choose other ports with TDEV_<SERVICE>_PORT "
            "(e.g. TDEV_REGISTRY_PORT=60051)."
        )
        return 2
    databases = planned_databases(common)
    down = await dependencies_down(common, databases)
    if down:
        for line in down:
            console.print(f"[red]cannot start:[/red] {escape(line)}", soft_wrap=True)
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
        if workers:
            # Workers first: the services describe the tier's isolation when their sandbox starts.
            for index, worker in enumerate(workers):
                worker_env = worker_environment(index, worker.default_port, sandbox, common, env)
                children.append(await _start_child(worker, worker.default_port, worker_env, logs))
            await _wait_until_serving(children, common.host, start_timeout)
            child_env["TDEV_SANDBOX_REMOTE_ADDRESSES"] = ",".join(
                f"{common.host}:{worker.default_port}" for worker in workers)
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
        console_port = console_settings.port or _any_free_port(console_settings.host)
        console_child = await _start_child(CONSOLE, console_port, {**child_env, CONSOLE.port_env: str(console_port)},
                                           logs)
        children.append(console_child)
        try:
            await _wait_until_listening(console_child, console_settings.host, start_timeout)
        except MeshStartError as error:
            console.print(f"[red]{escape(str(error))}[/red]")
            return 1
        console_url = f"http://{console_settings.host}:{console_port}/"
        if as_json:  # ``tdev up --json``: the addresses for a script, nothing else on stdout
            print(json.dumps({"services": {s.name: f"{common.host}:{ports[s.name]}" for s in SERVICES},
                              "console": console_url, "data_dir": str(data_dir)}), flush=True)
        else:
            print(banner(common.host, ports, data_dir, databases=databases, redis_url=common.redis_url,
                         sandbox_workers=[f"{common.host}:{worker.default_port}" for worker in workers],
                         console_url=console_url), flush=True)
        if ready is not None:
            ready.set()
        died = [asyncio.create_task(child.process.wait()) for child in children]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*died, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (*died, stopping):
            task.cancel()
        if stopping not in done:
            for child in children:
                if child.process.returncode is not None:
                    console.print(
                        f"[red]the {what_it_is(child)} stopped unexpectedly (exit code "
                        f"{child.process.returncode}); stopping the mesh.[/red] Last {LOG_TAIL_LINES} lines of "
                        f"{child.log_path}:", soft_wrap=True)
                    console.print(_tail(child.log_path), markup=False, highlight=False, soft_wrap=True)
            return 1
        console.print("stopping the mesh...")
        return 0
    finally:
        await stop_children(children, common.grace_seconds + 5)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        console.print("stopped")
