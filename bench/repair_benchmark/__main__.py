"""Writes the repair benchmark: ``python -m repair_benchmark --out DIR [--seed 0] [--kinds-per-reference 2]``
(run from bench/). Each task gets DIR/<task>/agent.py (buggy), reference.py and suite.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repair_benchmark.generate import generate


def main() -> None:
    """Generates the tasks and writes them, one directory each, with a summary table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds-per-reference", type=int, default=None)
    args = parser.parse_args()
    tasks = generate(args.seed, kinds_per_reference=args.kinds_per_reference)
    for task in tasks:
        folder = args.out / task.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.py").write_text(task.code)
        (folder / "reference.py").write_text(task.reference_code)
        (folder / "suite.json").write_text(json.dumps(task.suite_json(), indent=2) + "\n")
        print(f"{task.name:40} breaks {task.broken_training} training, {task.broken_held_out} held-out cases")
    print(f"{len(tasks)} tasks from {len({task.reference for task in tasks})} reference programs in {args.out}")


if __name__ == "__main__":
    main()
