"""Running ``tdev`` against services of the test: in a worker thread (CliRunner, its own event loop) or as a
subprocess (pipes, signals), with an environment that ignores the machine's profiles, tokens and TLS files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from typer.testing import CliRunner

from tdev_cli.main import app

CONNECTION_ENV = ("TDEV_TOKEN", "TDEV_SERVICE_TOKEN", "TDEV_PROFILE", "TDEV_TLS_CA_FILE", "TDEV_TLS_CLIENT_CERT_FILE",
                  "TDEV_TLS_CLIENT_KEY_FILE", "TDEV_REGISTRY_ADDRESS", "TDEV_WORKFLOW_ADDRESS",
                  "TDEV_BUILDER_ADDRESS", "TDEV_EVOLUTION_ADDRESS", "TDEV_TLS_PEM", "FORCE_COLOR", "NO_COLOR")


@dataclass(frozen=True)
class Ran:
    """What one ``tdev`` run left behind."""

    code: int
    stdout: str
    stderr: str


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str | None]:
    """Unset every connection variable, point the profiles file into ``tmp_path``, then ``extra``."""
    env: dict[str, str | None] = dict.fromkeys(CONNECTION_ENV)
    env.update({"TDEV_PROFILES_FILE": str(tmp_path / "profiles.toml"), "COLUMNS": "200"})
    env.update(extra)
    return env


@contextlib.contextmanager
def server_logs_on_stderr() -> Iterator[None]:
    """The in-process servers log to the real stderr, so that CliRunner's captured stdout is the CLI's alone."""
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.dev.ConsoleRenderer(colors=False)],
                        logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**saved)


async def tdev(env: dict[str, str | None], *args: str) -> Ran:
    """``tdev ARGS`` in a worker thread while the servers keep serving on this loop."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"tdev {' '.join(args)} raised {result.exception!r}\n{result.stderr}")
    return Ran(result.exit_code, result.stdout, result.stderr)


def subprocess_env(env: dict[str, str | None]) -> dict[str, str]:
    """``env`` applied to this process's environment, for a child ``tdev``."""
    merged = dict(os.environ)
    for key, value in env.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


async def tdev_process(env: dict[str, str | None], *args: str) -> asyncio.subprocess.Process:
    """``python -m tdev_cli.main ARGS`` as a child with its stdout and stderr on pipes (not a terminal)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tdev_cli.main", *args, env=subprocess_env(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def tdev_piped(env: dict[str, str | None], *args: str, timeout: float = 60) -> Ran:
    """``tdev ARGS`` as a child whose output is piped (as in ``tdev ... | cat``)."""
    process = await tdev_process(env, *args)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())
