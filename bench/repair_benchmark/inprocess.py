"""Runs agent programs in this process, with a wall-clock alarm and a recursion cap.

A BENCH SHORTCUT, never used by the service: the evolution service runs every candidate in the sandbox
(separate process, namespaces, resource limits). The benchmark counts repairs, not time, and runs
hundreds of thousands of small programs, so it runs them here; the candidates are variants of our own
reference programs (no file, network or process calls), and the alarm stops loops that never end.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

RECURSION_ROOM = 120


class _Alarm(BaseException):
    """Raised by the timer inside a running candidate (BaseException: ``except Exception`` cannot eat it)."""


def _ring(signum: int, frame: FrameType | None) -> None:
    raise _Alarm()


def load(code: str) -> Any:
    """An instance of the program's agent class; raises on any load error."""
    namespace: dict[str, Any] = {"__name__": "candidate"}
    exec(compile(code, "<candidate>", "exec"), namespace)
    classes = [value for value in namespace.values() if isinstance(value, type) and hasattr(value, "execute")]
    if len(classes) != 1:
        raise ValueError("no single agent class")
    return classes[0]()


def run(code: str, inputs: Sequence[dict[str, Any]], *, case_seconds: float = 0.05,
        batch_seconds: float = 0.5) -> list[tuple[bool, Any, str, float]]:
    """(ok, JSON output, error, duration ms) per input; a load error or the batch alarm fails every case."""
    previous_handler = signal.signal(signal.SIGALRM, _ring)
    previous_limit = sys.getrecursionlimit()
    results: list[tuple[bool, Any, str, float]] = []
    started = time.perf_counter()
    try:
        sys.setrecursionlimit(len(_stack()) + RECURSION_ROOM)
        try:
            agent = load(code)
        except BaseException as error:
            return [(False, None, f"{type(error).__name__}: {error}", 0.0) for _ in inputs]
        for case in inputs:
            if time.perf_counter() - started > batch_seconds:
                results.append((False, None, "TimeoutError: batch time exceeded", 0.0))
                continue
            begin = time.perf_counter()
            try:
                signal.setitimer(signal.ITIMER_REAL, case_seconds)
                try:
                    output = json.loads(json.dumps(agent.execute(json.loads(json.dumps(case)))))
                finally:
                    # The alarm may ring up to here; past this line it cannot ring any more.
                    signal.setitimer(signal.ITIMER_REAL, 0)
                results.append((True, output, "", (time.perf_counter() - begin) * 1000))
            except _Alarm:
                results.append((False, None, "TimeoutError: case time exceeded", case_seconds * 1000))
            except BaseException as error:
                results.append((False, None, f"{type(error).__name__}: {error}"[:200], 0.0))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        sys.setrecursionlimit(previous_limit)
    return results


def _stack() -> list[FrameType]:
    frames: list[FrameType] = []
    frame = sys._getframe()
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back  # type: ignore[assignment]
    return frames
