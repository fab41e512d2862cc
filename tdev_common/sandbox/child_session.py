"""Runs one session on one execution process: the class loads once, inputs come batch by batch while it lives.

A session is the warm-process reuse the caller asked for (docs/sandbox.md, "Sessions"). Unlike a job's, a
session's answers are final when their ``result`` frame arrives, before the process exits: the next input
may depend on them. So agent code that forges a frame can choose its own answer, which it could as well
return; it cannot answer for another session, which never shares its process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator
from typing import Any

from . import wire
from .backend import Job, SessionCounts
from .child_job import death_outcome
from .outcome import Outcome, OutcomeKind
from .pipe_reader import PipeReader
from .pipe_writer import PipeWriter
from .runtime_process import RUNTIME_DIED, ChildHandle, RuntimeProcess


class ChildSession(SessionCounts):
    """The service's side of one session: :meth:`run` one batch at a time, each input with its own deadline.

    It ends (and its process is killed) when it has been idle for ``idle_seconds``, on :meth:`close`, after
    ``max_inputs`` inputs, or at the first input that does not come back with a clean answer: a crash, a
    deadline, a protocol violation. ``ended`` resolves then.
    """

    def __init__(
        self, process: RuntimeProcess, handle: ChildHandle, job: Job, *, grace: float, idle_seconds: float,
        max_inputs: int,
    ) -> None:
        super().__init__(max_inputs)
        self.process = process
        self.handle = handle
        self.job = job
        self.grace = grace
        self.idle_seconds = idle_seconds
        self.loop = asyncio.get_running_loop()
        self.reader = PipeReader(self.loop, handle.res_r, wire.max_result_frame(job.limits), on_frame=self._on_frame,
                                 on_eof=self._on_eof, on_bad=self._fail, stopped=self.ended.done)
        self.writer = PipeWriter(self.loop, handle.job_w)
        self.loaded = False
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.answers: asyncio.Queue[Outcome | None] = asyncio.Queue()

    async def run(self, inputs: list[dict[str, Any]]) -> AsyncGenerator[Outcome, None]:
        """Yield one outcome per input, in order, each once final; it stops early (a non-empty prefix) when
        the process ended on the last one yielded. At most :attr:`room` inputs; only when :attr:`usable`.

        Raises:
            ValueError: an input is not JSON-serialisable (nothing was sent; the session stays usable).
        """
        self.admit(inputs)
        try:
            frame = (wire.job_frame(dataclasses.replace(self.job, inputs=inputs), self.max_inputs,
                                    self.process.compiled(self.job.code)) if self.sent == 0
                     else wire.more_frame(inputs))
        except ValueError:
            if self.sent == 0:  # a session that never started has nothing to keep
                self._finish()
            raise
        self._cancel_timer()
        if self.sent == 0:
            self.reader.start()
            backstop = self.max_inputs * (self.job.limits.timeout_seconds + self.idle_seconds) + self.grace
            self.process.send({"op": "start", "cid": self.handle.cid, "backstop": backstop,
                               "sweep": self.job.limits.max_processes > 1})
            self.handle.exited.add_done_callback(self._on_exit)
        self.sent += len(inputs)
        self._arm(self.job.limits.timeout_seconds)
        self.writer.write(frame)
        taken = 0
        try:
            while taken < len(inputs):
                outcome = await self.answers.get()
                if outcome is None:
                    return
                taken += 1
                yield outcome
        except BaseException:
            if taken < len(inputs):  # abandoned mid-batch: the process must not run on for nobody
                self._finish()
            raise

    def close(self) -> None:
        """End the session now; its process is killed. Idempotent."""
        self._finish()

    # -- answers ---------------------------------------------------------------------------------------
    def _on_eof(self) -> None:
        if self.answered == self.sent:  # else agent code closed its pipe: the exit or the deadline decides
            self._finish()

    def _on_frame(self, header: dict[str, Any], payload: bytes) -> None:
        """``loaded`` first, then exactly one ``result`` per input with its index, in order; or one ``fatal``
        (the class did not load) instead of ``loaded``. Anything else is the agent's invalid output."""
        kind = header.get("t")
        if kind == "loaded" and not self.loaded:
            self.loaded = True
        elif kind == "fatal" and not self.loaded:
            outcome = wire.outcome_from_child(payload, self._elapsed(), self.job.limits.max_output_bytes, fatal=True)
            for _ in range(self.sent - self.answered):  # every input would fail the same way
                self._take(outcome)
            self._finish()
        elif kind == "result" and self.loaded and self.answered < self.sent and header.get("i") == self.answered:
            self._take(wire.outcome_from_child(payload, self._elapsed(), self.job.limits.max_output_bytes))
            if self.answered < self.sent:
                self._arm(self.job.limits.timeout_seconds)
            elif self.answered >= self.max_inputs:
                self._finish()
            else:
                self._arm(self.idle_seconds, idle=True)
        else:
            self._fail(OutcomeKind.INVALID_OUTPUT, f"unexpected message {str(kind)[:40]!r} from the sandboxed process")

    def _take(self, outcome: Outcome) -> None:
        self.answered += 1
        self.started = time.monotonic()
        self.answers.put_nowait(outcome)

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- deadlines and deaths --------------------------------------------------------------------------
    def _arm(self, seconds: float, *, idle: bool = False) -> None:
        self._cancel_timer()
        if not idle:
            self.started = time.monotonic()
        self.timer = self.loop.call_later(seconds, self._on_idle if idle else self._on_timeout)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_idle(self) -> None:
        self._finish()

    def _on_timeout(self) -> None:
        self._fail(OutcomeKind.TIMEOUT, f"wall-clock deadline of {self.job.limits.timeout_seconds:g}s exceeded")

    def _on_exit(self, exited: asyncio.Future[int]) -> None:
        if self.ended.done():
            return
        self.reader.read()  # answers written just before dying still count
        if self.ended.done() or self.answered == self.sent:
            self._finish()
            return
        status = exited.result()
        if status == RUNTIME_DIED:
            self._fail(OutcomeKind.KILLED, "the sandbox runtime exited during the execution")
        else:
            self._fail(**death_outcome(status))

    def _fail(self, kind: OutcomeKind, detail: str = "", **fields: Any) -> None:
        """The input being run (if any) ends with ``kind``; the session ends with it."""
        if self.answered < self.sent:
            self._take(Outcome(kind=kind, detail=detail, duration_seconds=self._elapsed(), **fields))
        self._finish()

    def _finish(self) -> None:
        if self.ended.done():
            return
        self._cancel_timer()
        self.answers.put_nowait(None)  # the batch being run (if any) ends here
        self.reader.stop()
        self.writer.stop()
        self.ended.set_result(None)
        # Killed even after a clean exit: the zygote then also sweeps what it forked. A session never
        # started has no process running agent code, only an idle one, which is killed just the same.
        self.process.release(self.handle, kill=not self.handle.exited.done(),
                             sweep=self.job.limits.max_processes > 1)
