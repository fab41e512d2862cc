"""Helpers for the sandbox tests: host-side process scanning, agent sources, session batches."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdev_common.sandbox import Outcome, OutcomeKind
from tdev_common.sandbox.session import SandboxSession

HOSTILE_DIR = Path(__file__).parent / "hostile"

# A uid range of our own, so sandboxes started by other people's processes on this machine never show up.
TEST_UID_BASE = 2_100_000_000 + (os.getpid() % 1024) * 65536
TEST_UID_COUNT = 65536

NORMAL_AGENT = """
class Doubler:
    def execute(self, inputs):
        return {"doubled": inputs["x"] * 2}

    def get_capabilities(self):
        return {"name": "doubler", "inputs": ["x"]}
"""


def hostile(name: str) -> str:
    return (HOSTILE_DIR / f"{name}.py").read_text()


@dataclass(frozen=True)
class HostProcess:
    pid: int
    ppid: int
    uid: int
    comm: str
    state: str


def host_processes(uid_lo: int = TEST_UID_BASE, uid_hi: int = TEST_UID_BASE + TEST_UID_COUNT) -> list[HostProcess]:
    """Live (non-zombie) processes on the host whose real uid is in [uid_lo, uid_hi)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        state = fields["State"].split()[0]
        if uid_lo <= uid < uid_hi and state not in ("Z", "X"):
            found.append(HostProcess(int(name), int(fields["PPid"]), uid, fields["Name"].strip(), state))
    return found


def job_processes() -> list[HostProcess]:
    """Processes in our range that are neither idle pool children nor the runtime itself (ns root)."""
    return [p for p in host_processes() if p.comm != "tdev-idle" and p.uid != TEST_UID_BASE]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(name))
    seen: set[int] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in seen:
                seen.add(kid)
                todo.append(kid)
    return seen


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def batch(session: SandboxSession, inputs: list[dict[str, Any]]) -> list[Outcome]:
    """One batch of a session, every outcome."""
    return [outcome async for outcome in session.stream(inputs)]


def outputs(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """The outputs of outcomes that must all be ok."""
    assert all(o.kind is OutcomeKind.OK for o in outcomes), outcomes
    return [o.output or {} for o in outcomes]
