"""What every ``tdev`` sub-command does to reach a service: one channel per command, errors as exit codes,
watch streams that resume after a dropped connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import typer
from rich.console import Console
from rich.markup import escape

from tdev_common.config import CommonSettings, get_common_settings
from tdev_common.grpc_client import ClientSecurity, open_channel
from tdev_common.tls import TlsConfigError, load_tls

T = TypeVar("T")
S = TypeVar("S")
console = Console()

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# Set by the ``tdev --ca/--cert/--key`` options (tdev_cli.main); they win over TDEV_TLS_* settings.
tls_overrides: dict[str, Path] = {}


def cli_security(common: CommonSettings) -> ClientSecurity:
    """What the command's channels present: TLS (CA, client certificate) and a bearer token when configured.

    TLS comes from ``--ca/--cert/--key``, else ``TDEV_TLS_CA_FILE``, ``TDEV_TLS_CLIENT_CERT_FILE`` and
    ``TDEV_TLS_CLIENT_KEY_FILE`` (or ``TDEV_TLS_PEM``); the token from ``TDEV_SERVICE_TOKEN``. A bad TLS
    setting is reported and exits 2.
    """
    # The server-side policy of tdev_common.tls is not the command's business: it only calls.
    settings = common.model_copy(update={**tls_overrides, "mode": "embedded", "tls_required": False})
    try:
        tls = load_tls(settings)
    except TlsConfigError as error:
        console.print(f"[red]error[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    token = common.service_token.get_secret_value() if common.service_token else None
    return ClientSecurity(token, tls.ca, tls_cert=tls.client_cert, tls_key=tls.client_key)


def print_rpc_error(error: grpc.aio.AioRpcError) -> None:
    """The status code a script can branch on, then the server's message."""
    console.print(f"[red]error[/red] {error.code().name}: {escape(error.details() or '')}")


def call_service(address: str, stub_class: Callable[[grpc.aio.Channel], S], work: Callable[[S], Awaitable[T]],
                 *, on_error: Callable[[grpc.aio.AioRpcError], None] = print_rpc_error) -> T:
    """Runs ``work`` with a stub on a fresh channel; a failed call is reported and exits 1."""
    common = get_common_settings()

    async def run() -> T:
        channel = open_channel(address, deadline_seconds=common.client_deadline_seconds, tracing=False,
                               security=cli_security(common))
        try:
            return await work(stub_class(channel))
        finally:
            await channel.close()

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as error:
        on_error(error)
        raise typer.Exit(1) from None


class _Answer(Protocol):
    @property
    def event(self) -> Any: ...


async def resumable_events(open_stream: Callable[[int], AsyncIterator[_Answer]], after: int,
                           *, max_failures: int = 30) -> AsyncIterator[Any]:
    """Events of a Watch stream; when the stream drops, it is reopened after the last event seen, so the
    caller gets every event once, with no gap (the services replay from a sequence number)."""
    last = after
    failures = 0
    while True:
        try:
            async for answer in open_stream(last):
                failures = 0
                last = answer.event.sequence
                yield answer.event
            return
        except grpc.aio.AioRpcError as error:
            if error.code() not in _RETRYABLE or failures > max_failures:
                raise
            failures += 1
            await asyncio.sleep(min(0.2 * failures, 2.0))
