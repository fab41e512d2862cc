"""Service side of the runtime protocol: job frames out, outcomes in (child payloads are untrusted)."""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from .agent_bytecode import MAGIC
from .backend import Job
from .limits import Limits
from .outcome import ErrorInfo, Outcome, OutcomeKind
from .runtime import framing

# Only route a job to the pool with asyncio and the preload modules loaded; a miss costs speed, never
# correctness (and a string that looks like an import, at worst a slightly dearer fork).
_ASYNC_EXECUTE = re.compile(r"async\s+def\s+execute\b")
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([\w.]+(?:[ \t]*,[ \t]*[\w.]+)*))", re.M)
_AS = re.compile(r"[ \t]+as[ \t]+\w+")
_MAX_CACHED_CODE = 64 * 1024  # the scan cache never holds larger programs
_MAX_TEXT = 1 << 20
_MAX_DETAIL = 4000
_DEFAULT_DETAIL = {OutcomeKind.MEMORY_EXCEEDED: "memory limit exceeded"}


def max_result_frame(limits: Limits) -> int:
    """Largest frame a child may send for one input: output + JSON-escaped stdout/stderr + slack."""
    return limits.max_output_bytes + 24 * limits.max_stdout_bytes + 64 * 1024


def flavor(job: Job, preloaded: frozenset[str] = frozenset()) -> str:
    """Which pool should run ``job``: ``async`` has asyncio and the ``preloaded`` modules loaded."""
    if _ASYNC_EXECUTE.search(job.code):
        return "async"
    return "async" if preloaded and any(_preloaded(name, preloaded) for name in imported_modules(job.code)) else "sync"


def imported_modules(code: str) -> frozenset[str]:
    """The modules ``code`` names in ``import`` statements (a quick scan of its lines, not a parse)."""
    return _imported_modules(code) if len(code) <= _MAX_CACHED_CODE else _scan_imports(code)


@functools.lru_cache(maxsize=256)  # jobs of one agent come in runs: scan each program once
def _imported_modules(code: str) -> frozenset[str]:
    return _scan_imports(code)


def _scan_imports(code: str) -> frozenset[str]:
    names: set[str] = set()
    for match in _IMPORT.finditer(_AS.sub("", code)):
        if match.group(1):
            names.add(match.group(1))
        else:
            names.update(part.strip() for part in match.group(2).split(","))
    return frozenset(names)


def _preloaded(name: str, preloaded: frozenset[str]) -> bool:
    """``import urllib.parse``, ``from urllib.parse import x`` and ``from urllib import parse`` all use
    ``urllib.parse``."""
    return name in preloaded or any(module.startswith(name + ".") for module in preloaded)


def job_frame(job: Job, session: int = 0, bytecode: str | None = None) -> bytes:
    """Encode ``job`` for an execution process; ``session`` > 0 opens a session that may take that many
    inputs in all (the rest come in :func:`more_frame` frames); ``bytecode`` is its code compiled for the
    runtime's interpreter (:func:`tdev_common.sandbox.agent_bytecode.compiled`), or None to have it compiled there.

    Raises:
        ValueError: the inputs are not JSON-serialisable.
    """
    body = _program(job, bytecode)
    body["inputs"] = list(job.inputs)
    if session:
        body["session"] = session
    return framing.encode({"t": "job"}, json_bytes(body))


def _program(job: Job, bytecode: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"mode": job.mode.value, "code": job.code, "inputs": [], "limits": job.limits.to_wire()}
    if bytecode is not None:
        body["bytecode"] = bytecode
        body["magic"] = MAGIC
    return body


PreloadKey = tuple[str, str, Limits]


def preload_key(job: Job) -> PreloadKey:
    """What a process preloaded for one job can also run for another: the same mode, code and limits."""
    return job.mode.value, job.code, job.limits


def preload_frame(job: Job, bytecode: str | None = None) -> bytes:
    """``job`` without its inputs, for an idle process to load before the inputs come (:func:`go_frame`)."""
    return framing.encode({"t": "preload"}, json_bytes(_program(job, bytecode)))


def go_frame(job: Job) -> bytes:
    """The inputs of ``job`` for a process that preloaded its code.

    Raises:
        ValueError: the inputs are not JSON-serialisable.
    """
    return framing.encode({"t": "go"}, json_bytes(list(job.inputs)))


def more_frame(inputs: list[dict[str, Any]]) -> bytes:
    """Encode further inputs for an open session.

    Raises:
        ValueError: the inputs are not JSON-serialisable.
    """
    return framing.encode({"t": "more"}, json_bytes(inputs))


def json_bytes(value: Any) -> bytes:
    """``value`` (a job, or inputs) as compact JSON.

    Raises:
        ValueError: it is not JSON-serialisable (or holds NaN/Infinity).
    """
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sandbox inputs must be JSON values: {exc}") from exc


# An output must survive every layer after the sandbox: Postgres jsonb (no \u0000, valid UTF-8), protobuf
# Struct (finite doubles, bounded nesting) and the JSON of `tdev`. Same depth as tdev_common.request_guard.
MAX_OUTPUT_DEPTH = 32
_ESCAPE_NUL = b"\\u0000"
_ESCAPE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_LONGEST_INT_BITS = 1023  # larger integers do not fit a double (protobuf Struct numbers are doubles)


class _Rejected(ValueError):
    """A value in a child's answer that no later layer could store or serve."""


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if value.bit_length() > _LONGEST_INT_BITS:
        raise _Rejected(f"integer of {len(text)} digits is out of range")
    return value


def parse_untrusted(payload: bytes) -> Any:
    """Parse JSON from a child: NaN, Infinity and numbers beyond a double are rejected.

    Raises:
        ValueError: malformed JSON (also invalid UTF-8) or a rejected number (``_Rejected``, with a reason).
        RecursionError: nesting deeper than the parser allows.
    """
    return json.loads(
        payload, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int
    )


def output_problem(output: Any, payload: bytes, max_output_bytes: int) -> tuple[OutcomeKind, str] | None:
    """Why ``output`` (parsed from ``payload``) cannot be accepted as an agent's result (the outcome kind
    and a message), or None.

    The expensive checks run only when the raw payload says they could fail: a NUL or a lone surrogate can
    only arrive as a ``\\u`` escape (raw control characters and invalid UTF-8 fail parsing), nesting needs
    brackets, and a payload shorter than the cap cannot hold a longer output."""
    if not isinstance(output, dict):
        return OutcomeKind.INVALID_OUTPUT, f"execute returned {_json_type(output)}, expected an object"
    nul = _ESCAPE_NUL in payload
    surrogate = _ESCAPE_SURROGATE.search(payload) is not None
    deep = payload.count(b"[") + payload.count(b"{") > MAX_OUTPUT_DEPTH
    if nul or surrogate or deep:
        found = _walk(output, "output", 1, nul, surrogate)
        if found is not None:
            return OutcomeKind.INVALID_OUTPUT, found
    if len(payload) * 6 > max_output_bytes:  # \uXXXX escapes make a re-encoding up to 6 times longer
        size = len(json.dumps(output, separators=(",", ":")))
        if size > max_output_bytes:
            return OutcomeKind.OUTPUT_TOO_LARGE, f"output of {size} bytes exceeds the limit of {max_output_bytes}"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _string_problem(text: str, nul: bool, surrogate: bool) -> str | None:
    if nul and "\x00" in text:
        return "contains the NUL character (\\u0000), which the database cannot store"
    if surrogate and _SURROGATES.search(text):
        return "contains a lone UTF-16 surrogate (not valid Unicode)"
    return None


def _walk(value: Any, path: str, depth: int, nul: bool, surrogate: bool) -> str | None:
    if isinstance(value, dict | list) and depth > MAX_OUTPUT_DEPTH:
        return f"{path} is nested more than {MAX_OUTPUT_DEPTH} levels deep"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _string_problem(key, nul, surrogate)
            if problem is not None:
                return f"a key of {path} {problem}"
            found = _walk(item, f"{path}.{key[:40]}", depth + 1, nul, surrogate)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}[{index}]", depth + 1, nul, surrogate)
            if found is not None:
                return found
    elif isinstance(value, str):
        problem = _string_problem(value, nul, surrogate)
        if problem is not None:
            return f"{path} {problem}"
    return None


def _text(value: Any, limit: int = _MAX_TEXT) -> str:
    """A diagnostic string from a child, made storable: NULs and lone surrogates become U+FFFD (these texts
    are logs, not results, so they are kept rather than rejected)."""
    if not isinstance(value, str):
        return ""
    text = value[:limit]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return _SURROGATES.sub("\ufffd", text)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _invalid(detail: str, duration: float) -> Outcome:
    return Outcome(kind=OutcomeKind.INVALID_OUTPUT, detail=detail, duration_seconds=duration)


_FATAL_KINDS = (OutcomeKind.ERROR, OutcomeKind.MEMORY_EXCEEDED)


def outcome_from_child(payload: bytes, duration: float, max_output_bytes: int, *, fatal: bool = False) -> Outcome:
    """Build an :class:`Outcome` from an execution process's answer.

    The answer is agent output (agent code can write to the pipe): it is validated field by field, and an
    ``ok`` output must be a JSON object of finite numbers within the size and depth caps whose strings the
    database can store; anything else is ``invalid_output``. ``fatal`` answers (the class failed to load)
    may only be errors.
    """
    try:
        body = parse_untrusted(payload)
    except _Rejected as exc:
        return _invalid(f"invalid result from the sandboxed process: {exc}", duration)
    except (ValueError, RecursionError):
        return _invalid("malformed result from the sandboxed process", duration)
    if not isinstance(body, dict):
        return _invalid("malformed result from the sandboxed process", duration)
    try:
        kind = OutcomeKind(str(body.get("kind")))
    except ValueError:
        return _invalid("malformed result from the sandboxed process", duration)
    if fatal and kind not in _FATAL_KINDS:
        return _invalid(f"malformed result from the sandboxed process: a load failure of kind {kind}", duration)
    output = body.get("output")
    if kind is OutcomeKind.OK:
        problem = output_problem(output, payload, max_output_bytes)
        if problem is not None:
            return Outcome(kind=problem[0], detail=problem[1], duration_seconds=duration)
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
