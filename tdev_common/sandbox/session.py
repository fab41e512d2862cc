"""Sessions: one program's inputs run batch by batch in a warm process that waits between batches.

This is the opt-in reuse of docs/sandbox.md, "Sessions": the class loads once per process, and its module
globals and instance persist from one input to the next. Every input still has its own deadline and outcome;
after a crash, a deadline or a protocol violation the next input starts a fresh process. A session's
process holds one of the sandbox's concurrency slots while it lives, idle or not, and gives it up when idle
for ``idle_seconds``, when a job waits for a slot, or on :meth:`SandboxSession.close`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from .backend import Job, JobMode, SessionProcess, check_program
from .errors import SandboxClosedError, SandboxError
from .limits import Limits
from .outcome import Outcome

# The sandbox's side of a session: opens a process holding a slot (None: the backend has no sessions),
# and streams a batch through fresh processes instead.
OpenProcess = Callable[[Job], Awaitable[SessionProcess | None]]
StreamJob = Callable[[Job], AsyncGenerator[Outcome, None]]


class SandboxSession:
    """Runs inputs of one program with one set of limits; see the module docstring. Not for concurrent use:
    one batch at a time (callers that want parallelism open several sessions)."""

    def __init__(self, code: str, limits: Limits, open_process: OpenProcess, stream_job: StreamJob) -> None:
        self.code = code
        self.limits = limits
        self._open_process = open_process
        self._stream_job = stream_job
        self._process: SessionProcess | None = None
        self._fresh_only = False  # the backend has no sessions: every batch runs as a job
        self._busy = False
        self._closed = False

    @property
    def reusable(self) -> bool:
        """Whether a batch started now would run in the same warm process (no cold start)."""
        return not self._closed and not self._busy and self._process is not None and self._process.usable

    @property
    def busy(self) -> bool:
        """Whether a batch is running."""
        return self._busy

    async def stream(self, inputs: list[dict[str, Any]]) -> AsyncGenerator[Outcome, None]:
        """Yield one outcome per input, in order, each as soon as it is final (unlike a job's, when its
        ``result`` arrives: a later input may depend on it).

        Raises:
            ValueError: an input is not a JSON object.
            SandboxClosedError: the session or the sandbox was closed.
            SandboxError: the runtime could not provide a process.
        """
        if self._closed:
            raise SandboxClosedError("the sandbox session is closed")
        if self._busy:
            raise RuntimeError("a sandbox session runs one batch at a time")
        check_program(self.code, inputs)
        self._busy = True
        try:
            done = 0
            while done < len(inputs):
                rest = inputs[done:]
                if self._fresh_only:
                    async with contextlib.aclosing(self._stream_job(Job(JobMode.RUN, self.code, rest, self.limits))) \
                            as answers:
                        async for outcome in answers:
                            done += 1
                            yield outcome
                    return
                process = self._process
                fresh = process is None or not process.usable
                if fresh:
                    if process is not None:
                        process.close()  # it has ended (or run out of room): nothing of it may linger
                    process = self._process = await self._open_process(Job(JobMode.RUN, self.code, rest, self.limits))
                    if process is None:
                        self._fresh_only = True
                        continue
                assert process is not None
                before = done
                # Closed at once if our caller stops early: an abandoned batch must not run on for nobody.
                async with contextlib.aclosing(process.run(rest[: process.room])) as answers:
                    async for outcome in answers:
                        done += 1
                        yield outcome
                if fresh and done == before:  # a warm process may end before a batch; a fresh one must answer
                    raise SandboxError("the sandbox answered no input of a fresh session process")
        finally:
            self._busy = False

    def close(self) -> None:
        """End the session; its process (if any) is killed. Idempotent."""
        self._closed = True
        if self._process is not None:
            self._process.close()
            self._process = None
