"""The promotion decision (pure): does the best candidate beat the original on the held-out cases by the
margin, and the labels a promoted version carries."""

from __future__ import annotations

from dataclasses import dataclass

from evolution_svc.domain import Candidate, GenerationReport

LABEL_CHARS = 256


@dataclass(frozen=True)
class Evidence:
    """What the decision rests on."""

    baseline: float
    best: float
    margin: float
    best_is_seed: bool
    enabled: bool
    held_out_cases: int


@dataclass(frozen=True)
class Decision:
    """Whether to register the best candidate, and why (or why not)."""

    promote: bool
    reason: str


def decide(evidence: Evidence) -> Decision:
    """Promote when the best beats the original by at least the margin on the held-out cases.

    Without held-out cases the training cases decide, and the reason says so.
    """
    where = (
        f"on {evidence.held_out_cases} held-out cases"
        if evidence.held_out_cases
        else "on the training cases (the suite has no held-out cases)"
    )
    scores = f"{evidence.best:.4f} vs {evidence.baseline:.4f}, margin {evidence.margin:g}"
    if evidence.best_is_seed:
        return Decision(False, "no candidate beat the original program: the best candidate is the original")
    gain = evidence.best - evidence.baseline
    if gain < evidence.margin or gain <= 0:
        return Decision(False, f"the best candidate does not beat the original by the margin {where}: {scores}")
    if not evidence.enabled:
        return Decision(
            False, f"promotion is disabled for this run; the best candidate beats the original {where}: {scores}"
        )
    return Decision(True, f"the best candidate beats the original {where}: {scores}")


def _clip(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def labels(
    run_id: str,
    best: Candidate,
    seed: Candidate,
    last: GenerationReport | None,
    evidence: Evidence,
    stop_message: str,
) -> dict[str, str]:
    """Labels of a promoted version: the run id and a summary of the run's report."""
    summary = (
        f"generation {last.generation}: best {last.best_fitness:.4f}, "
        f"{last.improvement_over_seed:+.1%} over the seed, {last.total_evaluations} evaluations; {stop_message}"
        if last is not None
        else stop_message
    )
    return {
        "origin": "evolution",
        "evolution_run_id": run_id,
        "evolution_fitness": f"{best.fitness:.6f}",
        "evolution_seed_fitness": f"{seed.fitness:.6f}",
        "evolution_held_out": f"{evidence.best:.6f} vs {evidence.baseline:.6f}",
        "evolution_operator": _clip(best.operator),
        "evolution_report": _clip(summary),
    }
