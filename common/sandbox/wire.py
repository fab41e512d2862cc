"""Service side of the runtime protocol: job frames out, outcomes in (child payloads are untrusted)."""

from __future__ import annotations

import json
import re
from typing import Any

from .backend import Job
from .limits import Limits
from .outcome import ErrorInfo, Outcome, OutcomeKind
from .runtime import framing

# Only routes the job to a pool with asyncio preloaded; a miss costs speed, never correctness.
_ASYNC_EXECUTE = re.compile(r"async\s+def\s+execute\b")
_MAX_TEXT = 1 << 20
_MAX_DETAIL = 4000
_DEFAULT_DETAIL = {OutcomeKind.MEMORY_EXCEEDED: "memory limit exceeded"}


def max_result_frame(limits: Limits) -> int:
    """Largest frame a child may send for one input: output + JSON-escaped stdout/stderr + slack."""
    return limits.max_output_bytes + 24 * limits.max_stdout_bytes + 64 * 1024


def flavor(job: Job) -> str:
    """Which pool should run ``job``: ``async`` has asyncio preloaded."""
    return "async" if _ASYNC_EXECUTE.search(job.code) else "sync"


def job_frame(job: Job) -> bytes:
    """Encode ``job`` for an execution process.

    Raises:
        ValueError: the inputs are not JSON-serialisable.
    """
    try:
        payload = json.dumps(
            {"mode": job.mode.value, "code": job.code, "inputs": list(job.inputs), "limits": job.limits.to_wire()},
            allow_nan=False,
            separators=(",", ":"),
        ).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sandbox inputs must be JSON values: {exc}") from exc
    return framing.encode({"t": "job"}, payload)


def _text(value: Any, limit: int = _MAX_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _invalid(detail: str, duration: float) -> Outcome:
    return Outcome(kind=OutcomeKind.INVALID_OUTPUT, detail=detail, duration_seconds=duration)


def outcome_from_child(payload: bytes, duration: float) -> Outcome:
    """Build an :class:`Outcome` from an execution process's answer (untrusted: validated field by field)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return _invalid("malformed result from the sandboxed process", duration)
    if not isinstance(body, dict):
        return _invalid("malformed result from the sandboxed process", duration)
    try:
        kind = OutcomeKind(str(body.get("kind")))
    except ValueError:
        return _invalid("malformed result from the sandboxed process", duration)
    output = body.get("output")
    if kind is OutcomeKind.OK and not isinstance(output, dict):
        return _invalid("execute did not return a dict", duration)
    error = None
    if kind is OutcomeKind.ERROR:
        raw_error = body.get("error")
        raw: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        error = ErrorInfo(
            type=_text(raw.get("type"), 200) or "Error",
            message=_text(raw.get("message"), _MAX_DETAIL),
            traceback=_text(raw.get("traceback"), 2 * _MAX_DETAIL),
        )
    signal = body.get("signal")
    return Outcome(
        kind=kind,
        output=output if kind is OutcomeKind.OK else None,
        error=error,
        signal=signal if isinstance(signal, int) and kind is OutcomeKind.KILLED else None,
        detail=_text(body.get("detail"), _MAX_DETAIL) or _DEFAULT_DETAIL.get(kind, ""),
        duration_seconds=duration,
        peak_memory_bytes=int(_number(body.get("peak_memory"))),
        stdout=_text(body.get("stdout")),
        stderr=_text(body.get("stderr")),
        stdout_truncated=body.get("stdout_truncated") is True,
        stderr_truncated=body.get("stderr_truncated") is True,
    )
