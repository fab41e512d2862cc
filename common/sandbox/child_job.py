"""Runs one job on one execution process: write the job to it, read its answers, enforce deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from . import wire
from .backend import Job
from .outcome import ErrorInfo, Outcome, OutcomeKind
from .runtime import framing
from .runtime_process import RUNTIME_DIED, ChildHandle, RuntimeProcess

_READ_CHUNK = 1 << 16


class ChildJob:
    """The service's side of one job. :meth:`run` returns outcomes for a non-empty prefix of the inputs."""

    def __init__(self, process: RuntimeProcess, handle: ChildHandle, job: Job, grace: float) -> None:
        self.process = process
        self.handle = handle
        self.job = job
        self.grace = grace
        self.loop = asyncio.get_running_loop()
        self.frames = framing.FrameBuffer(wire.max_result_frame(job.limits))
        self.outcomes: list[Outcome] = []
        self.loaded = False
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.pending_write = b""
        self.finished = False
        self.eof = False

    async def run(self) -> list[Outcome]:
        limits = self.job.limits
        backstop = limits.timeout_seconds * (len(self.job.inputs) + 1) + self.grace
        frame = wire.job_frame(self.job)
        self.started = time.monotonic()
        self.timer = self.loop.call_later(limits.timeout_seconds, self._on_timeout)
        self.loop.add_reader(self.handle.res_r, self._on_readable)
        self._write(frame)
        self.process.send({"op": "start", "cid": self.handle.cid, "backstop": backstop})
        self.handle.exited.add_done_callback(self._on_exit)
        try:
            await self.done
        except BaseException:
            self._finish(kill=True)
            raise
        return self.outcomes

    # -- writing the job -------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        try:
            sent = os.write(self.handle.job_w, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the process is gone; its exit settles the job
        self.pending_write = data[sent:]
        if self.pending_write:
            self.loop.add_writer(self.handle.job_w, self._on_writable)

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.handle.job_w)
        if not self.finished:
            self._write(self.pending_write)

    # -- reading answers -------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        while not self.finished:
            try:
                data = os.read(self.handle.res_r, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.eof = True
                self.loop.remove_reader(self.handle.res_r)
                return  # the exit status (or the deadline) decides what happened
            try:
                frames = self.frames.feed(data)
            except framing.FrameTooLarge:
                self._answer_rest(OutcomeKind.OUTPUT_TOO_LARGE, detail="result larger than the output limit")
                return
            except framing.FrameError:
                self._answer_rest(OutcomeKind.INVALID_OUTPUT, detail="malformed message from the sandboxed process")
                return
            for header, payload in frames:
                self._on_frame(header, payload)
                if self.finished:
                    return

    def _on_frame(self, header: dict[str, Any], payload: bytes) -> None:
        kind = header.get("t")
        if kind == "loaded":
            self.loaded = True
        elif kind == "result":
            self._answer(wire.outcome_from_child(payload, self._elapsed()))
        elif kind == "fatal":
            outcome = wire.outcome_from_child(payload, self._elapsed())
            while not self.finished:
                self._answer(outcome)
        else:
            self._answer_rest(OutcomeKind.INVALID_OUTPUT, detail="malformed message from the sandboxed process")

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _answer(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if len(self.outcomes) >= len(self.job.inputs):
            self._finish(kill=True)
            return
        self.started = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.job.limits.timeout_seconds, self._on_timeout)

    def _answer_rest(self, kind: OutcomeKind, **fields: Any) -> None:
        """Answer the current input with ``kind`` and end the job; before the class was loaded the same
        outcome answers every remaining input (they would all fail the same way)."""
        outcome = Outcome(kind=kind, duration_seconds=self._elapsed(), **fields)
        end = len(self.job.inputs) if not self.loaded else len(self.outcomes) + 1
        self.outcomes.extend([outcome] * (end - len(self.outcomes)))
        self._finish(kill=True)

    # -- deadlines and deaths --------------------------------------------------------------------------
    def _on_timeout(self) -> None:
        if not self.finished:
            timeout = self.job.limits.timeout_seconds
            self._answer_rest(OutcomeKind.TIMEOUT, detail=f"wall-clock deadline of {timeout:g}s exceeded")

    def _on_exit(self, exited: asyncio.Future[int]) -> None:
        if self.finished:
            return
        self._on_readable()  # answers written just before dying still count
        if self.finished:
            return
        status = exited.result()
        if status == RUNTIME_DIED:
            self._answer_rest(OutcomeKind.KILLED, detail="the sandbox runtime exited during the execution")
        else:
            self._answer_rest(**death_outcome(status))

    def _finish(self, *, kill: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.handle.res_r)
            self.loop.remove_writer(self.handle.job_w)
        if not self.done.done():
            self.done.set_result(None)  # first, so the caller resumes before the kill message leaves
        # A process that answered waits to be killed; one that did not is killed now.
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
