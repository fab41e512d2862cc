"""Warm-process reuse: attempts of one group that start together run as one sandbox batch.

A group is one execution's nodes of one opted-in agent version (the engine names it; see
docs/workflow.md, "Warm-process reuse"). Its attempts with equal limits that start in the same
event-loop turn (the nodes a finished dependency made ready, say) are collected, up to ``max_batch`` of
them, and sent to the sandbox as one batch job: one process, one instance of the class, each input with
its own deadline and outcome. A crash or timeout of one input ends only that input; the rest go on in a
fresh process. Nothing is ever shared between groups, so never across executions or versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tdev_common.sandbox import Limits, Outcome

# (code, inputs, limits) -> one outcome per input, in order, each as soon as it is final
StreamBatch = Callable[[str, list[dict[str, Any]], Limits], AsyncIterator[Outcome]]


@dataclass
class _Batch:
    code: str
    limits: Limits
    inputs: list[dict[str, Any]] = field(default_factory=list)
    answers: list[asyncio.Future[Outcome]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class WarmBatches:
    """Collects a group's attempts into batches and answers each attempt with its own outcome."""

    def __init__(self, stream_batch: StreamBatch, max_batch: int) -> None:
        self._stream_batch = stream_batch
        self._max_batch = max(1, max_batch)
        self._open: dict[tuple[str, Limits], _Batch] = {}
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
        batch.task = asyncio.create_task(self._answer(batch, live))
        self._running.add(batch.task)
        batch.task.add_done_callback(self._running.discard)

    async def _answer(self, batch: _Batch, live: list[tuple[dict[str, Any], asyncio.Future[Outcome]]]) -> None:
        answers = [answer for _, answer in live]
        try:
            index = 0
            async for outcome in self._stream_batch(batch.code, [value for value, _ in live], batch.limits):
                if not answers[index].done():
                    answers[index].set_result(outcome)
                index += 1
        except asyncio.CancelledError:
            for answer in answers:
                answer.cancel()
            raise
        except Exception as error:  # the whole batch failed (sandbox gone, invalid input): every caller sees it
            for answer in answers:
                if not answer.done():
                    answer.set_exception(error)
            return
        for answer in answers:
            if not answer.done():
                answer.set_exception(RuntimeError("the sandbox answered fewer inputs than it was given"))

    async def close(self) -> None:
        """Stops every batch still running."""
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            try:
                await task
            except asyncio.CancelledError:
                pass
