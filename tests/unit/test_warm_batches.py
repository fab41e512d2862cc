"""WarmBatches: which attempts share a batch, which batches take a warm session, and what cancelling does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tdev_common.sandbox import Limits, Outcome, OutcomeKind
from workflow_svc.warm_batches import WarmBatches

LIMITS = Limits(timeout_seconds=1.0, cpu_seconds=1.0, memory_bytes=64 << 20)


class FakeSession:
    """A session of the fake sandbox: reusable after a clean batch until closed."""

    def __init__(self, sandbox: FakeSandbox, limits: Limits) -> None:
        self.sandbox = sandbox
        self.limits = limits
        self.closed = False
        self.busy = False

    @property
    def reusable(self) -> bool:
        return not self.closed and not self.busy

    async def stream(self, inputs: list[dict[str, Any]]) -> AsyncIterator[Outcome]:
        self.sandbox.batches.append(inputs)
        self.sandbox.used.append(self)
        self.busy = True
        try:
            await asyncio.sleep(self.sandbox.delay)
        except asyncio.CancelledError:
            self.sandbox.cancelled += 1
            raise
        finally:
            self.busy = False
        if self.sandbox.fail is not None:
            raise self.sandbox.fail
        for value in inputs:
            yield Outcome(kind=OutcomeKind.OK, output=value)

    def close(self) -> None:
        self.closed = True


class FakeSandbox:
    """Records each batch and the session it ran in; answers each input with its own value after ``delay``."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.used: list[FakeSession] = []
        self.opened: list[FakeSession] = []
        self.cancelled = 0
        self.delay = delay
        self.fail = fail

    def session(self, code: str, limits: Limits) -> Any:
        session = FakeSession(self, limits)
        self.opened.append(session)
        return session


def warm(sandbox: FakeSandbox, max_batch: int) -> WarmBatches:
    return WarmBatches(sandbox.session, max_batch=max_batch, idle_seconds=0.05)


async def test_attempts_of_one_turn_share_a_batch_up_to_its_size_and_groups_never_mix() -> None:
    sandbox = FakeSandbox()
    batches = warm(sandbox, 3)
    runs = [batches.run("exec-1/a@1", "code", {"i": i}, LIMITS) for i in range(5)]
    runs.append(batches.run("exec-2/a@1", "code", {"i": 99}, LIMITS))
    runs.append(batches.run("exec-1/a@1", "code", {"i": 7}, LIMITS.replace(timeout_seconds=2.0)))
    outcomes = await asyncio.gather(*runs)
    assert [o.output for o in outcomes] == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}, {"i": 4}, {"i": 99}, {"i": 7}]
    assert sorted(map(len, sandbox.batches)) == [1, 1, 2, 3]
    assert [{"i": 99}] in sandbox.batches and [{"i": 7}] in sandbox.batches


async def test_attempts_of_later_turns_start_a_new_batch_in_the_groups_idle_session() -> None:
    sandbox = FakeSandbox()
    batches = warm(sandbox, 8)
    first = await batches.run("g", "code", {"i": 1}, LIMITS)
    second = await batches.run("g", "code", {"i": 2}, LIMITS)
    other_group = await batches.run("h", "code", {"i": 3}, LIMITS)
    other_limits = await batches.run("g", "code", {"i": 4}, LIMITS.replace(timeout_seconds=2.0))
    assert [o.output for o in (first, second, other_group, other_limits)] == [{"i": i} for i in range(1, 5)]
    assert sandbox.batches == [[{"i": 1}], [{"i": 2}], [{"i": 3}], [{"i": 4}]]
    assert sandbox.used[0] is sandbox.used[1]  # the warm session of the group's earlier batch
    assert len(sandbox.opened) == 3 and sandbox.used[2] is not sandbox.used[0] is not sandbox.used[3]


async def test_a_session_that_ended_while_idle_is_closed_and_replaced() -> None:
    sandbox = FakeSandbox()
    batches = warm(sandbox, 8)
    await batches.run("g", "code", {"i": 1}, LIMITS)
    sandbox.opened[0].closed = True  # its process ended (idle time, a waiting job took its slot)
    await batches.run("g", "code", {"i": 2}, LIMITS)
    assert len(sandbox.opened) == 2 and sandbox.used == sandbox.opened


async def test_sessions_are_forgotten_once_idle_and_all_closed_at_close() -> None:
    sandbox = FakeSandbox()
    batches = warm(sandbox, 8)
    await asyncio.gather(*(batches.run(f"exec-{i}/a@1", "code", {"i": i}, LIMITS) for i in range(3)))
    assert not any(s.closed for s in sandbox.opened)
    sandbox.opened[0].closed = True
    await asyncio.sleep(0.1)  # past the idle time: the pool lets go of the sessions that ended
    assert sum(len(idle) for idle in batches._idle.values()) == 2
    await batches.close()
    assert all(s.closed for s in sandbox.opened) and not batches._idle


async def test_cancelling_one_attempt_leaves_the_batch_running_for_the_others() -> None:
    sandbox = FakeSandbox(delay=0.05)
    batches = warm(sandbox, 8)
    tasks = [asyncio.create_task(batches.run("g", "code", {"i": i}, LIMITS)) for i in range(3)]
    await asyncio.sleep(0.01)
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert [(await t).output for t in tasks[1:]] == [{"i": 1}, {"i": 2}]
    assert sandbox.cancelled == 0


async def test_cancelling_every_attempt_stops_the_batch() -> None:
    sandbox = FakeSandbox(delay=5.0)
    batches = warm(sandbox, 8)
    tasks = [asyncio.create_task(batches.run("g", "code", {"i": i}, LIMITS)) for i in range(2)]
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert sandbox.cancelled == 1


async def test_a_batch_that_fails_as_a_whole_fails_each_attempt_with_its_error() -> None:
    sandbox = FakeSandbox(fail=RuntimeError("sandbox gone"))
    batches = warm(sandbox, 8)
    results = await asyncio.gather(*(batches.run("g", "code", {"i": i}, LIMITS) for i in range(2)),
                                   return_exceptions=True)
    assert [str(r) for r in results] == ["sandbox gone", "sandbox gone"]
