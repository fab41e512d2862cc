"""The repair benchmark: reference programs with one injected bug each, and suites with held-out cases.

For a seed, each reference gets its cases (inputs from its generator, deduplicated; expected outputs from
the reference itself), the last ``held_out`` of them marked held-out. Then, for each bug kind (or
``kinds_per_reference`` of them drawn by the seed), the injected variants are tried in a seeded order and
the first that breaks at least one training case becomes a task: a bug no training case exposes is no
repair task, and one only the held-out cases expose could not be seen by any search.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from repair_benchmark import inprocess
from repair_benchmark.bugs import BUG_KINDS, variants
from repair_benchmark.references import REFERENCES, Reference

CASES = 24
HELD_OUT = 8


@dataclass(frozen=True)
class Task:
    """One repair task: the buggy program and its suite (held-out cases marked)."""

    name: str
    reference: str
    kind: str
    code: str
    reference_code: str
    cases: tuple[dict[str, Any], ...]
    broken_training: int
    broken_held_out: int

    def suite_json(self) -> dict[str, Any]:
        """The suite in the service's JSON form (exact scoring)."""
        return {"scoring_mode": "exact", "cases": list(self.cases)}


def _cases(reference: Reference, rng: random.Random, count: int, held_out: int) -> list[dict[str, Any]]:
    inputs: dict[str, dict[str, Any]] = {}
    for _ in range(count * 20):
        if len(inputs) >= count:
            break
        drawn = reference.inputs(rng)
        inputs.setdefault(json.dumps(drawn, sort_keys=True), drawn)
    drawn_inputs = list(inputs.values())
    results = inprocess.run(reference.code, drawn_inputs, case_seconds=1.0, batch_seconds=30.0)
    cases: list[dict[str, Any]] = []
    for index, (case_inputs, (ok, output, error, _)) in enumerate(zip(drawn_inputs, results, strict=True)):
        if not ok:
            raise RuntimeError(f"reference {reference.name} fails on {case_inputs}: {error}")
        cases.append({"name": f"{reference.name}-{index}", "inputs": case_inputs, "expected": output,
                      "held_out": index >= len(drawn_inputs) - min(held_out, len(drawn_inputs) // 3)})
    return cases


def _broken(code: str, cases: list[dict[str, Any]]) -> tuple[int, int]:
    results = inprocess.run(code, [case["inputs"] for case in cases])
    training = held = 0
    for case, (ok, output, _, _) in zip(cases, results, strict=True):
        wrong = not ok or json.dumps(output, sort_keys=True) != json.dumps(case["expected"], sort_keys=True)
        if wrong and case["held_out"]:
            held += 1
        elif wrong:
            training += 1
    return training, held


def generate(seed: int = 0, *, cases: int = CASES, held_out: int = HELD_OUT,
             kinds_per_reference: int | None = None) -> list[Task]:
    """The benchmark's tasks for a seed (the same seed gives the same tasks)."""
    tasks: list[Task] = []
    for reference in REFERENCES:
        rng = random.Random(f"{seed}:{reference.name}")
        suite = _cases(reference, rng, cases, held_out)
        kinds = list(BUG_KINDS)
        rng.shuffle(kinds)
        made = 0
        for kind in kinds:
            if kinds_per_reference is not None and made >= kinds_per_reference:
                break
            candidates = variants(reference.code, kind)
            rng.shuffle(candidates)
            for code in candidates:
                training, held = _broken(code, suite)
                if training > 0:
                    tasks.append(Task(f"{reference.name}.{kind}", reference.name, kind, code, reference.code,
                                      tuple(suite), training, held))
                    made += 1
                    break
    return tasks
