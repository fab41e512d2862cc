"""``tdev console``: the web console on loopback (TDEV_CONSOLE_HOST/TDEV_CONSOLE_PORT), until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal

import typer
from rich.console import Console
from rich.markup import escape

from tdev_cli.session import JsonOption, emit_line
from tdev_common.auth import AuthConfigError
from tdev_common.config import get_common_settings
from tdev_common.tls import TlsConfigError

console = Console(stderr=True)


def console_command(as_json: JsonOption = False) -> None:
    """Serve the web console (agents, executions, builds, evolution; live) for the configured mesh.

    It reads the services at TDEV_*_ADDRESS over gRPC with TDEV_SERVICE_TOKEN and the TDEV_TLS_* client
    settings; in production mode every page needs one of the mesh's tokens (TDEV_AUTH_TOKENS).
    """
    from tdev_console.config import get_console_settings
    from tdev_console.server import serve

    def ready(url: str) -> None:
        if as_json:  # the address for a script, nothing else on stdout
            emit_line({"console": url})
            return
        console.print(f"console: [bold]{escape(url)}[/bold]  (Ctrl-C stops it)")

    async def until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(get_common_settings(), get_console_settings(), ready, stop)
        if not as_json:
            console.print("console stopped")

    try:
        asyncio.run(until_stopped())
    except (AuthConfigError, TlsConfigError) as error:
        console.print(f"[red]cannot start:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    except OSError as error:
        settings = get_console_settings()
        reason = escape(error.strerror or str(error))
        console.print(f"[red]cannot start:[/red] {settings.host}:{settings.port}: {reason} (set TDEV_CONSOLE_PORT)")
        raise typer.Exit(2) from None
