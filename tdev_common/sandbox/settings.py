"""Sandbox settings (env prefix ``TDEV_SANDBOX_``): pool, default limits and isolation policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
# Standard-library modules agents commonly import that the lean pool does not have, each 0.6-8 ms to
# import in a fresh process here (docs/sandbox.md, "Preloaded modules"); none keeps state a fork would share
# (random reseeds itself in every child).
DEFAULT_PRELOAD_MODULES = (
    "base64,bisect,calendar,copy,csv,dataclasses,datetime,decimal,difflib,fnmatch,fractions,glob,graphlib,hashlib,"
    "heapq,hmac,html,inspect,ipaddress,logging,numbers,pathlib,pickle,pprint,random,secrets,shlex,shutil,sqlite3,"
    "statistics,string,tempfile,unicodedata,urllib.parse,uuid,weakref,xml.etree.ElementTree,zlib,zoneinfo"
)


class SandboxSettings(BaseSettings):
    """Operator-facing knobs of the agent sandbox.

    ``allow_weak_isolation`` is off by default: without Linux namespaces the sandbox refuses to start.
    The embedded local mode turns it on (see :meth:`for_embedded`) and gets a loud warning in the logs.
    """

    model_config = SettingsConfigDict(env_prefix="TDEV_SANDBOX_", frozen=True, extra="ignore")

    backend: Literal["auto", "remote", "namespaces", "weak"] = Field(
        default="auto",
        description=(
            "auto picks the remote tier when remote_addresses is set, else namespaces when the kernel allows "
            "them, else weak (if allowed)"
        ),
    )
    remote_addresses: str = Field(
        default="",
        description=(
            "sandbox tier workers as host:port,host:port (python -m tdev_common.sandbox.worker); set, agent code "
            "runs there instead of on this host"
        ),
    )
    remote_connect_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="how long start-up waits for a worker to describe its isolation"
    )
    local_workers: int = Field(
        default=0, ge=0, le=16, description="tdev up starts this many local sandbox workers and uses them"
    )
    allow_weak_isolation: bool = Field(
        default=False, description="run without namespaces (rlimits and audit hooks only) instead of refusing"
    )

    seccomp: Literal["auto", "strict", "off"] = Field(
        default="auto",
        description=(
            "syscall filter of execution processes: auto uses it when libseccomp is available, strict refuses "
            "to start without it, off disables it"
        ),
    )

    pool_size: int = Field(default=4, ge=1, le=256, description="pre-forked idle processes for sync agents")
    async_pool_size: int = Field(
        default=2, ge=0, le=256,
        description="idle processes with asyncio and preload_modules loaded (async agents, and agents importing those)",
    )
    preload_modules: str = Field(
        default=DEFAULT_PRELOAD_MODULES,
        description=(
            "modules imported once, before forking, by the async pool (comma-separated): an agent importing one "
            "runs there without paying for the import (docs/sandbox.md)"
        ),
    )
    preload: bool = Field(
        default=True,
        description="idle processes load the code of a streak of same-agent jobs before their inputs come",
    )
    bytecode: bool = Field(
        default=True,
        description="the service compiles agent code once and processes unmarshal it instead of compiling it",
    )
    max_concurrency: int = Field(default=16, ge=1, le=1024, description="executions running at once")

    session_idle_seconds: float = Field(
        default=0.1, gt=0, le=60,
        description="how long a session's warm process waits for its next batch before it ends (docs/sandbox.md)",
    )
    session_max_inputs: int = Field(
        default=64, ge=1, le=4096, description="most inputs one session's process runs before a fresh one takes over"
    )

    timeout_seconds: float = Field(default=10.0, gt=0, le=3600, description="wall-clock limit per execution")
    cpu_seconds: float = Field(default=10.0, gt=0, le=3600, description="CPU-time limit per execution")
    memory_bytes: int = Field(default=512 * MIB, ge=64 * MIB, description="address-space limit per process")
    max_output_bytes: int = Field(default=1 * MIB, ge=1024, description="largest JSON result accepted")
    max_stdout_bytes: int = Field(default=64 * 1024, ge=0, description="stdout/stderr kept per execution")
    max_file_bytes: int = Field(default=16 * MIB, ge=0, description="largest file an execution may write")
    max_open_files: int = Field(default=64, ge=8, le=65536, description="open file descriptors per execution")
    max_processes: int = Field(default=1, ge=1, le=4096, description="processes+threads per execution")

    work_dir_bytes: int = Field(default=32 * MIB, ge=MIB, description="tmpfs size of each work directory")
    work_dir_inodes: int = Field(default=4096, ge=16, description="inodes of each work directory")

    uid_base: int = Field(default=2_000_000_000, ge=65536, le=4_000_000_000, description="host uid of ns root")
    uid_count: int = Field(default=65536, ge=2048, le=1 << 20, description="host uids mapped into the sandbox")
    python_executable: str | None = Field(default=None, description="interpreter for the runtime")
    extra_read_only_paths: tuple[str, ...] = Field(default=(), description="more host paths visible read-only")
    start_timeout_seconds: float = Field(default=15.0, gt=0, description="longest wait for the zygote to start")
    grace_seconds: float = Field(default=2.0, gt=0, description="service-side backstop beyond a deadline")

    @property
    def preloaded_modules(self) -> frozenset[str]:
        """``preload_modules`` split on commas, blanks dropped."""
        return frozenset(_comma_list(self.preload_modules))

    @property
    def remote_worker_addresses(self) -> tuple[str, ...]:
        """``remote_addresses`` split on commas, blanks dropped (order kept: it is the round-robin order)."""
        return _comma_list(self.remote_addresses)

    @classmethod
    def for_mode(cls, mode: str, **overrides: object) -> SandboxSettings:
        """The settings a service in ``mode`` uses: weak isolation may be a fallback only when embedded."""
        return cls.for_embedded(**overrides) if mode == "embedded" else cls(**overrides)  # type: ignore[arg-type]

    @classmethod
    def for_embedded(cls, **overrides: object) -> SandboxSettings:
        """Settings for the embedded local mode, where weak isolation is allowed (with a warning)."""
        values: dict[str, object] = {"allow_weak_isolation": True, **overrides}
        return cls(**values)  # type: ignore[arg-type]


class SandboxWorkerSettings(BaseSettings):
    """Settings of one sandbox tier worker process (env prefix ``TDEV_SANDBOX_WORKER_``)."""

    model_config = SettingsConfigDict(env_prefix="TDEV_SANDBOX_WORKER_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="interface the worker listens on")
    port: int = Field(default=50060, ge=0, le=65535, description="port of the worker (0 picks a free one)")
    grace_seconds: float = Field(
        default=10.0, ge=0, description="on SIGTERM, how long running jobs may finish before they are killed"
    )


def _comma_list(text: str) -> tuple[str, ...]:
    """``text`` split on commas, each part stripped, blanks dropped, in order."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
