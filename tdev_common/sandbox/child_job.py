"""Runs one job on one execution process: write the job to it, read its answers, enforce deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from . import wire
from .backend import Job
from .outcome import ErrorInfo, Outcome, OutcomeKind
from .pipe_reader import PipeReader
from .pipe_writer import PipeWriter
from .runtime_process import RUNTIME_DIED, ChildHandle, RuntimeProcess

_EXIT_WAIT = 0.5  # seconds a process that has answered everything gets to exit (it takes well under 1 ms)


class ChildJob:
    """The service's side of one job. :meth:`run` returns outcomes for a non-empty prefix of the inputs."""

    def __init__(self, process: RuntimeProcess, handle: ChildHandle, job: Job, grace: float) -> None:
        self.process = process
        self.handle = handle
        self.job = job
        self.grace = grace
        self.loop = asyncio.get_running_loop()
        self.reader = PipeReader(self.loop, handle.res_r, wire.max_result_frame(job.limits), on_frame=self._on_frame,
                                 on_eof=self._on_eof, on_bad=self._end, stopped=lambda: self.finished)
        self.outcomes: list[Outcome] = []
        self.loaded = False
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.writer = PipeWriter(self.loop, handle.job_w)
        self.finished = False
        self.complete = False  # every input answered, waiting for ``done`` and end-of-file, or the exit
        self.sealed = False  # ``done`` came after the last answer: end-of-file now ends the job
        self.fatal = False  # the answers come from one load failure

    async def run(self) -> list[Outcome]:
        limits = self.job.limits
        backstop = limits.timeout_seconds * (len(self.job.inputs) + 1) + self.grace
        if self.handle.preloaded is not None:
            frame = wire.go_frame(self.job)
        else:
            frame = wire.job_frame(self.job, bytecode=self.process.compiled(self.job.code))
        self.started = time.monotonic()
        self.timer = self.loop.call_later(limits.timeout_seconds, self._on_timeout)
        self.reader.start()
        self.writer.write(frame)
        sweep = limits.max_processes > 1
        self.process.send({"op": "start", "cid": self.handle.cid, "backstop": backstop, "sweep": sweep})
        self.handle.exited.add_done_callback(self._on_exit)
        try:
            await self.done
        except BaseException:
            self._finish(kill=True)
            raise
        return self.outcomes

    # -- reading answers -------------------------------------------------------------------------------
    def _on_eof(self) -> None:
        if self.sealed:  # nothing can follow the answers: take them now, the exit is not awaited
            self._finish(kill=True)
        # else the exit status (or the deadline) decides what happened

    def _on_frame(self, header: dict[str, Any], payload: bytes) -> None:
        """Check one frame against the protocol: ``loaded`` first when there are several inputs, then
        exactly one ``result`` per input with its index, in order; or a single ``fatal`` before any result;
        then ``done``. Agent code can write on the pipe too, so anything else is the agent's invalid output."""
        kind = header.get("t")
        n = len(self.job.inputs)
        expected = len(self.outcomes)
        if self.complete and kind == "done" and not self.sealed:
            self.sealed = True
        elif self.complete:
            self._violation(n - 1, "the sandboxed process sent more messages than it had inputs")
        elif kind == "loaded":
            if self.loaded or expected or n < 2:
                self._violation(expected, "the sandboxed process sent an unexpected load message")
            else:
                self.loaded = True
        elif kind == "result":
            index = header.get("i")
            if type(index) is not int or index != expected:
                suspect = index if type(index) is int and 0 <= index < expected else expected
                self._violation(suspect, f"the sandboxed process sent a result for input {index!r} "
                                f"where the result for input {expected} was due")
            elif n > 1 and not self.loaded:
                self._violation(expected, "the sandboxed process sent a result before loading the agent")
            else:
                self._answer(wire.outcome_from_child(payload, self._elapsed(), self.job.limits.max_output_bytes))
        elif kind == "fatal" and not expected:
            outcome = wire.outcome_from_child(payload, self._elapsed(), self.job.limits.max_output_bytes, fatal=True)
            self.fatal = True
            self.outcomes.extend([outcome] * n)
            self._await_exit()
        else:
            self._violation(expected, "malformed message from the sandboxed process")

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _answer(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if len(self.outcomes) >= len(self.job.inputs):
            self._await_exit()
            return
        self.started = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.job.limits.timeout_seconds, self._on_timeout)

    def _await_exit(self) -> None:
        """Every input is answered; the answers count once nothing more can be written: after the runtime's
        ``done`` frame at end-of-file of the pipe, or when the process has exited cleanly (agent code that
        keeps a copy of the pipe open delays end-of-file, never the exit). The input's deadline still holds,
        but a process that answered just before it gets a moment to finish."""
        self.complete = True
        remaining = self.timer.when() - self.loop.time() if self.timer is not None else 0.0
        if remaining < _EXIT_WAIT:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_later(_EXIT_WAIT, self._on_timeout)

    def _violation(self, suspect: int, detail: str) -> None:
        """End the job: input ``suspect`` (and every later one) loses its answer and is invalid_output."""
        del self.outcomes[min(suspect, len(self.job.inputs) - 1) :]
        self.complete = self.sealed = False
        self._answer_rest(OutcomeKind.INVALID_OUTPUT, detail=detail)

    def _reopen_last(self) -> None:
        """Withdraw the answers a process gave before ending badly: the last one (all after a fatal one)."""
        del self.outcomes[0 if self.fatal else len(self.outcomes) - 1 :]
        self.complete = self.sealed = False

    def _end(self, kind: OutcomeKind, detail: str) -> None:
        """End the job with ``kind`` for the current input (for the last one if all were answered)."""
        if self.complete:
            self._reopen_last()
        self._answer_rest(kind, detail=detail)

    def _answer_rest(self, kind: OutcomeKind, **fields: Any) -> None:
        """Answer the current input with ``kind`` and end the job; before the class was loaded the same
        outcome answers every remaining input (they would all fail the same way)."""
        outcome = Outcome(kind=kind, duration_seconds=self._elapsed(), **fields)
        end = len(self.job.inputs) if not self.loaded else len(self.outcomes) + 1
        self.outcomes.extend([outcome] * (end - len(self.outcomes)))
        self._finish(kill=True)

    # -- deadlines and deaths --------------------------------------------------------------------------
    def _on_timeout(self) -> None:
        if self.finished:
            return
        if self.complete:
            self._end(OutcomeKind.TIMEOUT, "the sandboxed process did not exit after its last answer")
            return
        timeout = self.job.limits.timeout_seconds
        self._answer_rest(OutcomeKind.TIMEOUT, detail=f"wall-clock deadline of {timeout:g}s exceeded")

    def _on_exit(self, exited: asyncio.Future[int]) -> None:
        if self.finished:
            return
        self.reader.read()  # answers written just before dying still count
        if self.finished:
            return
        status = exited.result()
        if status == RUNTIME_DIED:
            self._end(OutcomeKind.KILLED, "the sandbox runtime exited during the execution")
        elif self.complete and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self._finish(kill=False)
        else:
            if self.complete:  # the runtime's own verdict (the exit status) wins over the answers
                self._reopen_last()
            self._answer_rest(**death_outcome(status))

    def _finish(self, *, kill: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        self.reader.stop()
        self.writer.stop()
        if not self.done.done():
            self.done.set_result(None)  # first, so the caller resumes before the kill message leaves
        # A process that exited needs no kill (the zygote sweeps what it forked, as asked on start). One that
        # closed its pipe after ``done`` is killed: agent code never outlives the answers that were taken.
        self.process.release(self.handle, kill=kill, sweep=self.job.limits.max_processes > 1)


def death_outcome(status: int) -> dict[str, Any]:
    """Fields of the outcome of a process that died with wait status ``status`` before answering."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return {"kind": OutcomeKind.TIMEOUT, "detail": "CPU time limit exceeded"}
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return {"kind": OutcomeKind.KILLED, "signal": sig, "detail": f"killed by {name}"}
    code = os.waitstatus_to_exitcode(status)
    detail = f"exited with status {code} without a result"
    return {"kind": OutcomeKind.ERROR, "error": ErrorInfo(type="ProcessExit", message=detail), "detail": detail}
