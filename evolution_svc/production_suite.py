"""The evaluation suite of an automatic run, made from the cases the registry captured in production (pure).

- A labelled case (any version) is scored against its expected output: what the fix must get right.
- A succeeding case of the current version is a behaviour-preservation case: its recorded output is expected,
  so a fix may not break what works.
- An unlabelled failure of the current version only has to stop failing: it must return a JSON object (valid
  against the agent's output schema when the registry knows one).

Cases to fix and cases to preserve are each split into training and held-out cases (at least one of each is
held out once it has two), so the promotion gate sees both; with a single case to fix nothing is held out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from evolution_svc.domain import (
    MAX_CASES,
    CaseCheck,
    EvaluationCase,
    EvaluationSuite,
    JsonObject,
    ScoringMode,
)

LABELLED = "labelled"
PRESERVE = "preserve"
NO_ERROR = "no_error"
# Preservation cases beyond this multiple of the cases to fix add run time without adding much protection.
PRESERVATION_RATIO = 3
MIN_PRESERVATION = 5


@dataclass(frozen=True)
class ProductionCase:
    """One captured case as the registry lists it."""

    case_id: str
    version: str
    success: bool
    inputs: JsonObject
    output: JsonObject | None = None
    expected: JsonObject | None = None
    labelled: bool = False
    error: str = ""
    label_time: datetime | None = None


class NothingToLearn(Exception):
    """The captured cases hold nothing the current version gets wrong."""


def _inputs_key(inputs: JsonObject) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)


def _rank(case_id: str) -> str:
    return hashlib.sha256(case_id.encode()).hexdigest()


def wrong_labelled(cases: Sequence[ProductionCase], version: str) -> list[ProductionCase]:
    """Labelled cases of ``version`` whose execution failed or returned something other than expected."""
    return [case for case in cases
            if case.labelled and case.version == version and (not case.success or case.output != case.expected)]


def production_suite(
    cases: Sequence[ProductionCase],
    current_version: str,
    *,
    held_out_fraction: float,
    output_schema: JsonObject | None = None,
) -> EvaluationSuite:
    """The suite of an automatic run for ``current_version``.

    Raises:
        NothingToLearn: no labelled case and no failure of the current version.
    """
    chosen: dict[str, tuple[str, ProductionCase]] = {}
    priority = {LABELLED: 0, PRESERVE: 1, NO_ERROR: 2}
    for case in sorted(cases, key=lambda case: case.case_id):
        if case.labelled and case.expected is not None:
            kind = LABELLED
        elif case.version != current_version:
            continue  # another version's behaviour is neither to preserve nor to fix
        elif case.success and case.output is not None:
            kind = PRESERVE
        elif not case.success:
            kind = NO_ERROR
        else:
            continue
        key = _inputs_key(case.inputs)
        if key not in chosen or priority[kind] < priority[chosen[key][0]]:
            chosen[key] = (kind, case)
    by_kind: dict[str, list[ProductionCase]] = {LABELLED: [], PRESERVE: [], NO_ERROR: []}
    for kind, case in chosen.values():
        by_kind[kind].append(case)
    to_fix = len(by_kind[LABELLED]) + len(by_kind[NO_ERROR])
    if not to_fix:
        raise NothingToLearn(f"no labelled case and no failure of version {current_version} among "
                             f"{len(cases)} captured cases")
    room = MAX_CASES - to_fix
    keep = min(room, max(MIN_PRESERVATION, PRESERVATION_RATIO * to_fix))
    by_kind[PRESERVE] = sorted(by_kind[PRESERVE], key=lambda case: _rank(case.case_id))[:keep]
    # Cases to fix and cases to preserve are split apart, so the gate sees both. With a single case to fix there
    # is nothing to hold out of it: then no case is held out and the training cases decide (the canary's numbers
    # in production are the real check).
    groups = [[(LABELLED, case) for case in by_kind[LABELLED]] + [(NO_ERROR, case) for case in by_kind[NO_ERROR]],
              [(PRESERVE, case) for case in by_kind[PRESERVE]]]
    split = to_fix >= 2 and held_out_fraction > 0
    built: list[EvaluationCase] = []
    for group in groups:
        ordered = sorted(group, key=lambda item: _rank(item[1].case_id))
        held = 0
        if split and len(ordered) >= 2:
            held = min(len(ordered) - 1, max(1, round(len(ordered) * held_out_fraction)))
        for index, (kind, case) in enumerate(ordered):
            built.append(_case(kind, case, held_out=index < held, output_schema=output_schema))
    return EvaluationSuite(cases=tuple(built), scoring_mode=ScoringMode.JSON_SUBSET)


def _case(kind: str, case: ProductionCase, *, held_out: bool, output_schema: JsonObject | None) -> EvaluationCase:
    name = f"{kind}:{case.case_id}"
    if kind == LABELLED:
        return EvaluationCase(name=name, inputs=case.inputs, expected=case.expected, held_out=held_out)
    if kind == PRESERVE:
        return EvaluationCase(name=name, inputs=case.inputs, expected=case.output, held_out=held_out)
    return EvaluationCase(name=name, inputs=case.inputs, expected=None, held_out=held_out,
                          check=CaseCheck.NO_ERROR, output_schema=output_schema)


def describe(suite: EvaluationSuite) -> str:
    """How many cases of each kind, for the run's start reason."""
    counts = {LABELLED: 0, PRESERVE: 0, NO_ERROR: 0}
    held = 0
    for case in suite.cases:
        counts[case.name.split(":", 1)[0]] += 1
        held += case.held_out
    return (f"{counts[LABELLED]} labelled, {counts[PRESERVE]} to preserve, {counts[NO_ERROR]} must not fail; "
            f"{held} held out")

