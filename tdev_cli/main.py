"""``tdev``: start the mesh (``tdev up``), check it (``tdev status``) and call the services."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tdev_cli.agents import agents_app
from tdev_cli.builds import build_command, builds_app
from tdev_cli.calls import cli_security, tls_overrides
from tdev_cli.console import console_command
from tdev_cli.evolution import evolution_app, evolve_command
from tdev_cli.mesh import SERVICES, health_of_all
from tdev_cli.workflows import executions_app, workflows_app
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
console = Console()


@app.callback()
def tls_options(
    ca: Annotated[Path | None, typer.Option("--ca", help="PEM CA the services' certificates are checked against "
                                            "(TLS on); else TDEV_TLS_CA_FILE.", dir_okay=False)] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="PEM client certificate for a mesh that requires "
                                              "mTLS; else TDEV_TLS_CLIENT_CERT_FILE.", dir_okay=False)] = None,
    key: Annotated[Path | None, typer.Option("--key", help="PEM private key of --cert; else "
                                             "TDEV_TLS_CLIENT_KEY_FILE.", dir_okay=False)] = None,
) -> None:
    """T-Developer: register, compose, build and evolve AI agents."""
    for name, value in (("tls_ca_file", ca), ("tls_client_cert_file", cert), ("tls_client_key_file", key)):
        if value is not None:
            tls_overrides[name] = value


@app.command()
def up() -> None:
    """Start the four services on loopback; Ctrl-C stops them.

    SQLite files and the in-process cache unless TDEV_DATABASE_URL / TDEV_REDIS_URL say otherwise (the banner
    says which); a configured Postgres or Redis that does not answer stops it before any service starts (exit
    2), and a service that dies stops the mesh with the tail of its log (exit 1).
    """
    from tdev_cli.up import run_mesh

    raise typer.Exit(asyncio.run(run_mesh(get_common_settings(), console)))


@app.command()
def status() -> None:
    """Show each service's health and the sandbox isolation available on this host."""
    common = get_common_settings()
    health = asyncio.run(health_of_all(common, security=cli_security(common)))
    table = Table("service", "address", "health")
    for service in SERVICES:
        state = health[service.name]
        colour = "green" if state == "SERVING" else "red"
        table.add_row(service.name, service.address(common), f"[{colour}]{state}[/{colour}]")
    console.print(table)
    console.print(f"sandbox isolation: {_sandbox_isolation()}")
    if any(state != "SERVING" for state in health.values()):
        raise typer.Exit(1)


def _sandbox_isolation() -> str:
    try:
        from tdev_common.sandbox import describe_isolation
    except ImportError:
        return "unknown (sandbox not installed)"
    return str(describe_isolation())


if __name__ == "__main__":
    app()
