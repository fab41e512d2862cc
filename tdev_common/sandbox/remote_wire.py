"""Conversions between the sandbox's values and the ``tdev.sandbox.v1`` messages (both directions).

The worker's answers are checked again on the service side like an execution process's: a worker runs
agent code, so its bytes are not trusted more than the sandbox it hosts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from tdev.sandbox.v1 import sandbox_service_pb2 as pb

from . import wire
from .backend import Job, JobMode
from .limits import Limits
from .outcome import ErrorInfo, Outcome, OutcomeKind

JOB_STARTED_KEY = "tdev-sandbox-job"
JOB_STARTED_VALUE = "started"

_MODES = {JobMode.RUN: pb.JOB_MODE_RUN, JobMode.INSPECT: pb.JOB_MODE_INSPECT}
_MODES_BACK = {value: key for key, value in _MODES.items()}
_KINDS: dict[OutcomeKind, Any] = {kind: pb.OutcomeKind.Value(f"OUTCOME_KIND_{kind.name}") for kind in OutcomeKind}
_KINDS_BACK: dict[Any, OutcomeKind] = {value: key for key, value in _KINDS.items()}
_LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))


class BadJobError(ValueError):
    """A RunJob request that does not describe a job (the message names the field, never its value)."""


def job_request(job: Job) -> pb.RunJobRequest:
    """The RunJob request of ``job``.

    Raises:
        ValueError: an input is not JSON-serialisable (or holds NaN/Infinity).
    """
    return pb.RunJobRequest(mode=_MODES[job.mode], code=job.code, inputs_json=inputs_json(job.inputs),
                            limits=pb.Limits(**job.limits.to_wire()))


def session_request(job: Job, *, first: bool) -> pb.RunSessionRequest:
    """The RunSession request of one batch (``job.inputs``); the ``first`` also names the code and limits.

    Raises:
        ValueError: an input is not JSON-serialisable (or holds NaN/Infinity).
    """
    if not first:
        return pb.RunSessionRequest(inputs_json=inputs_json(job.inputs))
    return pb.RunSessionRequest(code=job.code, inputs_json=inputs_json(job.inputs),
                                limits=pb.Limits(**job.limits.to_wire()))


def inputs_json(inputs: Sequence[dict[str, Any]]) -> list[str]:
    """Each input as JSON text.

    Raises:
        ValueError: an input is not JSON-serialisable (or holds NaN/Infinity).
    """
    return [wire.json_bytes(value).decode() for value in inputs]


def job_from_request(request: pb.RunJobRequest) -> Job:
    """The job a RunJob request asks for.

    Raises:
        BadJobError: no mode, no inputs, an input that is not a JSON object, or limits out of range.
    """
    mode = _MODES_BACK.get(request.mode)
    if mode is None:
        raise BadJobError("mode must be JOB_MODE_RUN or JOB_MODE_INSPECT")
    return Job(mode=mode, code=request.code, inputs=inputs_from(request.inputs_json), limits=_limits_of(request))


def session_from_request(request: pb.RunSessionRequest) -> Job:
    """The program, limits and first batch of a RunSession's first request.

    Raises:
        BadJobError: no inputs, an input that is not a JSON object, or limits out of range.
    """
    return Job(mode=JobMode.RUN, code=request.code, inputs=inputs_from(request.inputs_json),
               limits=_limits_of(request))


def inputs_from(texts: Sequence[str]) -> list[dict[str, Any]]:
    """The inputs of a request's ``inputs_json``.

    Raises:
        BadJobError: none, or one that is not a JSON object.
    """
    if not texts:
        raise BadJobError("inputs_json must hold at least one input")
    inputs: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        try:
            value = wire.parse_untrusted(text.encode())
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise BadJobError(f"inputs_json[{index}] is not a JSON object")
        inputs.append(value)
    return inputs


def _limits_of(request: pb.RunJobRequest | pb.RunSessionRequest) -> Limits:
    if not request.HasField("limits"):
        raise BadJobError("limits must be set")
    try:
        return Limits(**{name: getattr(request.limits, name) for name in _LIMIT_FIELDS})
    except ValueError as exc:
        raise BadJobError(str(exc)) from exc


def outcome_message(outcome: Outcome) -> pb.Outcome:
    """The message of one outcome (the output as JSON text: its numbers keep their types)."""
    message = pb.Outcome(
        kind=_KINDS[outcome.kind],
        signal=outcome.signal or 0,
        detail=outcome.detail,
        duration_seconds=outcome.duration_seconds,
        peak_memory_bytes=outcome.peak_memory_bytes,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        stdout_truncated=outcome.stdout_truncated,
        stderr_truncated=outcome.stderr_truncated,
    )
    if outcome.output is not None:
        message.output_json = json.dumps(outcome.output, separators=(",", ":"))
    if outcome.error is not None:
        message.error.CopyFrom(
            pb.AgentError(type=outcome.error.type, message=outcome.error.message, traceback=outcome.error.traceback)
        )
    return message


def outcome_from_message(message: pb.Outcome, max_output_bytes: int) -> Outcome:
    """The outcome a worker reported, held to the same rules as an execution process's answer."""
    kind = _KINDS_BACK.get(message.kind)
    if kind is None:
        return Outcome(kind=OutcomeKind.INVALID_OUTPUT, detail="the sandbox worker sent an unknown outcome kind",
                       duration_seconds=message.duration_seconds)
    output: dict[str, Any] | None = None
    if kind is OutcomeKind.OK:
        payload = message.output_json.encode()
        try:
            parsed = wire.parse_untrusted(payload)
        except (ValueError, RecursionError):
            parsed = None
        problem = wire.output_problem(parsed, payload, max_output_bytes)
        if problem is not None:
            return Outcome(kind=problem[0], detail=f"from the sandbox worker: {problem[1]}",
                           duration_seconds=message.duration_seconds)
        output = parsed
    error = None
    if kind is OutcomeKind.ERROR:
        error = ErrorInfo(type=message.error.type or "Error", message=message.error.message,
                          traceback=message.error.traceback)
    return Outcome(
        kind=kind,
        output=output,
        error=error,
        signal=message.signal if kind is OutcomeKind.KILLED and message.signal else None,
        detail=message.detail,
        duration_seconds=message.duration_seconds,
        peak_memory_bytes=message.peak_memory_bytes,
        stdout=message.stdout,
        stderr=message.stderr,
        stdout_truncated=message.stdout_truncated,
        stderr_truncated=message.stderr_truncated,
    )
