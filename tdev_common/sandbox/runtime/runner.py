"""Runs one job in an isolated execution process: load the agent class once, execute each input, report."""

from __future__ import annotations

import _frozen_importlib_external
import binascii
import io
import json
import linecache
import marshal
import math
import os
import resource
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from . import framing, weak_guard

AGENT_FILE = "<agent>"
AGENT_MODULE = "agent"
_MAX_MESSAGE = 2000
_MAX_TRACEBACK = 4000
_MAX_FRAMES = 12
_CO_COROUTINE = 0x80
_MEMORY_BODY = b'{"kind":"memory_exceeded"}'
_EXIT_PIPE_LOST = 72  # the result descriptor was closed or replaced by agent code
_DONE_FRAME = framing.encode({"t": "done"})
MAGIC = _frozen_importlib_external.MAGIC_NUMBER.hex()  # bytecode of another interpreter version is never used


class AgentLoadError(Exception):
    """The code does not define exactly one usable agent class."""


class _Capture(io.TextIOBase):
    """A text stream that keeps the first ``cap`` characters written to it and counts the rest."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:  # type: ignore[override]
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self.cap - self.size
        if room > 0:
            piece = s[:room]
            self.parts.append(piece)
            self.size += len(piece)
        if len(s) > room:
            self.truncated = True
        return len(s)

    def take(self) -> tuple[str, bool]:
        text, truncated = "".join(self.parts), self.truncated
        self.parts, self.size, self.truncated = [], 0, False
        return text, truncated


class Reporter:
    """Writes the runtime's frames. Each result names its input's index: the service takes exactly one
    result per input, in order, and treats anything else on the pipe as the agent's invalid output."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.limits: dict[str, Any] = {}
        self.out = _Capture(0)
        self.err = _Capture(0)
        self.memory_fatal = framing.encode({"t": "fatal"}, _MEMORY_BODY) + _DONE_FRAME
        self.pipe = _identity(fd)

    def configure(self, limits: dict[str, Any]) -> None:
        """Take the job's limits (the reporter itself is made before the job arrives)."""
        self.limits = limits
        self.out.cap = self.err.cap = limits["max_stdout_bytes"]

    def memory_frame(self, index: int, *, last: bool) -> bytes:
        """Built before the input runs: once MemoryError is raised there may be no memory to build it."""
        return framing.encode({"t": "result", "i": index}, _MEMORY_BODY) + (_DONE_FRAME if last else b"")

    def send(self, kind: str, body: bytes, index: int | None = None, *, last: bool = False) -> None:
        """Send one frame; the ``last`` one carries the ``done`` frame in the same write."""
        header: dict[str, Any] = {"t": kind} if index is None else {"t": kind, "i": index}
        frame = framing.encode(header, body)
        self.write(frame + _DONE_FRAME if last else frame, close=last)

    def write(self, frame: bytes, *, close: bool = False) -> None:
        """Write ``frame`` to the result pipe, or exit if agent code swapped the descriptor for another file
        (its own frames would then stand alone; a non-zero exit makes the service discard them).

        ``close`` after the ``done`` frame: the service takes the answers at end-of-file after ``done``
        (nothing can follow them) without waiting for this process to exit."""
        if _identity(self.fd) != self.pipe:
            os._exit(_EXIT_PIPE_LOST)
        view = memoryview(frame)
        while view:
            view = view[os.write(self.fd, view) :]
        if close:
            os.close(self.fd)

    def streams(self) -> dict[str, Any]:
        stdout, out_cut = self.out.take()
        stderr, err_cut = self.err.take()
        return {
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": out_cut,
            "stderr_truncated": err_cut,
            "peak_memory": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def body(self, kind: str, **fields: Any) -> bytes:
        return json.dumps({"kind": kind, **fields, **self.streams()}).encode()

    def output_body(self, output: Any) -> bytes:
        if not isinstance(output, dict):
            detail = f"execute returned {type(output).__name__}, expected a dict"
            return self.body("invalid_output", detail=detail)
        try:
            encoded = json.dumps(output, allow_nan=False, separators=(",", ":"))
        except Exception as exc:  # any failure to encode is the agent's invalid output
            return self.body("invalid_output", detail=f"output is not JSON: {_safe_str(exc)}"[:_MAX_MESSAGE])
        if len(encoded) > self.limits["max_output_bytes"]:
            detail = f"output of {len(encoded)} bytes exceeds the limit of {self.limits['max_output_bytes']}"
            return self.body("output_too_large", detail=detail, size=len(encoded))
        rest = json.dumps({"kind": "ok", **self.streams()})
        return ('{"output":' + encoded + "," + rest[1:]).encode()

    def error_body(self, exc: BaseException) -> bytes:
        return self.body("error", error=_describe_error(exc))


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<unprintable>"


def _describe_error(exc: BaseException) -> dict[str, str]:
    cls = type(exc)
    module = getattr(cls, "__module__", "")
    if cls is AgentLoadError or module in ("builtins", ""):
        name = cls.__qualname__
    else:
        name = f"{module}.{cls.__qualname__}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == AGENT_FILE][-_MAX_FRAMES:]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
    message = _safe_str(exc)[:_MAX_MESSAGE]
    lines.append(f"{name}: {message}\n")
    text = "".join(lines)
    if len(text) > _MAX_TRACEBACK:
        text = "...\n" + text[-_MAX_TRACEBACK:]
    return {"type": name, "message": message, "traceback": text}


def _apply_limits(limits: dict[str, Any]) -> None:
    for name, value in (
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["max_file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["max_open_files"]),
        (resource.RLIMIT_NPROC, limits["max_processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(name, (value, value))


def _load_budget(limits: dict[str, Any]) -> None:
    """A CPU cap of one stage for loading the agent (the hard cap stays as inherited until the number of
    inputs, and so the whole job's budget, is known)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(float(limits["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _cpu_budget(limits: dict[str, Any], n_inputs: int) -> Callable[[], None]:
    """Set a hard CPU cap for the whole job and return a function granting each stage its own budget."""
    per_stage = float(limits["cpu_seconds"])
    hard = math.ceil(per_stage * (n_inputs + 1)) + 1
    soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (min(hard, soft), hard))

    def next_stage() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = min(hard, math.ceil(usage.ru_utime + usage.ru_stime + per_stage))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

    return next_stage


def load_agent(code: str, bytecode: str | None = None) -> type:
    """Execute the agent module and return its single agent class. ``bytecode`` is ``code`` as compiled by
    the service (tdev_common.sandbox.agent_bytecode) for this interpreter; without it, or if it does not unmarshal
    to a code object, ``code`` is compiled here.

    Raises:
        AgentLoadError: no class, or several classes, define ``execute``.
        SyntaxError, Exception: whatever compiling or running the module body raises.
    """
    compiled = _unmarshal(bytecode) if bytecode else None
    if compiled is None:
        compiled = compile(code, AGENT_FILE, "exec", dont_inherit=True)
    linecache.cache[AGENT_FILE] = (len(code), None, code.splitlines(True), AGENT_FILE)
    module = types.ModuleType(AGENT_MODULE)
    module.__file__ = AGENT_FILE
    sys.modules[AGENT_MODULE] = module
    exec(compiled, module.__dict__)
    candidates = [
        obj
        for obj in list(module.__dict__.values())
        if isinstance(obj, type) and obj.__module__ == AGENT_MODULE and callable(getattr(obj, "execute", None))
    ]
    if len(candidates) > 1:
        candidates = [c for c in candidates if callable(getattr(c, "get_capabilities", None))]
    if len(candidates) != 1:
        names = ", ".join(sorted(c.__name__ for c in candidates)) or "none"
        raise AgentLoadError(f"expected exactly one class defining execute(), found: {names}")
    return candidates[0]


def job_bytecode(job: dict[str, Any]) -> str | None:
    """The job's compiled code if it was compiled for this interpreter's version."""
    bytecode = job.get("bytecode")
    return bytecode if isinstance(bytecode, str) and job.get("magic") == MAGIC else None


def dump_code(code_object: types.CodeType) -> str:
    """``code_object`` as a job's ``bytecode`` (base64 of its marshal), the form :func:`load_agent` reads."""
    return binascii.b2a_base64(marshal.dumps(code_object), newline=False).decode("ascii")


def _unmarshal(bytecode: str) -> types.CodeType | None:
    try:
        code_object = marshal.loads(binascii.a2b_base64(bytecode))
    except Exception:
        return None
    return code_object if isinstance(code_object, types.CodeType) else None


def _inspection(cls: type, instance: Any) -> dict[str, Any]:
    capabilities = instance.get_capabilities()
    methods = sorted(n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None)))
    code = getattr(getattr(cls, "execute", None), "__code__", None)
    is_async = bool(code is not None and code.co_flags & _CO_COROUTINE)
    return {"class_name": cls.__name__, "capabilities": capabilities, "methods": methods, "async_execute": is_async}


def prepare(res_fd: int) -> Reporter:
    """What does not depend on the job, done while the process waits in the pool: the reporter on ``res_fd``
    and the captured standard streams."""
    reporter = Reporter(res_fd)
    sys.stdout = sys.__stdout__ = reporter.out  # type: ignore[misc,assignment]
    sys.stderr = sys.__stderr__ = reporter.err  # type: ignore[misc,assignment]
    sys.stdin = sys.__stdin__ = io.StringIO()  # type: ignore[misc,assignment]
    return reporter


def run_job(payload: bytes, reporter: Reporter, *, weak: bool, work_dir: str, jobs_fd: int = -1) -> None:
    """Run the job described by ``payload`` and write one frame per input through ``reporter`` (or one
    ``fatal`` frame if the class cannot be loaded), then ``done``, and close the pipe; the caller then exits.

    A session job (``"session": n``, the most inputs it may take) keeps ``jobs_fd`` open: after its inputs it
    reads ``more`` frames with further inputs from it, numbered on from the last, and returns at its
    end-of-file without ``done`` (the service takes a session's answers one by one and kills the process
    when it closes the session). Any other job closes ``jobs_fd`` before agent code loads."""
    job = json.loads(payload)
    session = int(job.get("session") or 0)
    if not session and jobs_fd >= 0:
        os.close(jobs_fd)
    loaded = load_job(job, reporter, weak=weak, work_dir=work_dir)
    run_loaded(loaded, job["inputs"], session=session, jobs_fd=jobs_fd)


def read_go(jobs_fd: int) -> list[Any]:
    """The inputs of a preloaded job (its ``go`` frame), read from ``jobs_fd``, which is then closed; none if
    the service dropped this process instead (its code went cold) or sent something else."""
    frame = framing.read_frame(jobs_fd)
    os.close(jobs_fd)
    if frame is None:
        return []
    inputs = json.loads(frame[1])
    return inputs if isinstance(inputs, list) else []


class Loaded:
    """A job's agent, loaded: its instance, or the exception loading raised."""

    def __init__(self, job: dict[str, Any], reporter: Reporter, limits: dict[str, Any]) -> None:
        self.job = job
        self.reporter = reporter
        self.limits = limits
        self.me = os.getpid()
        self.cls: type | None = None
        self.instance: Any = None
        self.failure: BaseException | None = None


def load_job(job: dict[str, Any], reporter: Reporter, *, weak: bool, work_dir: str) -> Loaded:
    """Apply the job's limits and load its agent class and instance (the CPU budget of this first stage is
    one ``cpu_seconds``; the rest is granted by :func:`run_loaded` once the number of inputs is known)."""
    limits: dict[str, Any] = job["limits"]
    loaded = Loaded(job, reporter, limits)
    reporter.configure(limits)
    _apply_limits(limits)
    _load_budget(limits)
    if weak:
        weak_guard.install(work_dir)
    try:
        loaded.cls = load_agent(job["code"], job_bytecode(job))
        loaded.instance = loaded.cls()
    except BaseException as exc:  # reported with the inputs, as a fatal frame
        loaded.failure = exc
    return loaded


def run_loaded(loaded: Loaded, inputs: list[Any], *, session: int, jobs_fd: int) -> None:
    """Run ``inputs`` on a loaded agent (or report why it could not load); see :func:`run_job`."""
    reporter, me, job = loaded.reporter, loaded.me, loaded.job
    next_stage = _cpu_budget(loaded.limits, max(session, len(inputs)))
    if isinstance(loaded.failure, MemoryError):
        _check_pid(me)
        reporter.write(reporter.memory_fatal, close=True)
        return
    if loaded.failure is not None:
        exc, loaded.failure = loaded.failure, None
        _check_pid(me)
        reporter.send("fatal", reporter.error_body(exc), last=True)
        return
    cls, instance = loaded.cls, loaded.instance
    assert cls is not None
    if job["mode"] == "inspect":
        try:
            body = reporter.output_body(_inspection(cls, instance))
        except MemoryError:
            _check_pid(me)
            reporter.write(reporter.memory_fatal, close=True)
            return
        except BaseException as exc:
            _check_pid(me)
            reporter.send("fatal", reporter.error_body(exc), last=True)
            return
        _check_pid(me)
        reporter.send("result", body, 0, last=True)
        return
    _check_pid(me)
    if len(inputs) > 1 or session:  # tells the zygote a later crash concerns one input, not the whole batch
        reporter.send("loaded", b"")
    runs = _Runs(instance, reporter, me)
    if not session:
        for index, value in enumerate(inputs):
            next_stage()
            runs.one(index, value, last=index == len(inputs) - 1)
        return
    index = 0
    while inputs and index + len(inputs) <= session:
        for value in inputs:
            next_stage()
            runs.one(index, value, last=False)
            index += 1
        inputs = _more_inputs(jobs_fd)


class _Runs:
    """Runs inputs on one instance of the agent class (one event loop for an async ``execute``)."""

    def __init__(self, instance: Any, reporter: Reporter, me: int) -> None:
        self.instance = instance
        self.reporter = reporter
        self.me = me
        self.loop: Any = None

    def one(self, index: int, value: Any, *, last: bool) -> None:
        """Execute input ``index`` and send its result (``last`` adds ``done`` and closes the pipe)."""
        reporter = self.reporter
        memory_frame = reporter.memory_frame(index, last=last)
        try:
            result = self.instance.execute(value)
            if isinstance(result, types.CoroutineType) or hasattr(result, "__await__"):
                if self.loop is None:
                    self.loop = import_asyncio().new_event_loop()
                result = self.loop.run_until_complete(result)
            body = reporter.output_body(result)
            del result
        except MemoryError:
            _check_pid(self.me)
            reporter.write(memory_frame, close=last)
            return
        except BaseException as exc:
            body = reporter.error_body(exc)
        _check_pid(self.me)
        reporter.send("result", body, index, last=last)


def _more_inputs(fd: int) -> list[Any]:
    """The inputs of the session's next ``more`` frame, or none at end-of-file (the session is over)."""
    frame = framing.read_frame(fd)
    if frame is None:
        return []
    inputs = json.loads(frame[1])
    return inputs if isinstance(inputs, list) else []


_REHEARSAL_CODE = """
class Rehearsal:
    def execute(self, inputs):
        return {"echo": inputs}

    def get_capabilities(self):
        return {}
"""
_REHEARSAL_LIMITS = {"max_stdout_bytes": 16, "max_output_bytes": 1 << 20}
# Compiled once, before the runtime forks: the rehearsal walks the path of a job that brings its bytecode.
_REHEARSAL_BYTECODE = dump_code(compile(_REHEARSAL_CODE, AGENT_FILE, "exec", dont_inherit=True))


def rehearse(*, load: bool = True, bytecode: bool = True) -> None:
    """Walk a built-in agent through the job path (no limits, nothing sent) so the copy-on-write page faults
    and first-use costs after fork are paid while the process waits in the pool, not during the job; without
    ``load``, only the path of an answer (in a process that preloaded its agent); without ``bytecode``, the
    path of a job whose code is compiled here."""
    job = json.loads(json.dumps({"mode": "run", "code": _REHEARSAL_CODE, "inputs": [{"a": [1, "b"]}],
                                 "bytecode": _REHEARSAL_BYTECODE if bytecode else None, "magic": MAGIC}))
    reporter = Reporter(-1)
    reporter.configure(_REHEARSAL_LIMITS)
    if not load:
        framing.encode({"t": "result", "i": 0}, reporter.output_body({"echo": job["inputs"][0]}))
        reporter.memory_frame(0, last=True)
        return
    cls = load_agent(job["code"], job_bytecode(job))
    result = cls().execute(job["inputs"][0])
    isinstance(result, types.CoroutineType) or hasattr(result, "__await__")
    framing.encode({"t": "result", "i": 0}, reporter.output_body(result))
    reporter.memory_frame(0, last=True)
    sys.modules.pop(AGENT_MODULE, None)
    linecache.cache.pop(AGENT_FILE, None)


def import_asyncio() -> Any:
    """Import asyncio without ssl (a large library no sandboxed code can use: there is no network); agent
    code may still import ssl itself afterwards."""
    blocked = "ssl" not in sys.modules
    if blocked:
        sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio
    finally:
        if blocked:
            del sys.modules["ssl"]
    return asyncio


def _check_pid(me: int) -> None:
    """A process the agent forked must never report on the agent's behalf."""
    if os.getpid() != me:
        os._exit(0)
