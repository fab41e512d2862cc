"""Private Redis and Postgres servers for fault tests: killed, paused and restarted without touching the shared ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


class RedisServer:
    """A ``redis-server`` of the test's own on a free port: ``kill()``, ``pause()``/``resume()`` (SIGSTOP/SIGCONT)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed (the machine's Redis package provides it)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_until(lambda: _answers(self.port), 10, "redis-server answering")

    def pause(self) -> None:
        """Redis hangs: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


class PostgresServer:
    """A Postgres cluster of the test's own (initdb in a temp dir, trust auth) that can be stopped and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="tdev-pg-"))
        self.data = self.directory / "data"
        self.bin = _postgres_bin()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        # initdb and postgres refuse to run as root: run them as the directory's owner.
        command = args
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_owner([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"])

    def start(self) -> None:
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l",
                        str(self.directory / "log"), "-o",
                        f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
                        " -c fsync=off -c max_connections=60", "start"])

    def stop(self, mode: str = "fast", wait: bool = True) -> None:
        """``pg_ctl stop``: fast (sessions terminated), smart (waits for them), immediate (no clean shutdown)."""
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w" if wait else "-W", "stop"])

    def create_database(self, name: str) -> str:
        self._as_owner([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-d", "postgres", "-c", f'CREATE DATABASE "{name}"'])
        return self.dsn(name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


def _postgres_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0) if root.exists() else []
    for version in reversed(versions):
        if (version / "bin" / "initdb").exists():
            return version / "bin"
    raise AssertionError("no Postgres server binaries under /usr/lib/postgresql (the machine's Postgres package)")


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A Redis server that only this test uses."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A Postgres cluster that only this test uses, on a free port."""
    server = PostgresServer()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
