"""WarmBatches: which attempts share a batch, and what cancelling one or all of them does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tdev_common.sandbox import Limits, Outcome, OutcomeKind
from workflow_svc.warm_batches import WarmBatches

LIMITS = Limits(timeout_seconds=1.0, cpu_seconds=1.0, memory_bytes=64 << 20)


class FakeSandbox:
    """Records each batch; answers each input with its own value after ``delay``."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.cancelled = 0
        self.delay = delay
        self.fail = fail

    async def stream(self, code: str, inputs: list[dict[str, Any]], limits: Limits) -> AsyncIterator[Outcome]:
        self.batches.append(inputs)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        for value in inputs:
            yield Outcome(kind=OutcomeKind.OK, output=value)


async def test_attempts_of_one_turn_share_a_batch_up_to_its_size_and_groups_never_mix() -> None:
    sandbox = FakeSandbox()
    batches = WarmBatches(sandbox.stream, max_batch=3)
    runs = [batches.run("exec-1/a@1", "code", {"i": i}, LIMITS) for i in range(5)]
    runs.append(batches.run("exec-2/a@1", "code", {"i": 99}, LIMITS))
    runs.append(batches.run("exec-1/a@1", "code", {"i": 7}, LIMITS.replace(timeout_seconds=2.0)))
    outcomes = await asyncio.gather(*runs)
    assert [o.output for o in outcomes] == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}, {"i": 4}, {"i": 99}, {"i": 7}]
    assert sorted(map(len, sandbox.batches)) == [1, 1, 2, 3]
    assert [{"i": 99}] in sandbox.batches and [{"i": 7}] in sandbox.batches


async def test_attempts_of_later_turns_start_a_new_batch() -> None:
    sandbox = FakeSandbox()
    batches = WarmBatches(sandbox.stream, max_batch=8)
    first = await batches.run("g", "code", {"i": 1}, LIMITS)
    second = await batches.run("g", "code", {"i": 2}, LIMITS)
    assert (first.output, second.output) == ({"i": 1}, {"i": 2})
    assert sandbox.batches == [[{"i": 1}], [{"i": 2}]]


async def test_cancelling_one_attempt_leaves_the_batch_running_for_the_others() -> None:
    sandbox = FakeSandbox(delay=0.05)
    batches = WarmBatches(sandbox.stream, max_batch=8)
    tasks = [asyncio.create_task(batches.run("g", "code", {"i": i}, LIMITS)) for i in range(3)]
    await asyncio.sleep(0.01)
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert [(await t).output for t in tasks[1:]] == [{"i": 1}, {"i": 2}]
    assert sandbox.cancelled == 0


async def test_cancelling_every_attempt_stops_the_batch() -> None:
    sandbox = FakeSandbox(delay=5.0)
    batches = WarmBatches(sandbox.stream, max_batch=8)
    tasks = [asyncio.create_task(batches.run("g", "code", {"i": i}, LIMITS)) for i in range(2)]
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert sandbox.cancelled == 1


async def test_a_batch_that_fails_as_a_whole_fails_each_attempt_with_its_error() -> None:
    sandbox = FakeSandbox(fail=RuntimeError("sandbox gone"))
    batches = WarmBatches(sandbox.stream, max_batch=8)
    results = await asyncio.gather(*(batches.run("g", "code", {"i": i}, LIMITS) for i in range(2)),
                                   return_exceptions=True)
    assert [str(r) for r in results] == ["sandbox gone", "sandbox gone"]
