"""The evaluator: runs a program on a suite's cases in the sandbox (batched) and scores the outputs here.

The candidate receives only each case's inputs. Expected outputs, the scorer and the cache stay in this
process; scoring reads nothing but the JSON the sandbox returned, so a candidate cannot raise its own
score by printing, patching or reading anything. A scorer agent (scorer mode) runs in the sandbox too,
on ``{"output", "expected"}``, and its ``{"score"}`` is clamped to [0, 1].
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import jsonschema

from evolution_svc import programs
from evolution_svc.domain import (
    CaseCheck,
    CaseFailure,
    EvaluationCase,
    EvaluationLimits,
    EvaluationSuite,
    JsonValue,
    Measurement,
    ScoringMode,
)
from evolution_svc.ports import CandidateRunner, CaseRun, MeasurementCache
from evolution_svc.scoring import closeness, score_output, scorer_score

MAX_FAILURES_KEPT = 5
DETAIL_CHARS = 300
MIN_CASE_TIMEOUT_SECONDS = 0.25
# A candidate may be this many times slower than the seed program before it times out.
SLOWDOWN_ALLOWED = 20


def limits_after_seed(seed: Measurement, cases: int, cap: EvaluationLimits) -> EvaluationLimits:
    """Time limits for a run's candidates, from how long the seed program took (never above ``cap``).

    A mutation that loops forever then costs a fraction of a second instead of the operator's case
    timeout on every case.
    """
    longest = max(3 * seed.max_duration_ms, SLOWDOWN_ALLOWED * seed.mean_duration_ms) / 1000
    case = min(cap.case_timeout_seconds, max(MIN_CASE_TIMEOUT_SECONDS, longest))
    per_case = max(SLOWDOWN_ALLOWED * seed.mean_duration_ms / 1000, 0.002)
    batch = min(cap.batch_timeout_seconds, 2 * case + cases * per_case + 1.0)
    return EvaluationLimits(case_timeout_seconds=round(case, 3), batch_timeout_seconds=round(batch, 3))


def _short(value: JsonValue) -> str:
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _wrong_keys(output: JsonValue, expected: dict[str, JsonValue]) -> list[str]:
    """Expected keys whose value differs (every key when the output is not an object or the case raised)."""
    if not isinstance(output, dict):
        return list(expected)
    return [key for key, value in expected.items() if key not in output or output[key] != value]


def no_error_score(run: CaseRun, case: EvaluationCase) -> float:
    """1 when the program returned a JSON object (valid against the case's output schema, if it has one)."""
    if not run.ok or not isinstance(run.output, dict):
        return 0.0
    if case.output_schema:
        try:
            jsonschema.validate(run.output, case.output_schema)
        except (jsonschema.ValidationError, jsonschema.SchemaError):
            return 0.0
    return 1.0


def suite_digest(suite: EvaluationSuite, cases: Sequence[EvaluationCase], scorer_code: str) -> str:
    """Identity of "these cases scored this way": part of every cache key."""
    body = {
        "mode": suite.scoring_mode.value,
        "tolerance": suite.tolerance,
        "scorer": programs.code_hash(scorer_code) if scorer_code else "",
        "cases": [[case.inputs, case.expected, case.weight]
                  + ([case.check.value, case.output_schema] if case.check is not CaseCheck.EXPECTED else [])
                  for case in cases],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Measured:
    """A measurement and whether the cache answered it."""

    measurement: Measurement
    cache_hit: bool


class Evaluator:
    """Measures programs on one fixed list of cases."""

    def __init__(
        self,
        runner: CandidateRunner,
        suite: EvaluationSuite,
        cases: Sequence[EvaluationCase],
        *,
        cache: MeasurementCache | None = None,
        scorer_code: str = "",
        parallelism: int = 8,
        limits: EvaluationLimits | None = None,
    ) -> None:
        if suite.scoring_mode is ScoringMode.SCORER_AGENT and not scorer_code:
            raise ValueError("scorer mode needs the scorer agent's code")
        self._runner = runner
        self._suite = suite
        self._cases = tuple(cases)
        self._cache = cache
        self._scorer_code = scorer_code
        self._digest = suite_digest(suite, self._cases, scorer_code)
        self._limits = limits or EvaluationLimits()
        self._parallelism = max(1, parallelism)
        self._slots = asyncio.Semaphore(self._parallelism)

    @property
    def parallelism(self) -> int:
        """How many programs are measured at once."""
        return self._parallelism

    @property
    def cases(self) -> tuple[EvaluationCase, ...]:
        """The cases measured on."""
        return self._cases

    def cache_key(self, code_hash: str) -> str:
        """Key of a program's measurement on these cases."""
        return f"{self._digest}:{code_hash}"

    @property
    def limits(self) -> EvaluationLimits:
        """The limits used when a call gives none (the operator's caps)."""
        return self._limits

    async def measure(self, code: str, limits: EvaluationLimits | None = None) -> Measured:
        """Measures one program; invalid programs score 0 with the reason and never reach the sandbox."""
        try:
            programs.load(code)
        except programs.InvalidProgram as error:
            return Measured(self._failed(str(error)), cache_hit=False)
        key = self.cache_key(programs.code_hash(code))
        if self._cache is not None:
            cached = await self._cache.get(key)
            if cached is not None and len(cached.case_scores) == len(self._cases):
                return Measured(cached, cache_hit=True)
        async with self._slots:
            runs = await self._runner.run_cases(code, [case.inputs for case in self._cases], limits or self._limits)
            measurement = await self._score(runs)
        if self._cache is not None:
            await self._cache.put(key, measurement)
        return Measured(measurement, cache_hit=False)

    def _failed(self, reason: str) -> Measurement:
        return Measurement(case_scores=tuple(0.0 for _ in self._cases), mean_duration_ms=0.0, failure=reason)

    async def _score(self, runs: Sequence[CaseRun]) -> Measurement:
        if len(runs) != len(self._cases):
            return self._failed(f"the sandbox answered {len(runs)} of {len(self._cases)} cases")
        if self._suite.scoring_mode is ScoringMode.SCORER_AGENT:
            scores = await self._scorer_scores(runs)
        else:
            scores = [
                score_output(self._suite.scoring_mode, run.output, case.expected, self._suite.tolerance)
                if run.ok and case.check is CaseCheck.EXPECTED
                else 0.0
                for run, case in zip(runs, self._cases, strict=True)
            ]
        scores = [
            no_error_score(run, case) if case.check is CaseCheck.NO_ERROR else score
            for run, case, score in zip(runs, self._cases, scores, strict=True)
        ]
        near: tuple[float, ...] = ()
        if self._suite.scoring_mode is not ScoringMode.SCORER_AGENT:
            near = tuple(
                (score if case.check is CaseCheck.NO_ERROR else closeness(score, run.output, case.expected))
                if run.ok
                else 0.0
                for run, case, score in zip(runs, self._cases, scores, strict=True)
            )
        failures: list[CaseFailure] = []
        wrong: dict[str, None] = {}
        for index, (run, case, score) in enumerate(zip(runs, self._cases, scores, strict=True)):
            if score < 1.0 and isinstance(case.expected, dict):
                wrong.update(dict.fromkeys(_wrong_keys(run.output if run.ok else None, case.expected)))
            if score >= 1.0 or len(failures) >= MAX_FAILURES_KEPT:
                continue
            label = case.name or f"cases[{index}]"
            if run.ok and case.check is CaseCheck.NO_ERROR:
                detail = f"{label}: returned {_short(run.output)}, which is not a JSON object valid against the schema"
            elif run.ok:
                detail = f"{label}: returned {_short(run.output)}, expected {_short(case.expected)}"
            else:
                detail = f"{label}: {run.error}"
            failures.append(CaseFailure(index, detail))
        # The sandbox's first duration of a process includes loading the class: leave it out when others exist.
        durations = [run.duration_ms for run in runs if run.ok]
        longest = max(durations, default=0.0)
        if len(durations) > 1 and runs[0].ok:
            durations = durations[1:]
        failure = ""
        if not durations:
            failure = f"every case failed; first: {runs[0].error}" if runs else "no cases"
        return Measurement(
            case_scores=tuple(float(score) for score in scores),
            mean_duration_ms=sum(durations) / len(durations) if durations else 0.0,
            failure=failure,
            failures=tuple(failures),
            max_duration_ms=longest,
            wrong_keys=tuple(sorted(wrong)),
            case_closeness=near,
        )

    async def _scorer_scores(self, runs: Sequence[CaseRun]) -> list[float]:
        scored = [index for index, run in enumerate(runs) if run.ok and self._cases[index].check is CaseCheck.EXPECTED]
        scores = [0.0 for _ in runs]
        if not scored:
            return scores
        requests = [{"output": runs[i].output, "expected": self._cases[i].expected} for i in scored]
        answers = await self._runner.run_cases(self._scorer_code, requests, self._limits)
        for index, answer in zip(scored, answers, strict=False):
            scores[index] = scorer_score(answer.output) if answer.ok else 0.0
        return scores
