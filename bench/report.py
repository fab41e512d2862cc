"""What every benchmark prints: the machine's load, one line per checked ratio with PASS/FAIL, and --strict.

The machine is shared with other work, so each check line carries the 1-minute load average at the moment
it was measured, and the closing ``RESULT`` line the load at the end. A benchmark builds one
:class:`Report`, calls :meth:`Report.check` per target of its issue, :meth:`Report.info` for figures
without a target, and returns :meth:`Report.finish` as its exit status: 0, or 1 when a check failed and
``--strict`` was given (without it a FAIL is printed but ``make bench`` goes on to the next benchmark).
"""

from __future__ import annotations

import argparse
import math
import operator
import os
import sys
import time
from collections.abc import Callable

_OPERATORS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge,
                                                         "<": operator.lt, ">": operator.gt}


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as printed beside every figure."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--strict`` (exit non-zero on any FAIL) to a benchmark's argument parser."""
    parser.add_argument("--strict", action="store_true", help="exit status 1 when any target is missed")


class Report:
    """The checks of one benchmark run."""

    def __init__(self, name: str, *, strict: bool | None = None) -> None:
        self.name = name
        self.strict = "--strict" in sys.argv if strict is None else strict
        self.checks: list[tuple[str, bool]] = []
        self._started = time.monotonic()
        print(f"[{name}] {os.cpu_count()} CPUs, load average {load_average()} at start", flush=True)

    def check(self, label: str, value: float, op: str, target: float, unit: str = "x", note: str = "",
              load: float | None = None) -> bool:
        """Prints ``PASS|FAIL label value unit (target op target) [load]`` and records the verdict.

        ``load`` is the 1-minute load average when the figure was measured (default: now). A NaN value (a
        figure that could not be measured) fails.
        """
        load = os.getloadavg()[0] if load is None else load
        ok = not math.isnan(value) and _OPERATORS[op](value, target)
        self.checks.append((label, ok))
        extra = f"  {note}" if note else ""
        space = " " if unit and unit != "x" else ""
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {_number(value)}{space}{unit} (target {op} {_number(target)}"
              f"{space}{unit})  [load {load:.2f}]{extra}", flush=True)
        return ok

    def fail(self, label: str, why: str) -> None:
        """A check that could not run at all (a baseline missing, say) is a FAIL, never silently skipped."""
        self.checks.append((label, False))
        print(f"FAIL  {label}: {why}  [load {os.getloadavg()[0]:.2f}]", flush=True)

    def info(self, label: str, text: str) -> None:
        """A figure without a target (a peer's raw number, a breakdown)."""
        print(f"info  {label}: {text}", flush=True)

    @property
    def failed(self) -> list[str]:
        """Labels of the failed checks."""
        return [label for label, ok in self.checks if not ok]

    def finish(self) -> int:
        """Prints the closing line; the exit status (1 only when a check failed under ``--strict``)."""
        failed = self.failed
        verdict = "FAIL" if failed else "PASS"
        seconds = time.monotonic() - self._started
        print(f"RESULT [{self.name}]: {verdict} ({len(self.checks) - len(failed)}/{len(self.checks)} checks passed, "
              f"{seconds:.0f} s, load average {load_average()})", flush=True)
        return 1 if failed and self.strict else 0


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if magnitude < 1 else f"{value:.2f}"
