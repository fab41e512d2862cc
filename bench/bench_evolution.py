"""Evolution benchmark: our search against random search and best-of-N sampling at equal evaluations.

For each example task in examples/evolution and each seed, one run of the evolution engine with the service
defaults (population 50, mutation 0.1, crossover 0.5, elitism 2, 2 islands, tournament 3; program transforms
only, no model) for 10 generations, candidates measured in the real sandbox. Next to it, with the same
number of evaluations after every generation:

* random search: independent random programs around the seed (1 to 4 random transforms applied in a row);
* best-of-N sampling: N independent single-transform variants of the seed, the best one kept.

Both baselines skip duplicates (same normalised AST) without charging an evaluation, as the search does.
Prints the mean best fitness per generation, the ratios, the mean improvement per generation (the seed
plan's bar: more than 5% per generation) and PASS/FAIL; writes bench/results/evolution.json.

Usage: python bench/bench_evolution.py [--seeds 2] [--generations 5] [--population 50] [--tasks a,b] [--strict]
(``make bench`` runs the defaults, about a fifth of the evaluations of ``--seeds 5 --generations 10``, which
takes about six minutes here.)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import report  # noqa: E402

from evolution_svc import programs, transforms  # noqa: E402
from evolution_svc.budgets import stop_decision  # noqa: E402
from evolution_svc.config import EvolutionSettings  # noqa: E402
from evolution_svc.controller import Controller  # noqa: E402
from evolution_svc.domain import EvaluationSuite, EvolutionConfig, OperatorSet  # noqa: E402
from evolution_svc.evaluator import Evaluator, limits_after_seed  # noqa: E402
from evolution_svc.fitness import FitnessBasis, fitness  # noqa: E402
from evolution_svc.sandbox_runner import SandboxRunner  # noqa: E402
from evolution_svc.server import run_defaults  # noqa: E402
from evolution_svc.validation import suite_from_json, validate_suite  # noqa: E402
from tdev_common.sandbox import Limits, Sandbox, SandboxSettings  # noqa: E402

EXAMPLES = ROOT / "examples" / "evolution"
BAR = 0.05
MAX_CHAIN = 4


@dataclass
class Curve:
    """Best fitness after each generation (index 0: the seed) and the evaluations spent by then."""

    best: list[float]
    evaluations: list[int]


def load(task: str) -> tuple[str, EvaluationSuite]:
    code = (EXAMPLES / task / "agent.py").read_text()
    suite = validate_suite(suite_from_json(json.loads((EXAMPLES / task / "suite.json").read_text())))
    return code, suite


async def search(runner: SandboxRunner, code: str, suite: EvaluationSuite, config: EvolutionConfig) -> Curve:
    controller = Controller(config, Evaluator(runner, suite, suite.training))
    state = await controller.start(code)
    curve = Curve([state.best.fitness], [state.totals.evaluations])
    while stop_decision(state, config) is None:
        state, _ = await controller.step(state)
        curve.best.append(state.best.fitness)
        curve.evaluations.append(state.totals.evaluations)
    return curve


async def sample_around_seed(
    runner: SandboxRunner, code: str, suite: EvaluationSuite, budget: int, seed: int, *, chain: bool,
    speed_weight: float, size_weight: float,
) -> list[float]:
    """Best fitness after each evaluation (index 0: the seed) of random search (chain) or best-of-N."""
    evaluator = Evaluator(runner, suite, suite.training)
    program = programs.load(code)
    measured = (await evaluator.measure(code)).measurement
    basis = FitnessBasis(tuple(c.weight for c in suite.training), program.size, measured.mean_duration_ms,
                         speed_weight, size_weight)
    limits = limits_after_seed(measured, len(suite.training), evaluator.limits)
    rng = random.Random(seed)
    seen = {program.ast_hash}
    best = [fitness(measured, program.size, basis)[0]]
    attempts = 0
    while len(best) < budget and attempts < budget * 50:
        batch: list[str] = []
        while len(batch) < min(16, budget - len(best)) and attempts < budget * 50:
            attempts += 1
            child = code
            for _ in range(rng.randint(1, MAX_CHAIN) if chain else 1):
                child = transforms.mutate(child, rng.choice(transforms.MUTATION_OPERATORS), rng, [code]) or child
            if child == code:
                continue
            identity = programs.ast_hash(child)
            if identity in seen:
                continue
            seen.add(identity)
            batch.append(child)
        results = await asyncio.gather(*(evaluator.measure(child, limits) for child in batch))
        for child, result in zip(batch, results, strict=True):
            value = fitness(result.measurement, programs.load(child).size, basis)[0]
            best.append(max(best[-1], value))
    return best


def at(curve: list[float], evaluations: int) -> float:
    """Best fitness after ``evaluations`` (the last known value if the baseline ran out of new programs)."""
    return curve[min(evaluations, len(curve)) - 1]


def improvement_per_generation(best: Sequence[float]) -> float:
    """Mean relative improvement of the best from one generation to the next."""
    steps = [(b - a) / max(a, 1e-9) for a, b in itertools.pairwise(best)]
    return statistics.fmean(steps) if steps else 0.0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--population", type=int, default=None)
    parser.add_argument("--tasks", default="shipping_cost,slugify,dispatcher")
    report.add_arguments(parser)
    args = parser.parse_args()
    out = report.Report("evolution", strict=args.strict)
    defaults = run_defaults(EvolutionSettings())
    config = replace(defaults, generations=args.generations, plateau_generations=0,
                     operators=OperatorSet.PROGRAM_TRANSFORM, max_duration_seconds=3600.0,
                     population_size=args.population or defaults.population_size)
    sandbox = await Sandbox.start(SandboxSettings(pool_size=8))
    runner = SandboxRunner(sandbox, Limits(timeout_seconds=2.0, cpu_seconds=2.0))
    print(f"sandbox: {sandbox.isolation}")
    print(f"config: population {config.population_size}, mutation {config.mutation_rate}, crossover "
          f"{config.crossover_rate}, elitism {config.elitism}, islands {config.islands}, tournament "
          f"{config.tournament_size}, {config.generations} generations, {args.seeds} seeds, program transforms only\n")
    results: dict[str, object] = {}
    try:
        for task in args.tasks.split(","):
            code, suite = load(task)
            started = time.perf_counter()
            ours: list[Curve] = []
            randoms: list[list[float]] = []
            best_of_n: list[list[float]] = []
            for seed in range(args.seeds):
                curve = await search(runner, code, suite, replace(config, seed=seed))
                ours.append(curve)
                budget = curve.evaluations[-1]
                weights = {"speed_weight": config.speed_weight, "size_weight": config.size_weight}
                randoms.append(await sample_around_seed(runner, code, suite, budget, seed, chain=True, **weights))
                best_of_n.append(await sample_around_seed(runner, code, suite, budget, seed, chain=False, **weights))
            generations = len(ours[0].best)
            rows = []
            print(f"== {task}: {len(suite.training)} training cases, {time.perf_counter() - started:.0f} s")
            print(f"{'gen':>4} {'evals':>6} {'ours':>8} {'random':>8} {'best-of-N':>10} {'ours/random':>12} "
                  f"{'ours/bestN':>11}")
            for g in range(generations):
                evaluations = round(statistics.fmean(c.evaluations[g] for c in ours))
                mine = statistics.fmean(c.best[g] for c in ours)
                rand = statistics.fmean(at(r, c.evaluations[g]) for r, c in zip(randoms, ours, strict=True))
                bon = statistics.fmean(at(b, c.evaluations[g]) for b, c in zip(best_of_n, ours, strict=True))
                rows.append({"generation": g, "evaluations": evaluations, "ours": mine, "random": rand,
                             "best_of_n": bon})
                print(f"{g:>4} {evaluations:>6} {mine:>8.4f} {rand:>8.4f} {bon:>10.4f} {mine / rand:>12.3f} "
                      f"{mine / bon:>11.3f}")
            per_generation = statistics.fmean(improvement_per_generation(c.best) for c in ours)
            compound = statistics.fmean((c.best[-1] / c.best[0]) ** (1 / (len(c.best) - 1)) - 1 for c in ours)
            last = rows[-1]
            beats = last["ours"] > last["random"] and last["ours"] > last["best_of_n"]
            print(f"mean improvement per generation: {per_generation:.1%} (compound {compound:.1%})")
            out.check(f"{task}: mean improvement of the best per generation", per_generation, ">", BAR, "")
            out.check(f"{task}: ours / random search after {last['evaluations']} evaluations",
                      last["ours"] / last["random"], ">", 1.0)
            out.check(f"{task}: ours / best-of-N after {last['evaluations']} evaluations",
                      last["ours"] / last["best_of_n"], ">", 1.0)
            print()
            results[task] = {"rows": rows, "improvement_per_generation": per_generation,
                             "compound_improvement": compound, "beats_baselines": beats}
    finally:
        await sandbox.close()
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "evolution.json").write_text(json.dumps(results, indent=1))
    return out.finish()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
