"""How every ``tdev`` command reaches the mesh and answers: one :class:`tdev_client.Connection` from the global
options, the typed client, failures as a few lines on stderr and an exit code, output as JSON or for people.

Exit codes: 0 done, 1 a service refused or failed the call (``error CODE: message``), 2 the command itself is
wrong (bad option, unreadable file, unusable connection settings), 130 interrupted while watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import grpc
import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape

from tdev_client import Connection, ConnectionError_, Mesh, TdevError

T = TypeVar("T")

TOKEN_HINT = "this mesh wants a bearer token: pass --token, set TDEV_TOKEN, or use a --profile with token_env"
MESH_DOWN_HINT = ("is the mesh running? start it with `make run` (or `tdev up`), or point --profile/--address "
                  "at yours")
# What gRPC says when nothing listens at the address (not when TLS or auth fails: those have their own words).
_UNREACHABLE = ("connection refused", "no route to host", "network is unreachable", "dns resolution failed",
                "name or service not known", "failed to connect to all addresses")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine output on stdout: one JSON document (one JSON "
                                          "object per line for streams and --follow); messages go to stderr.")]


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# Off a terminal, rich drops colours by itself; lines are not wrapped (see configure_output).
out = Console(soft_wrap=not _is_terminal(sys.stdout))
err = Console(stderr=True, soft_wrap=True)
# How wide tables may grow when piped without COLUMNS: as wide as their content, never wrapped at 80.
PIPE_WIDTH = 4096


def configure_output() -> None:
    """Fits the stdout console to where stdout goes now (each command may run with another stdout)."""
    if _is_terminal(sys.stdout):
        out.soft_wrap = False
        return
    out.soft_wrap = True
    columns = os.environ.get("COLUMNS", "")
    out.width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


@contextlib.contextmanager
def live(first: RenderableType) -> Iterator[Callable[[RenderableType], None]]:
    """A view refreshed in place on a terminal; elsewhere only the last view, printed once at the end (redrawing
    is for eyes, and rich's last frame off a terminal lacks its final newline)."""
    if out.is_terminal:
        with Live(first, console=out, refresh_per_second=8, transient=False) as view:
            yield view.update
        return
    latest = [first]
    try:
        yield lambda renderable: latest.__setitem__(0, renderable)
    finally:
        out.print(latest[0])


@dataclass
class Options:
    """The global options of ``tdev`` (set by the main callback, read by every command)."""

    profile: str | None = None
    token: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # What Ctrl-C during a watch prints: what goes on, and the command that watches it again.
    watching: tuple[str, str] | None = field(default=None)


options = Options()


def fail(message: str, code: int = 2) -> NoReturn:
    """One ``error ...`` line on stderr, then exit (2: the command is wrong)."""
    err.print(f"[red]error[/red] {escape(message)}")
    raise typer.Exit(code)


def connection(**addresses: str) -> Connection:
    """The connection of this command: ``--address`` options, then the global options, environment, profile."""
    explicit: dict[str, Any] = {"token": options.token, "ca_file": options.ca_file, "cert_file": options.cert_file,
                                "key_file": options.key_file, **addresses}
    try:
        resolved = Connection.resolve(profile=options.profile, **explicit)
        pems = resolved.pem()
    except ConnectionError_ as error:
        fail(str(error))
    # gRPC takes any bytes and only fails at connect time, in words about the network: say it here instead.
    for path, pem, marker, what in (
            (resolved.ca_file, pems[0], b"-----BEGIN CERTIFICATE-----", "CA certificate"),
            (resolved.cert_file, pems[1], b"-----BEGIN CERTIFICATE-----", "certificate"),
            (resolved.key_file, pems[2], b"PRIVATE KEY-----", "private key")):
        if pem is not None and marker not in pem:
            fail(f"{path} is not a PEM {what}")
    return resolved


def read_text(path: Path) -> str:
    """A text file the command was given; one that cannot be read as UTF-8 exits 2 naming why."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    except UnicodeDecodeError as error:
        fail(f"{path} is not UTF-8 text: {error.reason} at byte {error.start}")


def unreachable(error: TdevError) -> bool:
    """True when the call failed because nothing answered at the address (the mesh is not running there)."""
    text = error.message.lower()
    return error.code == grpc.StatusCode.UNAVAILABLE and any(words in text for words in _UNREACHABLE) \
        and "handshake" not in text and "ssl" not in text


def report(error: TdevError) -> None:
    """``error CODE: message``, the field violations, the request id and, when unreachable, how to start it."""
    err.print(f"[red]error[/red] {error.code.name}: {escape(error.message)}")
    for violation in error.field_violations:
        if f"{violation.field}: {violation.description}" in error.message:
            continue  # the message says it already
        err.print(f"  [yellow]{escape(violation.field)}[/yellow]: {escape(violation.description)}")
    if error.request_id:
        err.print(f"request id {escape(error.request_id)}")
    if unreachable(error):
        err.print(f"hint: {escape(MESH_DOWN_HINT)}")
    elif error.code == grpc.StatusCode.UNAUTHENTICATED:
        err.print(f"hint: {escape(TOKEN_HINT)}")


def watching(what: str, command: str) -> None:
    """Tells Ctrl-C what is being watched: ``what`` goes on, ``command`` watches it again."""
    options.watching = (what, command)


def call(work: Callable[[Mesh], Awaitable[T]], **addresses: str) -> T:
    """Runs ``work`` with the typed client on this command's connection.

    A :class:`TdevError` is reported and exits 1; unusable connection settings exit 2; Ctrl-C while
    watching says how to watch again and exits 130.
    """
    resolved = connection(**addresses)

    async def run() -> T:
        async with Mesh(resolved) as mesh:
            return await work(mesh)

    try:
        return asyncio.run(run())
    except TdevError as error:
        report(error)
        raise typer.Exit(1) from None
    except ConnectionError_ as error:
        fail(str(error))
    except KeyboardInterrupt:
        if options.watching is None:
            err.print("interrupted")
            raise typer.Exit(130) from None
        what, command = options.watching
        err.print(f"stopped watching; {what} goes on. watch again: {command}", markup=False)
        raise typer.Exit(130) from None


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``tdev ... --json | head -1``): stop quietly, as Unix tools do, and keep Python
        # from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None


def emit(document: Any) -> None:
    """One JSON document on stdout."""
    _write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def emit_line(document: Any) -> None:
    """One JSON object on one line of stdout (streams, --follow)."""
    _write(json.dumps(document, ensure_ascii=False, default=str) + "\n")


def say(as_json: bool, text: str) -> None:
    """A message for people: stdout normally, stderr when stdout carries JSON."""
    (err if as_json else out).print(text)
