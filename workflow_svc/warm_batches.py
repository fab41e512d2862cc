"""Warm-process reuse: a group's attempts run in sandbox sessions, whose warm processes outlive a batch.

A group is one execution's nodes of one opted-in agent version (the engine names it; see
docs/workflow.md, "Warm-process reuse"). Its attempts with equal limits that start in the same
event-loop turn (the nodes a finished dependency made ready, say) are collected, up to ``max_batch`` of
them, into one batch, which runs in a session of the group that is idle (its process warm from an earlier
batch: the previous node of a chain, say) or in a new one: one process, one instance of the class, each
input with its own deadline and outcome, final as soon as it is answered. A crash or timeout of one input
ends only that input; the rest go on in a fresh process. Nothing is ever shared between groups, so never
across executions or versions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tdev_common.sandbox import Limits, Outcome
from tdev_common.sandbox.session import SandboxSession

# (code, limits) -> a new session of that program (the sandbox's Sandbox.session)
OpenSession = Callable[[str, Limits], SandboxSession]


@dataclass
class _Batch:
    code: str
    limits: Limits
    inputs: list[dict[str, Any]] = field(default_factory=list)
    answers: list[asyncio.Future[Outcome]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class WarmBatches:
    """Collects a group's attempts into batches and answers each attempt with its own outcome."""

    def __init__(self, open_session: OpenSession, max_batch: int, idle_seconds: float) -> None:
        self._open_session = open_session
        self._max_batch = max(1, max_batch)
        self._idle_seconds = idle_seconds
        self._open: dict[tuple[str, Limits], _Batch] = {}
        self._idle: dict[tuple[str, Limits], list[SandboxSession]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, group: str, code: str, inputs: dict[str, Any], limits: Limits) -> Outcome:
        """The outcome of ``inputs``, run in a batch with the group's other attempts of this turn.

        Raises what the sandbox raises for the whole batch (SandboxError, ValueError). Cancelling the
        caller abandons its input; the batch is stopped once no caller waits for it.
        """
        key = (group, limits)
        batch = self._open.get(key)
        if batch is None:
            batch = _Batch(code, limits)
            self._open[key] = batch
            asyncio.get_running_loop().call_soon(self._launch_if_open, key, batch)
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        batch.inputs.append(inputs)
        batch.answers.append(answer)
        if len(batch.inputs) >= self._max_batch:
            self._launch(key)
        try:
            return await answer
        except asyncio.CancelledError:  # awaiting cancelled the answer too
            if batch.task is not None and all(a.done() for a in batch.answers):
                batch.task.cancel()  # nobody waits for the rest: the sandbox kills the process
            raise

    def _launch_if_open(self, key: tuple[str, Limits], batch: _Batch) -> None:
        if self._open.get(key) is batch:
            self._launch(key)

    def _launch(self, key: tuple[str, Limits]) -> None:
        batch = self._open.pop(key)
        live = [(value, answer) for value, answer in zip(batch.inputs, batch.answers, strict=True)
                if not answer.done()]
        if not live:
            return
        session = self._idle_session(key) or self._open_session(batch.code, batch.limits)
        batch.task = asyncio.create_task(self._answer(key, session, batch, live))
        self._running.add(batch.task)
        batch.task.add_done_callback(self._running.discard)

    def _idle_session(self, key: tuple[str, Limits]) -> SandboxSession | None:
        """A session of the group whose process is warm and idle; sessions whose process ended are closed."""
        idle = self._idle.get(key)
        while idle:
            session = idle.pop()
            if session.reusable:
                return session
            session.close()
        self._idle.pop(key, None)
        return None

    def _park(self, key: tuple[str, Limits], session: SandboxSession) -> None:
        """Keep a session after its batch while its process waits for the group's next batch."""
        if not session.reusable:
            session.close()
            return
        self._idle.setdefault(key, []).append(session)
        # Its process ends by itself once idle; forget the session then, so finished executions leave nothing.
        asyncio.get_running_loop().call_later(self._idle_seconds * 1.5, self._prune, key)

    def _prune(self, key: tuple[str, Limits]) -> None:
        idle = self._idle.get(key)
        if idle is None:
            return
        for session in [s for s in idle if not s.reusable]:
            idle.remove(session)
            session.close()
        if not idle:
            del self._idle[key]

    async def _answer(self, key: tuple[str, Limits], session: SandboxSession, batch: _Batch,
                      live: list[tuple[dict[str, Any], asyncio.Future[Outcome]]]) -> None:
        answers = [answer for _, answer in live]
        try:
            index = 0
            async with contextlib.aclosing(session.stream([value for value, _ in live])) as outcomes:
                async for outcome in outcomes:
                    if not answers[index].done():
                        answers[index].set_result(outcome)
                    index += 1
        except asyncio.CancelledError:
            session.close()
            for answer in answers:
                answer.cancel()
            raise
        except Exception as error:  # the whole batch failed (sandbox gone, invalid input): every caller sees it
            session.close()
            for answer in answers:
                if not answer.done():
                    answer.set_exception(error)
            return
        self._park(key, session)
        for answer in answers:
            if not answer.done():
                answer.set_exception(RuntimeError("the sandbox answered fewer inputs than it was given"))

    async def close(self) -> None:
        """Stops every batch still running and ends every idle session."""
        for idle in self._idle.values():
            for session in idle:
                session.close()
        self._idle.clear()
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            try:
                await task
            except asyncio.CancelledError:
                pass
