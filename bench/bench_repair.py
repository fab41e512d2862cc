"""Repair benchmark: our search (synthesis operators + lexicase) against random search over the same operators
and DEAP genetic programming, at equal evaluations, on the generated repair benchmark.

For each seed, ``bench/repair_benchmark`` generates the tasks anew (28 reference programs, one injected bug
each, drawn by the seed from off-by-one, wrong operator, missing clause, missing call, swapped arguments,
wrong constant, missing base case; 16 training and 8 held-out cases). A task counts as *repaired* when the
program a method ends with passes every held-out case. Each method gets the same number of evaluations
(``--budget``) and stops early once a program passes every training case:

* ours: the evolution engine (controller, sampler, evaluator of evolution_svc) with lexicase selection and
  synthesis operators chosen by the bandit, no model;
* random: independent random programs around the buggy one, 1 to 3 operators drawn uniformly from the
  same operator set (transforms + synthesis, same guidance), duplicates skipped without charge;
* DEAP GP: standard tree GP (deap.gp, half-and-half init, one-point crossover, uniform mutation,
  tournament 3) over arithmetic primitives, the inputs and the suite's constants, where it applies
  (numeric inputs, one numeric output key); it synthesises from scratch, as GP does.

BENCH SHORTCUT: candidates run in this process (repair_benchmark/inprocess.py: alarm and recursion cap),
not in the sandbox, because the benchmark counts repairs, not time, and runs ~10^5 programs. The service
always runs candidates in the sandbox; the engine code used here is the service's own.

Prints the fraction repaired per seed and overall, the ratios, and PASS/FAIL (target: ours >= 60% and
ahead of both baselines); ``--strict`` makes a FAIL exit non-zero. Writes bench/results/repair.json.

Usage: python bench/bench_repair.py [--seeds 2] [--budget 250] [--workers 2] [--strict]
(``make bench`` runs the defaults: two seeds, one per worker, 56 tasks; ``--seeds 5`` gives the 140-task
figures of docs/evolution.md in about 130 s.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import operator
import random
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402
from repair_benchmark import inprocess  # noqa: E402
from repair_benchmark.generate import Task, generate  # noqa: E402

from evolution_svc import programs, synthesis, transforms  # noqa: E402
from evolution_svc.budgets import stop_decision  # noqa: E402
from evolution_svc.config import EvolutionSettings  # noqa: E402
from evolution_svc.controller import Controller  # noqa: E402
from evolution_svc.domain import EvaluationLimits, EvaluationSuite, EvolutionConfig, OperatorSet, Selection  # noqa: E402
from evolution_svc.evaluator import Evaluator  # noqa: E402
from evolution_svc.ports import CaseRun  # noqa: E402
from evolution_svc.sampler import BANDIT_OPERATORS  # noqa: E402
from evolution_svc.server import run_defaults  # noqa: E402
from evolution_svc.validation import suite_from_json, validate_suite  # noqa: E402

TARGET = 0.6
MAX_CHAIN = 3


class InProcessRunner:
    """CandidateRunner that runs programs in this process (the bench shortcut above)."""

    async def run_cases(self, code: str, inputs: Sequence[dict[str, Any]], limits: EvaluationLimits) -> list[CaseRun]:
        return [CaseRun(ok, output, duration, error) for ok, output, error, duration in inprocess.run(code, inputs)]


@dataclass
class Outcome:
    repaired: bool
    evaluations: int
    training_perfect: bool


def suite_of(task: Task) -> EvaluationSuite:
    return validate_suite(suite_from_json(task.suite_json()))


async def held_out_passes(code: str, suite: EvaluationSuite) -> bool:
    measured = await Evaluator(InProcessRunner(), suite, suite.held_out).measure(code)
    return all(score >= 1.0 for score in measured.measurement.case_scores)


async def ours(task: Task, config: EvolutionConfig) -> Outcome:
    suite = suite_of(task)
    controller = Controller(config, Evaluator(InProcessRunner(), suite, suite.training, parallelism=1))
    state = await controller.start(task.code)
    while stop_decision(state, config) is None:
        state, _ = await controller.step(state)
    return Outcome(await held_out_passes(state.best.code, suite), state.totals.evaluations,
                   state.best.correctness >= 1.0)


def vary(code: str, rng: random.Random, facts: synthesis.SuiteFacts, wrong_keys: Sequence[str]) -> str:
    child = code
    for _ in range(rng.randint(1, MAX_CHAIN)):
        step = rng.choice(BANDIT_OPERATORS)
        if step in synthesis.OPERATORS:
            changed = synthesis.mutate(child, step, rng, facts, wrong_keys)
        else:
            changed = transforms.mutate(child, step, rng, [code])
        child = changed or child
    return child


async def random_search(task: Task, budget: int, seed: int) -> Outcome:
    suite = suite_of(task)
    evaluator = Evaluator(InProcessRunner(), suite, suite.training, parallelism=1)
    facts = synthesis.facts_from_cases(suite.training)
    measured = (await evaluator.measure(task.code)).measurement
    rng = random.Random(seed)
    seen = {programs.ast_hash(task.code)}
    best_code, best_score = task.code, sum(measured.case_scores)
    evaluations, attempts = 1, 0
    while evaluations < budget and attempts < budget * 50 and best_score < len(suite.training):
        attempts += 1
        child = vary(task.code, rng, facts, measured.wrong_keys)
        identity = programs.ast_hash(child)
        if identity in seen:
            continue
        seen.add(identity)
        evaluations += 1
        score = sum((await evaluator.measure(child)).measurement.case_scores)
        if score > best_score:
            best_code, best_score = child, score
    return Outcome(await held_out_passes(best_code, suite), evaluations, best_score >= len(suite.training))


# -- DEAP GP --------------------------------------------------------------------------------------------
def gp_applies(task: Task) -> bool:
    """Numeric inputs and one numeric output key: what a standard arithmetic GP can express."""
    first = task.cases[0]
    numbers = all(type(value) in (int, float) for value in first["inputs"].values())
    outputs = first["expected"]
    return numbers and len(outputs) == 1 and all(type(value) in (int, float) for value in outputs.values())


def _div(a: float, b: float) -> float:
    return a / b if b != 0 else 1.0


def deap_gp(task: Task, budget: int, seed: int) -> Outcome:
    from deap import base, creator, gp, tools

    names = sorted(task.cases[0]["inputs"])
    key = next(iter(task.cases[0]["expected"]))
    training = [case for case in task.cases if not case["held_out"]]
    held_out = [case for case in task.cases if case["held_out"]]
    pset = gp.PrimitiveSet("MAIN", len(names))
    for function, arity in ((operator.add, 2), (operator.sub, 2), (operator.mul, 2), (_div, 2), (min, 2),
                            (max, 2), (abs, 1), (operator.neg, 1)):
        pset.addPrimitive(function, arity)
    constants = sorted({v for case in training for v in case["inputs"].values() if type(v) is int and abs(v) <= 10}
                       | {0, 1, 2, 10, 100})
    for constant in constants:
        pset.addTerminal(constant)
    pset.renameArguments(**{f"ARG{index}": name for index, name in enumerate(names)})
    if not hasattr(creator, "RepairFitness"):
        creator.create("RepairFitness", base.Fitness, weights=(1.0,))
        creator.create("RepairTree", gp.PrimitiveTree, fitness=creator.RepairFitness)
    toolbox = base.Toolbox()
    toolbox.register("expr", gp.genHalfAndHalf, pset=pset, min_=1, max_=3)
    toolbox.register("individual", tools.initIterate, creator.RepairTree, toolbox.expr)
    toolbox.register("select", tools.selTournament, tournsize=3)
    toolbox.register("mate", gp.cxOnePoint)
    toolbox.register("expr_mut", gp.genFull, min_=0, max_=2)
    toolbox.register("mutate", gp.mutUniform, expr=toolbox.expr_mut, pset=pset)
    limit = gp.staticLimit(key=operator.attrgetter("height"), max_value=8)
    toolbox.decorate("mate", limit)
    toolbox.decorate("mutate", limit)

    def passes(tree: Any, cases: Sequence[dict[str, Any]]) -> int:
        function = gp.compile(tree, pset)
        count = 0
        for case in cases:
            try:
                value = function(*(case["inputs"][name] for name in names))
                expected = case["expected"][key]
                count += int(math.isfinite(value) and abs(value - expected) <= 1e-6 * max(1.0, abs(expected)))
            except (OverflowError, ValueError, TypeError, ZeroDivisionError):
                pass
        return count

    random.seed(seed)
    size = 50
    population = [toolbox.individual() for _ in range(size)]
    evaluations = 0
    for individual in population:
        individual.fitness.values = (passes(individual, training),)
        evaluations += 1
    best = tools.selBest(population, 1)[0]
    while evaluations < budget and best.fitness.values[0] < len(training):
        offspring = [toolbox.clone(individual) for individual in toolbox.select(population, len(population))]
        for first, second in zip(offspring[::2], offspring[1::2], strict=False):
            if random.random() < 0.5:
                toolbox.mate(first, second)
                del first.fitness.values, second.fitness.values
        for individual in offspring:
            if random.random() < 0.2:
                toolbox.mutate(individual)
                del individual.fitness.values
        for individual in offspring:
            if not individual.fitness.valid and evaluations < budget:
                individual.fitness.values = (passes(individual, training),)
                evaluations += 1
            elif not individual.fitness.valid:
                individual.fitness.values = (0,)
        population = offspring
        best = max([best, *population], key=lambda individual: individual.fitness.values[0])
    perfect = best.fitness.values[0] >= len(training)
    return Outcome(passes(best, held_out) == len(held_out), evaluations, perfect)


def run_seed(seed: int, config: EvolutionConfig, budget: int) -> list[dict[str, Any]]:
    """Every task of one seed's benchmark, by the three methods (runs in a worker process)."""

    async def tasks() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for task in generate(seed, kinds_per_reference=1):
            mine = await ours(task, replace(config, seed=seed))
            rand = await random_search(task, budget, seed)
            gp_outcome = deap_gp(task, budget, seed) if gp_applies(task) else None
            rows.append({"seed": seed, "task": task.name, "kind": task.kind,
                         "ours": mine.repaired, "ours_evaluations": mine.evaluations,
                         "random": rand.repaired, "random_evaluations": rand.evaluations,
                         "gp": None if gp_outcome is None else gp_outcome.repaired})
        return rows

    return asyncio.run(tasks())


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=250, help="evaluations per task and method")
    report.add_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="seeds run at once, one process each")
    args = parser.parse_args()
    out = report.Report("repair", strict=args.strict)
    defaults = run_defaults(EvolutionSettings())
    # The search's settings for repair: mostly mutation (one buggy seed, nothing to recombine at first).
    config = replace(defaults, population_size=30, islands=2, generations=1000, mutation_rate=0.9,
                     crossover_rate=0.3, plateau_generations=0, speed_weight=0.0, size_weight=0.0,
                     operators=OperatorSet.PROGRAM_TRANSFORM, selection=Selection.LEXICASE, synthesis=True,
                     max_evaluations=args.budget, max_duration_seconds=3600.0)
    print(f"config: population {config.population_size}, islands {config.islands}, mutation {config.mutation_rate}, "
          f"crossover {config.crossover_rate}, selection {config.selection.value}, synthesis on; budget "
          f"{args.budget} evaluations per task; {args.seeds} seeds; candidates run in-process (bench shortcut)\n")
    rows: list[dict[str, Any]] = []
    print(f"{'seed':>4} {'tasks':>5} {'ours':>6} {'random':>7} {'gp tasks':>8} {'ours@gp':>8} {'deap gp':>8}")
    # One process per seed, two at a time: seeds are independent and the bench must stay short.
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_seed, seed, config, args.budget) for seed in range(args.seeds)]
        for seed, future in enumerate(futures):
            mine_rows = future.result()
            rows.extend(mine_rows)
            gp_rows = [row for row in mine_rows if row["gp"] is not None]
            print(f"{seed:>4} {len(mine_rows):>5} {statistics.fmean(r['ours'] for r in mine_rows):>6.0%} "
                  f"{statistics.fmean(r['random'] for r in mine_rows):>7.0%} {len(gp_rows):>8} "
                  f"{statistics.fmean(r['ours'] for r in gp_rows) if gp_rows else 0:>8.0%} "
                  f"{statistics.fmean(r['gp'] for r in gp_rows) if gp_rows else 0:>8.0%}")
    ours_rate = statistics.fmean(row["ours"] for row in rows)
    random_rate = statistics.fmean(row["random"] for row in rows)
    gp_rows = [row for row in rows if row["gp"] is not None]
    ours_gp = statistics.fmean(row["ours"] for row in gp_rows) if gp_rows else 0.0
    gp_rate = statistics.fmean(row["gp"] for row in gp_rows) if gp_rows else 0.0
    print(f"\nrepaired on held-out cases, {len(rows)} tasks over {args.seeds} seeds:")
    print(f"  ours {ours_rate:.1%}   random search {random_rate:.1%}   ours/random "
          f"{ours_rate / max(random_rate, 1e-9):.2f}")
    gp_ratio = f"{ours_gp / gp_rate:.2f}" if gp_rate else "inf (GP repaired none)"
    print(f"  where GP applies ({len(gp_rows)} tasks): ours {ours_gp:.1%}   DEAP GP {gp_rate:.1%}   ours/GP {gp_ratio}")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    print("  by bug kind (ours / random): " + ", ".join(
        f"{kind} {statistics.fmean(r['ours'] for r in items):.0%}/{statistics.fmean(r['random'] for r in items):.0%}"
        f" (n={len(items)})" for kind, items in sorted(by_kind.items())))
    out.check("ours repaired on held-out cases", ours_rate, ">=", TARGET, "")
    out.check("ours / random search repaired", ours_rate / max(random_rate, 1e-9), ">", 1.0)
    if gp_rows:
        out.check("ours / DEAP GP repaired where GP applies", ours_gp / gp_rate if gp_rate else float("inf"), ">",
                  1.0)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "repair.json").write_text(json.dumps({"budget": args.budget, "seeds": args.seeds, "ours": ours_rate,
                                                     "random": random_rate, "ours_where_gp": ours_gp, "gp": gp_rate,
                                                     "rows": rows}, indent=1))
    return out.finish()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
