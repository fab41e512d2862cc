"""``tdev``: start the mesh (``tdev up``), check it (``tdev status``) and call the services."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from tdev_cli import session
from tdev_cli.agents import agents_app
from tdev_cli.builds import build_command, builds_app
from tdev_cli.console import console_command
from tdev_cli.evolution import evolution_app, evolve_command
from tdev_cli.mesh import SERVICES
from tdev_cli.session import JsonOption, emit, out
from tdev_cli.workflows import executions_app, workflows_app
from tdev_client import Mesh
from tdev_common.config import get_common_settings

app = typer.Typer(help="T-Developer: register, compose, build and evolve AI agents.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(workflows_app, name="workflows")
app.add_typer(executions_app, name="executions")
app.add_typer(builds_app, name="builds")
app.command("build")(build_command)
app.add_typer(evolution_app, name="evolution")
app.command("evolve")(evolve_command)
app.command("console")(console_command)


def _print_version(value: bool) -> None:
    if value:
        # The installed distribution's version, so a wheel and an editable checkout both answer truthfully.
        typer.echo(f"tdev (t-developer) {importlib.metadata.version('t-developer')}")
        raise typer.Exit()


@app.callback()
def global_options(
    version: Annotated[bool, typer.Option("--version", help="Print the installed t-developer version and exit.",
                                          callback=_print_version, is_eager=True)] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="Profile of the profiles file (TDEV_PROFILES_FILE, "
                                                "default ~/.config/tdev/profiles.toml; docs/clients.md); else "
                                                "TDEV_PROFILE, else [default].")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token for a mesh in production mode; else "
                                              "TDEV_TOKEN, else TDEV_SERVICE_TOKEN, else the profile's.")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="PEM CA the services' certificates are checked against "
                                            "(TLS on); else TDEV_TLS_CA_FILE.", dir_okay=False)] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="PEM client certificate for a mesh that requires "
                                              "mTLS; else TDEV_TLS_CLIENT_CERT_FILE.", dir_okay=False)] = None,
    key: Annotated[Path | None, typer.Option("--key", help="PEM private key of --cert; else "
                                             "TDEV_TLS_CLIENT_KEY_FILE.", dir_okay=False)] = None,
) -> None:
    """T-Developer: register, compose, build and evolve AI agents."""
    session.options = session.Options(profile=profile, token=token, ca_file=ca, cert_file=cert, key_file=key)
    session.configure_output()


@app.command()
def up(as_json: JsonOption = False) -> None:
    """Start the four services on loopback; Ctrl-C stops them.

    SQLite files and the in-process cache unless TDEV_DATABASE_URL / TDEV_REDIS_URL say otherwise (the banner
    says which); a configured Postgres or Redis that does not answer stops it before any service starts (exit
    2), and a service that dies stops the mesh with the tail of its log (exit 1). With --json, the banner is one
    JSON line (the addresses) and every message goes to stderr.
    """
    from tdev_cli.up import run_mesh

    raise typer.Exit(asyncio.run(run_mesh(get_common_settings(), session.err if as_json else out, as_json=as_json)))


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show each service's health and the sandbox isolation available on this host."""
    connection = session.connection()
    health = session.call(_health_of_all)
    isolation = _sandbox_isolation()
    if as_json:
        emit({"services": {service.name: {"address": connection.address(service.name), "health": health[service.name]}
                           for service in SERVICES}, "sandbox_isolation": isolation})
    else:
        table = Table("service", "address", "health")
        for service in SERVICES:
            state = health[service.name]
            colour = "green" if state == "SERVING" else "red"
            table.add_row(service.name, connection.address(service.name), f"[{colour}]{state}[/{colour}]")
        out.print(table)
        out.print(f"sandbox isolation: {isolation}")
    if any(state != "SERVING" for state in health.values()):
        if all(state == "UNREACHABLE" for state in health.values()):
            session.err.print(f"hint: {session.MESH_DOWN_HINT}", markup=False)
        raise typer.Exit(1)


async def _health_of_all(mesh: Mesh) -> dict[str, str]:
    """Health of every service on the mesh's own channels (token and TLS included)."""

    async def one(name: str, grpc_service: str) -> str:
        try:
            answer = await health_pb2_grpc.HealthStub(mesh.channel(name)).Check(
                health_pb2.HealthCheckRequest(service=grpc_service), timeout=2.0)
        except grpc.aio.AioRpcError as error:
            return "SERVICE_UNKNOWN" if error.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

    answers = await asyncio.gather(*(one(service.name, service.grpc_service) for service in SERVICES))
    return {service.name: answer for service, answer in zip(SERVICES, answers, strict=True)}


def _sandbox_isolation() -> str:
    try:
        from tdev_common.sandbox import describe_isolation
    except ImportError:
        return "unknown (sandbox not installed)"
    return str(describe_isolation())


if __name__ == "__main__":
    app()
