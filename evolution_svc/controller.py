"""The controller: one generation at a time, sampler -> operators -> duplicate check -> evaluator -> database.

It holds no state between calls: ``start`` measures the seed program and returns generation 0, ``step``
takes an ``EngineState`` and returns the next one with its report, so a checkpoint is just the state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from evolution_svc import llm_operators, programs, synthesis, transforms
from evolution_svc.domain import Candidate, EvaluationCase, EvolutionConfig, GenerationReport
from evolution_svc.evaluator import Evaluator, limits_after_seed
from evolution_svc.fitness import FitnessBasis, make_candidate
from evolution_svc.islands import island_sizes
from evolution_svc.population import EngineState, GenerationWork, Totals, advance, initial_state, next_island
from evolution_svc.ports import ModelClient
from evolution_svc.sampler import BANDIT_OPERATORS, LLM_CROSSOVER, LLM_DIFF, ChildPlan, plan_child
from evolution_svc.selection import elites

SEED_OPERATOR = "seed"


@dataclass(frozen=True)
class EngineSettings:
    """Engine knobs that are service settings rather than per-run configuration."""

    archive_rate: float = 0.1
    attempts_per_child: int = 20
    llm_parallelism: int = 4


@dataclass(frozen=True)
class _Child:
    plan: ChildPlan
    code: str | None
    cost_usd: float


class Controller:
    """Drives one run's search; every random choice comes from the state's seeded generator."""

    def __init__(
        self,
        config: EvolutionConfig,
        evaluator: Evaluator,
        *,
        model: ModelClient | None = None,
        settings: EngineSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.uses_llm and model is None:
            raise ValueError("LLM operators need a model client")
        self._config = config
        self._evaluator = evaluator
        self._model = model
        self._settings = settings or EngineSettings()
        self._clock = clock
        self._llm_slots = asyncio.Semaphore(self._settings.llm_parallelism)
        self._facts = synthesis.facts_from_cases(evaluator.cases)

    @property
    def cases(self) -> tuple[EvaluationCase, ...]:
        """The training cases."""
        return self._evaluator.cases

    async def start(self, seed_code: str) -> EngineState:
        """Measures the seed program: generation 0.

        Raises:
            programs.InvalidProgram: when the seed program does not load.
        """
        started = self._clock()
        program = programs.load(seed_code)
        measured = await self._evaluator.measure(seed_code)
        basis = FitnessBasis(
            weights=tuple(case.weight for case in self.cases),
            reference_size=program.size,
            reference_duration_ms=measured.measurement.mean_duration_ms,
            speed_weight=self._config.speed_weight,
            size_weight=self._config.size_weight,
        )
        seed = make_candidate(
            code=seed_code,
            code_hash=program.code_hash,
            ast_hash=program.ast_hash,
            size=program.size,
            measurement=measured.measurement,
            basis=basis,
            generation=0,
            operator=SEED_OPERATOR,
            parent_hashes=(),
        )
        totals = Totals(
            evaluations=1, cache_hits=int(measured.cache_hit), elapsed_seconds=self._clock() - started
        )
        limits = limits_after_seed(measured.measurement, len(self.cases), self._evaluator.limits)
        return initial_state(seed, self._config, basis, totals, limits)

    async def step(self, state: EngineState) -> tuple[EngineState, GenerationReport]:
        """Makes, evaluates and selects the next generation."""
        config = self._config
        started = self._clock()
        deadline = started + max(0.0, config.max_duration_seconds - state.totals.elapsed_seconds)
        rng = random.Random()
        rng.setstate(state.rng_state)
        generation = state.generation + 1
        sizes = island_sizes(config.population_size, len(state.islands))
        kept = [elites(island, min(config.elitism, size)) for island, size in zip(state.islands, sizes, strict=True)]
        children: list[list[Candidate]] = [[] for _ in state.islands]
        known = set(state.seen)
        evaluation_room = max(0, config.max_evaluations - state.totals.evaluations)
        attempts = self._settings.attempts_per_child * sum(
            size - len(keep) for size, keep in zip(sizes, kept, strict=True)
        )
        evaluations = cache_hits = duplicates = 0
        cost = 0.0
        outcomes: list[tuple[str, bool]] = []

        def open_slots(index: int) -> int:
            return sizes[index] - len(kept[index]) - len(children[index])

        while attempts > 0 and evaluations < evaluation_room and self._clock() < deadline:
            plans: list[ChildPlan] = []
            for index, island in enumerate(state.islands):
                for _ in range(open_slots(index)):
                    if attempts <= 0 or len(plans) >= evaluation_room - evaluations:
                        break
                    attempts -= 1
                    llm_allowed = state.totals.cost_usd + cost < config.max_cost_usd
                    plan = plan_child(
                        index,
                        island,
                        state.archive,
                        config,
                        rng,
                        archive_rate=self._settings.archive_rate,
                        llm_allowed=llm_allowed,
                        operator_stats=state.operator_stats,
                        seed=state.seed,
                    )
                    if plan is not None:
                        plans.append(plan)
            if not plans:
                if all(open_slots(index) <= 0 for index in range(len(state.islands))):
                    break
                continue
            made = await asyncio.gather(*(self._vary(plan) for plan in plans))
            cost += sum(child.cost_usd for child in made)
            batch: list[tuple[ChildPlan, str, str]] = []
            for child in made:
                if child.code is None:
                    continue
                identity = _ast_identity(child.code)
                if identity in known:
                    duplicates += 1
                    continue
                known.add(identity)
                batch.append((child.plan, child.code, identity))
            for plan, candidate, hit in await self._evaluate(batch, generation, state, deadline):
                children[plan.island].append(candidate)
                mutation = next((step for step in reversed(plan.steps) if step in BANDIT_OPERATORS), None)
                if mutation is not None:
                    outcomes.append((mutation, candidate.fitness > plan.parents[0].fitness + 1e-12))
                evaluations += 1
                cache_hits += int(hit)
            if all(open_slots(index) <= 0 for index in range(len(state.islands))):
                break
        islands = tuple(
            next_island(previous, keep, made_here, size, config.tournament_size, rng)
            for previous, keep, made_here, size in zip(state.islands, kept, children, sizes, strict=True)
        )
        work = GenerationWork(
            islands=islands,
            children=tuple(child for island_children in children for child in island_children),
            evaluations=evaluations,
            cache_hits=cache_hits,
            duplicates_skipped=duplicates,
            cost_usd=cost,
            duration_seconds=self._clock() - started,
            outcomes=tuple(outcomes),
        )
        return advance(state, work, config, rng)

    async def _vary(self, plan: ChildPlan) -> _Child:
        """Applies a plan's steps in order; a step that changes nothing leaves the code as it was."""
        rng = random.Random(plan.seed)
        parent = plan.parents[0]
        code = parent.code
        cost = 0.0
        for step in plan.steps:
            changed: str | None
            if step == transforms.CROSSOVER_SUBTREE:
                changed = transforms.crossover(code, plan.parents[1].code, rng)
            elif step in transforms.MUTATIONS:
                changed = transforms.mutate(code, step, rng, plan.donors)
            elif step in synthesis.OPERATORS:
                # The wrong keys are the parent's: an earlier step of this plan may have changed them.
                changed = synthesis.mutate(code, step, rng, self._facts, parent.wrong_keys)
            else:
                variation = await self._ask_model(step, plan, code, rng.getrandbits(31))
                cost += variation.cost_usd
                changed = variation.code
            if changed is not None:
                code = changed
        return _Child(plan, None if code == parent.code else code, cost)

    async def _ask_model(self, step: str, plan: ChildPlan, code: str, seed: int) -> llm_operators.Variation:
        assert self._model is not None
        parent = plan.parents[0]
        current = parent if code == parent.code else replace(parent, code=code)
        async with self._llm_slots:
            if step == LLM_CROSSOVER:
                return await llm_operators.crossover(self._model, current, plan.parents[1], seed=seed)
            if step == LLM_DIFF:
                return await llm_operators.diff_edit(self._model, current, self.cases, seed=seed)
        raise ValueError(f"unknown operator {step}")

    async def _evaluate(
        self,
        batch: Sequence[tuple[ChildPlan, str, str]],
        generation: int,
        state: EngineState,
        deadline: float,
    ) -> list[tuple[ChildPlan, Candidate, bool]]:
        """Measures children concurrently; those not finished by the deadline are dropped (a measurement still
        running then is cancelled, which kills its sandboxed process), so a budget is never overrun by more than
        the time it takes to cancel."""

        async def one(plan: ChildPlan, code: str, identity: str) -> tuple[ChildPlan, Candidate, bool] | None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            try:
                measured = await asyncio.wait_for(self._evaluator.measure(code, state.limits), remaining)
            except TimeoutError:
                return None
            size = _size(code)
            candidate = make_candidate(
                code=code,
                code_hash=programs.code_hash(code),
                ast_hash=identity,
                size=size,
                measurement=measured.measurement,
                basis=state.basis,
                generation=generation,
                operator=plan.operator,
                parent_hashes=tuple(parent.code_hash for parent in plan.parents),
            )
            return plan, candidate, measured.cache_hit

        results: list[tuple[ChildPlan, Candidate, bool]] = []
        width = self._evaluator.parallelism
        for start in range(0, len(batch), width):
            if self._clock() >= deadline:
                break
            chunk = await asyncio.gather(*(one(*item) for item in batch[start : start + width]))
            results.extend(result for result in chunk if result is not None)
        return results


def _ast_identity(code: str) -> str:
    """The duplicate-check identity: the normalised-AST hash, or the code hash for unparsable code."""
    try:
        return programs.ast_hash(code)
    except programs.InvalidProgram:
        return programs.code_hash(code)


def _size(code: str) -> int:
    try:
        return programs.load(code).size
    except programs.InvalidProgram:
        try:
            return programs.size(programs.parse(code))
        except programs.InvalidProgram:
            return 0
