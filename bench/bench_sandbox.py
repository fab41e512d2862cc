"""Benchmark of the agent sandbox against its floors, printed in one run with ratios and PASS/FAIL.

Floors: a bare fork of a warm idle process that runs a trivial function and returns JSON over a pipe, and
a ``python -I -S -c pass`` subprocess. The no-op and the fork floor are sampled back to back (the pool drains:
each call waits for its process to be made) and paced (a call every 5 ms: each finds one ready); paced, also
with preloading off (docs/sandbox.md, "Preloading"), its baseline. Also printed (no target): the no-op in a
warm session, the opt-in reuse of one process for many inputs (docs/sandbox.md, "Sessions"), and an 85-line
agent importing dataclasses, paced with preloading off, with its bytecode from the service and its modules
preloaded, against a process that compiles it and imports its modules itself (docs/sandbox.md, "Agent
bytecode" and "Preloaded modules").

Targets (2-core machine, full isolation): no-op median at most 1.5x the fork floor, back to back and paced
(issue 17), p99 at most 10 ms, at least 400 executions/s at concurrency 2.

Run: .venv/bin/python bench/bench_sandbox.py [--runs N] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import report

from tdev_common.sandbox import Sandbox, SandboxSettings
from tdev_common.sandbox.session import SandboxSession

NOOP_AGENT = """
class Noop:
    def execute(self, inputs):
        return {}

    def get_capabilities(self):
        return {}
"""

# What a user's agent looks like more often than a no-op: helpers, a dataclass, a few methods (85 lines).
TYPICAL_AGENT = """
import re
from collections import Counter
from dataclasses import dataclass, field

_WORD = re.compile(r"[A-Za-z']+")
STOP_WORDS = frozenset("a an and are as at be by for from has in is it of on or that the to was were will with".split())


@dataclass
class Summary:
    words: int = 0
    sentences: int = 0
    top: list[tuple[str, int]] = field(default_factory=list)
    longest: str = ""

    def as_dict(self) -> dict:
        return {"words": self.words, "sentences": self.sentences, "top": self.top, "longest": self.longest}


def split_sentences(text: str) -> list[str]:
    parts, current = [], []
    for char in text:
        current.append(char)
        if char in ".!?":
            sentence = "".join(current).strip()
            if sentence:
                parts.append(sentence)
            current = []
    rest = "".join(current).strip()
    if rest:
        parts.append(rest)
    return parts


def keywords(words: list[str], limit: int) -> list[tuple[str, int]]:
    counts = Counter(w.lower() for w in words if w.lower() not in STOP_WORDS and len(w) > 2)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


class TextSummariser:
    \"\"\"Counts words and sentences and names the most frequent keywords of a text.\"\"\"

    def __init__(self) -> None:
        self.limit = 5

    def validate(self, inputs: dict) -> str:
        text = inputs.get("text", "")
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        limit = inputs.get("limit", self.limit)
        if not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        self.limit = limit
        return text

    def execute(self, inputs: dict) -> dict:
        text = self.validate(inputs)
        words = _WORD.findall(text)
        sentences = split_sentences(text)
        summary = Summary(
            words=len(words),
            sentences=len(sentences),
            top=keywords(words, self.limit),
            longest=max(sentences, key=len) if sentences else "",
        )
        return summary.as_dict()

    def get_capabilities(self) -> dict:
        return {
            "name": "text_summariser",
            "description": "word and sentence counts and the top keywords of a text",
            "inputs": {"text": "string", "limit": "integer (default 5)"},
            "outputs": {"words": "integer", "sentences": "integer", "top": "list", "longest": "string"},
        }

    def describe(self) -> str:
        return f"{type(self).__name__} (top {self.limit})"

    def reset(self) -> None:
        self.limit = 5

    def __repr__(self) -> str:
        return self.describe()
"""
TYPICAL_INPUT = {"text": "The sandbox runs every agent in a fresh process. A fresh process is safe. Is it fast?"}

# A warm, idle process that forks one child per request; the child runs a trivial function and writes
# JSON straight to the benchmark over a pipe. This is the floor for "a fresh process per execution".
FORK_SERVER = r"""
import json, os, sys
req, res = int(sys.argv[1]), int(sys.argv[2])
while os.read(req, 1):
    pid = os.fork()
    if pid == 0:
        os.write(res, json.dumps({"ok": sum(range(10))}).encode())
        os._exit(0)
    os.waitpid(pid, 0)
"""


# Paced samples: one call every PACE seconds, so each finds a process ready (back to back, the pool drains
# and a call waits for the next process to be made: that measures how fast processes are made).
PACE = 0.005


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ForkServer:
    """The fork floor: a warm idle process that forks one child per request."""

    def __init__(self) -> None:
        req_r, self.req_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.server = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", FORK_SERVER, str(req_r), str(res_w)], pass_fds=(req_r, res_w)
        )
        os.close(req_r)
        os.close(res_w)

    def sample(self) -> float:
        start = time.perf_counter()
        os.write(self.req_w, b"x")
        os.read(self.res_r, 4096)
        return time.perf_counter() - start

    def close(self) -> None:
        os.close(self.req_w)
        self.server.wait()
        os.close(self.res_r)


def interpreter_sample() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
    return time.perf_counter() - start


async def sandbox_sample(sandbox: Sandbox) -> float:
    start = time.perf_counter()
    outcome = await sandbox.run(NOOP_AGENT, {})
    elapsed = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(f"no-op agent failed: {outcome}")
    return elapsed


async def session_sample(session: SandboxSession) -> float:
    start = time.perf_counter()
    outcomes = [outcome async for outcome in session.stream([{}])]
    elapsed = time.perf_counter() - start
    if not outcomes[0].ok:
        raise SystemExit(f"no-op agent failed in a session: {outcomes[0]}")
    return elapsed


async def typical_sample(sandbox: Sandbox) -> float:
    start = time.perf_counter()
    outcome = await sandbox.run(TYPICAL_AGENT, TYPICAL_INPUT)
    elapsed = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(f"typical agent failed: {outcome}")
    return elapsed


async def latencies(sandbox: Sandbox, cold: Sandbox, compiling: Sandbox, runs: int,
                    block: int = 50) -> dict[str, list[float]]:
    """Samples of each in alternating blocks, so that load from other processes on this shared machine
    hits them alike; a pause after each sandbox block lets its pool refill settle before the floors run."""
    server = ForkServer()
    session = sandbox.session(NOOP_AGENT)
    samples: dict[str, list[float]] = {"fork": [], "noop": [], "interp": [], "session": [], "fork_paced": [],
                                       "noop_paced": [], "cold_paced": [], "typical": [], "typical_compiled": []}
    try:
        for _ in range(5):  # warm-up
            server.sample()
            await sandbox_sample(sandbox)
        while len(samples["noop"]) < runs:
            await asyncio.sleep(0.05)
            samples["fork"] += [server.sample() for _ in range(block)]
            samples["interp"] += [interpreter_sample() for _ in range(max(1, block // 10))]
            samples["noop"] += [await sandbox_sample(sandbox) for _ in range(block)]
            samples["session"] += [await session_sample(session) for _ in range(block)]
            for _ in range(block // 2):
                await asyncio.sleep(PACE)
                samples["fork_paced"].append(server.sample())
            for _ in range(block // 2):
                await asyncio.sleep(PACE)
                samples["noop_paced"].append(await sandbox_sample(sandbox))
            await asyncio.sleep(0.05)
            for _ in range(block // 2):
                await asyncio.sleep(PACE)
                samples["cold_paced"].append(await sandbox_sample(cold))
            for _ in range(block // 5):
                await asyncio.sleep(PACE)
                samples["typical"].append(await typical_sample(cold))
            await asyncio.sleep(0.05)
            for _ in range(block // 5):
                await asyncio.sleep(PACE)
                samples["typical_compiled"].append(await typical_sample(compiling))
    finally:
        session.close()
        server.close()
    return samples


async def sandbox_throughput(sandbox: Sandbox, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            outcome = await sandbox.run(NOOP_AGENT, {})
            if not outcome.ok:
                raise SystemExit(f"no-op agent failed: {outcome}")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def line(name: str, samples: list[float]) -> tuple[float, float]:
    median, p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
    print(f"{name:<44} median {median:7.3f} ms   p99 {p99:7.3f} ms   (n={len(samples)})")
    return median, p99


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of the throughput run")
    report.add_arguments(parser)
    args = parser.parse_args()
    out = report.Report("sandbox", strict=args.strict)

    settings = SandboxSettings()
    async with (
        await Sandbox.start(settings) as sandbox,
        await Sandbox.start(settings.model_copy(update={"preload": False})) as cold,
        await Sandbox.start(
            settings.model_copy(update={"preload": False, "bytecode": False, "preload_modules": ""})
        ) as compiling,
    ):
        print(f"isolation: {sandbox.isolation['summary']}")
        await asyncio.sleep(0.5)
        load_before = os.getloadavg()[0]
        samples = await latencies(sandbox, cold, compiling, args.runs)
        rate = await sandbox_throughput(sandbox, 2, args.seconds)

    print()
    print(
        f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(other processes share the machine; latencies are sampled in alternating blocks)"
    )
    fork_median, _ = line("floor: fork of a warm idle process + JSON", samples["fork"])
    interp_median, _ = line("floor: python -I -S -c pass", samples["interp"])
    noop_median, noop_p99 = line("sandbox: no-op agent through the warm pool", samples["noop"])
    session_median, _ = line("sandbox: no-op in a warm session (opt-in)", samples["session"])
    fork_paced, _ = line(f"floor, paced (a call every {PACE * 1000:g} ms)", samples["fork_paced"])
    noop_paced, _ = line(f"sandbox no-op, paced (a call every {PACE * 1000:g} ms)", samples["noop_paced"])
    cold_paced, _ = line("sandbox no-op, paced, preloading off", samples["cold_paced"])
    typical, _ = line("85-line agent, paced, preloading off", samples["typical"])
    typical_compiled, _ = line("... compiling and importing in its process", samples["typical_compiled"])
    print(f"{'sandbox: executions/s at concurrency 2':<44} {rate:8.1f} /s")
    print()
    out.check("no-op / fork floor (median), back to back", noop_median / fork_median, "<=", 1.5)
    out.check("no-op / fork floor (median), paced", noop_paced / fork_paced, "<=", 1.5)
    out.info("paced no-op, preloading on / off (median)", f"{noop_paced / cold_paced:.2f}x")
    out.info("85-line agent importing dataclasses, bytecode and preloaded modules / compiling and importing "
             "in its process (median)", f"{typical / typical_compiled:.2f}x")
    out.info("no-op / interpreter floor (median)", f"{noop_median / interp_median:.2f}x")
    out.info("no-op in a warm session / fork floor (median)",
             f"{session_median / fork_median:.2f}x (one process for many inputs: not isolated from each other)")
    out.check("no-op p99", noop_p99, "<=", 10.0, "ms")
    out.check("executions/s at concurrency 2", rate, ">=", 400.0, "/s")
    return out.finish()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
