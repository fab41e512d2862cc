"""Sandbox sessions: one warm process takes a program's inputs batch by batch, answers final as they come."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sandbox_helpers import TEST_UID_BASE, TEST_UID_COUNT, batch, hostile, job_processes, outputs, wait_for

from tdev_common.sandbox import Job, Limits, OutcomeKind, Sandbox, SandboxClosedError, SandboxSettings
from tdev_common.sandbox.namespace_backend import NamespaceBackend

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

# Counts its calls in a module global and on the instance, reports its pid, and misbehaves on demand.
COUNTER = """
import os, time

CALLS = 0

class Counter:
    def __init__(self):
        self.calls = 0

    def execute(self, inputs):
        global CALLS
        CALLS += 1
        self.calls += 1
        action = inputs.get("action")
        if action == "raise":
            raise ValueError("bad input")
        if action == "exit":
            os._exit(3)
        if action == "sleep":
            time.sleep(inputs["seconds"])
        return {"n": inputs.get("n"), "pid": os.getpid(), "calls": self.calls, "module_calls": CALLS}

    def get_capabilities(self):
        return {}
"""


def settings(**overrides: Any) -> SandboxSettings:
    values: dict[str, Any] = {"uid_base": TEST_UID_BASE, "uid_count": TEST_UID_COUNT, "pool_size": 2,
                              "session_idle_seconds": 5.0, **overrides}
    return SandboxSettings(**values)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with await Sandbox.start(settings()) as sandbox:
        yield sandbox


async def test_batches_of_a_session_share_one_process_and_its_state(sandbox: Sandbox) -> None:
    session = sandbox.session(COUNTER)
    try:
        first = outputs(await batch(session, [{"n": 0}, {"n": 1}]))
        assert session.reusable
        second = outputs(await batch(session, [{"n": 2}]))
        third = outputs(await batch(session, [{"n": 3}, {"n": 4}]))
    finally:
        session.close()

    everything = first + second + third
    assert [o["n"] for o in everything] == [0, 1, 2, 3, 4]
    assert len({o["pid"] for o in everything}) == 1
    assert [o["calls"] for o in everything] == [1, 2, 3, 4, 5]  # one instance of the class
    assert [o["module_calls"] for o in everything] == [1, 2, 3, 4, 5]


async def test_an_answer_is_final_before_the_process_ends(sandbox: Sandbox) -> None:
    session = sandbox.session(COUNTER)
    try:
        started = time.monotonic()
        stream = session.stream([{"n": 0}, {"n": 1, "action": "sleep", "seconds": 2.0}])
        first = await anext(stream)
        first_after = time.monotonic() - started
        rest = [outcome async for outcome in stream]
    finally:
        session.close()

    assert first.kind is OutcomeKind.OK and first.output is not None and first.output["n"] == 0
    assert first_after < 1.5  # not held back until the sleeping input and the process are done
    assert [o.kind for o in rest] == [OutcomeKind.OK]


async def test_two_sessions_of_the_same_code_never_share_a_process(sandbox: Sandbox) -> None:
    one, two = sandbox.session(COUNTER), sandbox.session(COUNTER)
    try:
        (a,) = outputs(await batch(one, [{"n": 0}]))
        (b,) = outputs(await batch(two, [{"n": 0}]))
        (c,) = outputs(await batch(one, [{"n": 1}]))
    finally:
        one.close()
        two.close()

    assert a["pid"] == c["pid"] != b["pid"]
    assert (a["calls"], b["calls"], c["calls"]) == (1, 1, 2)


async def test_a_failing_input_fails_alone_and_a_crash_or_deadline_starts_a_fresh_process(sandbox: Sandbox) -> None:
    session = sandbox.session(COUNTER, Limits(timeout_seconds=0.5))
    try:
        outcomes = await batch(session, [
            {"n": 0},
            {"n": 1, "action": "raise"},
            {"n": 2},
            {"n": 3, "action": "exit"},
            {"n": 4},
            {"n": 5, "action": "sleep", "seconds": 30},
            {"n": 6},
        ])
        (after,) = outputs(await batch(session, [{"n": 7}]))
    finally:
        session.close()

    kinds = [o.kind for o in outcomes]
    assert kinds == [OutcomeKind.OK, OutcomeKind.ERROR, OutcomeKind.OK, OutcomeKind.ERROR, OutcomeKind.OK,
                     OutcomeKind.TIMEOUT, OutcomeKind.OK]
    assert outcomes[1].error is not None and outcomes[1].error.message == "bad input"
    assert outcomes[3].error is not None and outcomes[3].error.type == "ProcessExit"
    ok = [o.output or {} for o in outcomes if o.output is not None]
    assert [o["calls"] for o in ok] == [1, 3, 1, 1]  # the raise kept the process; the exit and deadline did not
    assert len({o["pid"] for o in ok}) == 3
    assert after["pid"] == ok[-1]["pid"] and after["calls"] == 2


async def test_an_idle_session_ends_its_process_and_the_next_batch_starts_a_fresh_one() -> None:
    async with await Sandbox.start(settings(session_idle_seconds=0.2)) as sandbox:
        session = sandbox.session(COUNTER)
        try:
            (first,) = outputs(await batch(session, [{"n": 0}]))
            assert session.reusable
            assert await wait_for(lambda: not session.reusable, timeout=3.0)
            assert await wait_for(lambda: not job_processes(), timeout=3.0)
            (second,) = outputs(await batch(session, [{"n": 1}]))
        finally:
            session.close()

    assert second["pid"] != first["pid"] and second["calls"] == 1


async def test_a_session_process_takes_at_most_session_max_inputs() -> None:
    async with await Sandbox.start(settings(session_max_inputs=3)) as sandbox:
        session = sandbox.session(COUNTER)
        try:
            got = outputs(await batch(session, [{"n": i} for i in range(4)]))
            got += outputs(await batch(session, [{"n": 4}, {"n": 5}, {"n": 6}]))
        finally:
            session.close()

    assert [o["calls"] for o in got] == [1, 2, 3, 1, 2, 3, 1]  # a fresh process after every third input
    assert len({o["pid"] for o in got}) == 3


async def test_close_kills_the_process_and_a_closed_session_refuses_work(sandbox: Sandbox) -> None:
    session = sandbox.session(COUNTER)
    outputs(await batch(session, [{"n": 0}]))
    assert job_processes()

    session.close()

    assert await wait_for(lambda: not job_processes(), timeout=3.0)
    with pytest.raises(SandboxClosedError):
        await batch(session, [{"n": 1}])


async def test_abandoning_a_batch_kills_its_process(sandbox: Sandbox) -> None:
    session = sandbox.session(COUNTER)
    task = asyncio.ensure_future(batch(session, [{"n": 0, "action": "sleep", "seconds": 30}]))
    assert await wait_for(lambda: bool(job_processes()), timeout=3.0)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await wait_for(lambda: not job_processes(), timeout=3.0)
    assert not session.reusable
    session.close()


async def test_a_job_waiting_for_a_slot_takes_it_from_an_idle_session() -> None:
    async with await Sandbox.start(settings(max_concurrency=1, session_idle_seconds=30.0)) as sandbox:
        session = sandbox.session(COUNTER)
        try:
            outputs(await batch(session, [{"n": 0}]))
            assert session.reusable  # idle, holding the only slot

            outcome = await asyncio.wait_for(sandbox.run(COUNTER, {"n": 1}), timeout=5.0)

            assert outcome.kind is OutcomeKind.OK
            assert not session.reusable  # it gave its slot up; its next batch starts a fresh process
            (again,) = outputs(await batch(session, [{"n": 2}]))
            assert again["calls"] == 1
        finally:
            session.close()


async def test_a_class_that_does_not_load_answers_every_input_of_the_batch(sandbox: Sandbox) -> None:
    session = sandbox.session("class Broken:\n    def __init__(self):\n        raise RuntimeError('no')\n"
                              "    def execute(self, inputs):\n        return {}\n")
    try:
        outcomes = await batch(session, [{}, {}, {}])
    finally:
        session.close()

    assert [o.kind for o in outcomes] == [OutcomeKind.ERROR] * 3
    assert all(o.error is not None and o.error.message == "no" for o in outcomes)


async def test_a_result_forged_for_another_input_is_invalid_and_ends_the_process(sandbox: Sandbox) -> None:
    session = sandbox.session(hostile("forged_wrong_index"))
    try:
        outcomes = await batch(session, [{"x": 1}, {"x": 2, "forge_index": 5}, {"x": 3}])
    finally:
        session.close()

    assert [o.kind for o in outcomes] == [OutcomeKind.OK, OutcomeKind.INVALID_OUTPUT, OutcomeKind.OK]
    assert [o.output for o in outcomes] == [{"real": 1}, None, {"real": 3}]


async def test_a_forged_answer_for_its_own_input_counts_as_the_agents_answer_and_ends_the_process(
    sandbox: Sandbox,
) -> None:
    # A session takes an answer when it arrives, so a forged one is the agent's answer (it could as well have
    # returned it). The runtime's own frame that follows is one too many: the process ends, the next input
    # starts a fresh one.
    session = sandbox.session(hostile("forged_success_then_raise"))
    try:
        (first,) = await batch(session, [{}])
        assert await wait_for(lambda: not session.reusable, timeout=3.0)
        (second,) = await batch(session, [{}])
    finally:
        session.close()

    assert first.kind is OutcomeKind.OK and first.output == {"forged": True}
    assert second.kind is OutcomeKind.OK and second.output == {"forged": True}


async def test_inputs_that_are_not_json_objects_are_refused_before_anything_runs(sandbox: Sandbox) -> None:
    session = sandbox.session(COUNTER)
    try:
        with pytest.raises(ValueError):
            await batch(session, [{"n": 0}, ["not", "an", "object"]])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            await batch(session, [{"n": {1, 2}}])
        (good,) = outputs(await batch(session, [{"n": 1}]))
    finally:
        session.close()

    assert good["calls"] == 1
    assert await wait_for(lambda: not job_processes(), timeout=3.0)


class _NoSessions(NamespaceBackend):
    """A local backend that, like the remote tier, runs every job in a process of its own."""

    async def open_session(self, job: Job, *, idle_seconds: float, max_inputs: int) -> None:
        return None


async def test_over_a_backend_without_sessions_every_batch_runs_in_a_fresh_process() -> None:
    async with await Sandbox.start(settings(), backends=[_NoSessions]) as sandbox:
        session = sandbox.session(COUNTER)
        try:
            first = outputs(await batch(session, [{"n": 0}, {"n": 1}]))
            second = outputs(await batch(session, [{"n": 2}]))
        finally:
            session.close()

    assert [o["calls"] for o in first + second] == [1, 2, 1]  # a batch shares a process, batches do not
    assert first[0]["pid"] == first[1]["pid"] != second[0]["pid"]


async def test_a_warm_process_killed_while_idle_ends_the_session_and_the_next_batch_starts_fresh(
    sandbox: Sandbox,
) -> None:
    session = sandbox.session(COUNTER)
    try:
        (first,) = outputs(await batch(session, [{"n": 0}]))
        (idle,) = job_processes()
        os.kill(idle.pid, signal.SIGKILL)
        assert await wait_for(lambda: not session.reusable, timeout=3.0)
        (second,) = outputs(await batch(session, [{"n": 1}]))
    finally:
        session.close()

    assert first["calls"] == 1 and second["calls"] == 1
