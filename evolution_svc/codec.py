"""JSON forms of the domain values the repository stores, and the compressed checkpoint of an engine state."""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from evolution_svc.archive import Archive
from evolution_svc.domain import (
    Candidate,
    CaseCheck,
    CaseFailure,
    ConfigOverrides,
    EvaluationCase,
    EvaluationLimits,
    EvaluationSuite,
    EvolutionConfig,
    GenerationReport,
    JsonObject,
    Measurement,
    OperatorSet,
    OperatorStat,
    Promotion,
    ScoringMode,
    Selection,
)
from evolution_svc.fitness import FitnessBasis
from evolution_svc.policies import EvolutionPolicy, Phase, PolicyBudget, PolicyStatus, PolicyTrigger
from evolution_svc.population import EngineState, Totals

CHECKPOINT_VERSION = 1


def suite_to_json(suite: EvaluationSuite) -> JsonObject:
    """The suite as JSON."""
    data = asdict(suite)
    data["scoring_mode"] = suite.scoring_mode.value
    for case in data["cases"]:
        case["check"] = case["check"].value
    return data


def _case_from_json(data: JsonObject) -> EvaluationCase:
    # Suites stored before case checks existed have neither check nor output_schema.
    return EvaluationCase(**{**data, "check": CaseCheck(data.get("check", CaseCheck.EXPECTED.value))})


def suite_from_json(data: JsonObject) -> EvaluationSuite:
    """The suite from :func:`suite_to_json`."""
    return EvaluationSuite(
        cases=tuple(_case_from_json(case) for case in data["cases"]),
        scoring_mode=ScoringMode(data["scoring_mode"]),
        tolerance=data["tolerance"],
        scorer_agent_id=data["scorer_agent_id"],
        scorer_agent_version=data["scorer_agent_version"],
        held_out_fraction=data["held_out_fraction"],
    )


def config_to_json(config: EvolutionConfig) -> JsonObject:
    """The configuration as JSON."""
    data = asdict(config)
    data["operators"] = config.operators.value
    data["selection"] = config.selection.value
    return data


def config_from_json(data: JsonObject) -> EvolutionConfig:
    """The configuration from :func:`config_to_json`."""
    selection = Selection(data.get("selection", Selection.TOURNAMENT.value))
    return EvolutionConfig(**{**data, "operators": OperatorSet(data["operators"]), "selection": selection})


def candidate_to_json(candidate: Candidate, *, include_code: bool = True) -> JsonObject:
    """A candidate as JSON (optionally without its source)."""
    data = asdict(candidate)
    if not include_code:
        data["code"] = ""
    return data


def candidate_from_json(data: JsonObject) -> Candidate:
    """A candidate from :func:`candidate_to_json`."""
    return Candidate(
        **{
            **data,
            "parent_hashes": tuple(data["parent_hashes"]),
            "failures": tuple(CaseFailure(**failure) for failure in data["failures"]),
            "case_scores": tuple(float(score) for score in data.get("case_scores", ())),
            "wrong_keys": tuple(data.get("wrong_keys", ())),
            "case_closeness": tuple(float(value) for value in data.get("case_closeness", ())),
        }
    )


def report_to_json(report: GenerationReport) -> JsonObject:
    """A generation report as JSON."""
    return asdict(report)


def report_from_json(data: JsonObject) -> GenerationReport:
    """A generation report from :func:`report_to_json`."""
    stats = tuple(OperatorStat(**stat) for stat in data.get("operator_stats", ()))
    return GenerationReport(**{**data, "operator_stats": stats})


def promotion_to_json(promotion: Promotion) -> JsonObject:
    """A promotion decision as JSON."""
    return asdict(promotion)


def promotion_from_json(data: JsonObject) -> Promotion:
    """A promotion decision from :func:`promotion_to_json`."""
    return Promotion(**data)


def measurement_to_json(measurement: Measurement) -> JsonObject:
    """A measurement as JSON (the fitness cache's value)."""
    return asdict(measurement)


def measurement_from_json(data: JsonObject) -> Measurement:
    """A measurement from :func:`measurement_to_json`."""
    return Measurement(
        case_scores=tuple(float(score) for score in data["case_scores"]),
        mean_duration_ms=float(data["mean_duration_ms"]),
        failure=str(data["failure"]),
        failures=tuple(CaseFailure(**failure) for failure in data["failures"]),
        max_duration_ms=float(data.get("max_duration_ms", 0.0)),
        wrong_keys=tuple(data.get("wrong_keys", ())),
        case_closeness=tuple(float(value) for value in data.get("case_closeness", ())),
    )


def encode_state(state: EngineState) -> bytes:
    """The checkpoint of a state: compressed JSON, candidates stored once and referenced by code hash."""
    pool: dict[str, Any] = {}

    def ref(candidate: Candidate) -> str:
        pool.setdefault(candidate.code_hash, candidate_to_json(candidate))
        return candidate.code_hash

    body = {
        "version": CHECKPOINT_VERSION,
        "generation": state.generation,
        "islands": [[ref(candidate) for candidate in island] for island in state.islands],
        "archive": [[list(cell), ref(candidate)] for cell, candidate in state.archive.cells],
        "seen": sorted(state.seen),
        "seed": ref(state.seed),
        "best": ref(state.best),
        "history": list(state.history),
        "stagnant": state.stagnant,
        "totals": asdict(state.totals),
        "rng_state": [state.rng_state[0], list(state.rng_state[1]), state.rng_state[2]],
        "basis": {**asdict(state.basis), "weights": list(state.basis.weights)},
        "limits": asdict(state.limits),
        "candidates": pool,
        "operator_stats": [asdict(stat) for stat in state.operator_stats],
    }
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def decode_state(blob: bytes) -> EngineState:
    """The state of a checkpoint.

    Raises:
        ValueError: for a checkpoint of another format version or a corrupt one.
    """
    body = json.loads(zlib.decompress(blob))
    if body.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {body.get('version')} is not {CHECKPOINT_VERSION}")
    pool = {key: candidate_from_json(value) for key, value in body["candidates"].items()}
    version, internal, gauss = body["rng_state"]
    basis = body["basis"]
    return EngineState(
        generation=body["generation"],
        islands=tuple(tuple(pool[key] for key in island) for island in body["islands"]),
        archive=Archive(tuple((tuple(cell), pool[key]) for cell, key in body["archive"])),
        seen=frozenset(body["seen"]),
        seed=pool[body["seed"]],
        best=pool[body["best"]],
        history=tuple(body["history"]),
        stagnant=body["stagnant"],
        totals=Totals(**body["totals"]),
        rng_state=(version, tuple(internal), gauss),
        basis=FitnessBasis(**{**basis, "weights": tuple(basis["weights"])}),
        limits=EvaluationLimits(**body["limits"]),
        operator_stats=tuple(OperatorStat(**stat) for stat in body.get("operator_stats", ())),
    )


def policy_spec_to_json(policy: EvolutionPolicy) -> JsonObject:
    """A policy's settings (not its status) as JSON."""
    overrides = {item.name: getattr(policy.overrides, item.name) for item in fields(ConfigOverrides)}
    overrides["operators"] = policy.overrides.operators.value
    overrides["selection"] = policy.overrides.selection.value
    return {
        "trigger": asdict(policy.trigger),
        "budget": asdict(policy.budget),
        "overrides": overrides,
        "held_out_fraction": policy.held_out_fraction,
        "canary_traffic_fraction": policy.canary_traffic_fraction,
        "canary_min_sample": policy.canary_min_sample,
    }


def policy_from_json(agent_id: str, enabled: bool, spec: JsonObject, status: JsonObject,
                     create_time: datetime, update_time: datetime) -> EvolutionPolicy:
    """The policy from :func:`policy_spec_to_json` and :func:`policy_status_to_json`."""
    overrides = dict(spec["overrides"])
    overrides["operators"] = OperatorSet(overrides["operators"])
    overrides["selection"] = Selection(overrides["selection"])
    return EvolutionPolicy(
        agent_id=agent_id,
        enabled=enabled,
        trigger=PolicyTrigger(**spec["trigger"]),
        budget=PolicyBudget(**spec["budget"]),
        overrides=ConfigOverrides(**overrides),
        held_out_fraction=spec["held_out_fraction"],
        canary_traffic_fraction=spec["canary_traffic_fraction"],
        canary_min_sample=spec["canary_min_sample"],
        status=policy_status_from_json(status),
        create_time=create_time,
        update_time=update_time,
    )


def policy_status_to_json(status: PolicyStatus) -> JsonObject:
    """A policy's status as JSON."""
    data = asdict(status)
    data["phase"] = status.phase.value
    for name in ("last_trigger_time", "labels_seen_until", "evidence_since"):
        value = getattr(status, name)
        data[name] = value.isoformat() if value is not None else None
    return data


def policy_status_from_json(data: JsonObject) -> PolicyStatus:
    """The status from :func:`policy_status_to_json`."""
    values = dict(data)
    values["phase"] = Phase(values["phase"])
    for name in ("last_trigger_time", "labels_seen_until", "evidence_since"):
        values[name] = datetime.fromisoformat(values[name]) if values.get(name) else None
    return PolicyStatus(**values)
