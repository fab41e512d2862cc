"""When a run stops: generations, budgets (evaluations, LLM cost, wall time), plateau, perfection."""

from __future__ import annotations

from dataclasses import dataclass

from evolution_svc.domain import EvolutionConfig, StopReason
from evolution_svc.population import EngineState


@dataclass(frozen=True)
class Stop:
    """Why a run stops, with a sentence for people."""

    reason: StopReason
    message: str


def stop_decision(state: EngineState, config: EvolutionConfig) -> Stop | None:
    """The reason to stop after the state's generation, or None to continue.

    A run is perfect only when nothing can improve any more: every training case passes and speed and
    size carry no weight (with weight, a correct program can still become faster or smaller).
    """
    if state.best.correctness >= 1.0 and config.speed_weight == 0 and config.size_weight == 0:
        return Stop(StopReason.PERFECT, f"a candidate passed every training case in generation {state.generation}")
    if state.generation >= config.generations:
        return Stop(StopReason.GENERATIONS, f"{state.generation} generations finished")
    if state.totals.evaluations >= config.max_evaluations:
        return Stop(
            StopReason.EVALUATION_BUDGET,
            f"evaluation budget used up: {state.totals.evaluations} of {config.max_evaluations}",
        )
    if state.totals.cost_usd >= config.max_cost_usd and config.uses_llm:
        return Stop(
            StopReason.COST_BUDGET,
            f"LLM cost budget used up: ${state.totals.cost_usd:.4f} of ${config.max_cost_usd:.4f}",
        )
    if state.totals.elapsed_seconds >= config.max_duration_seconds:
        return Stop(
            StopReason.TIME_BUDGET,
            f"wall-time budget used up: {state.totals.elapsed_seconds:.1f} s of {config.max_duration_seconds:g} s",
        )
    if config.plateau_generations > 0 and state.stagnant >= config.plateau_generations:
        return Stop(StopReason.PLATEAU, f"no improvement for {state.stagnant} generations")
    return None
