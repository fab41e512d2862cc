"""Sessions over the sandbox tier: one RunSession call keeps a warm process on one worker between batches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from remote_helpers import WorkerProcess, free_port, remote_sandbox, serving_workers, spare_worker, wait_serving
from sandbox_helpers import batch, outputs, wait_for
from tdev.sandbox.v1 import sandbox_service_pb2 as pb
from tdev.sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

from tdev_common.sandbox import OutcomeKind, SandboxUnavailableError

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

# Counts its calls on the instance, tells its process and worker (the uid map), misbehaves on demand.
COUNTER = """
import os, time

class Counter:
    def __init__(self):
        self.calls = 0

    def execute(self, inputs):
        self.calls += 1
        if inputs.get("exit"):
            os._exit(3)
        time.sleep(inputs.get("seconds", 0))
        with open("/proc/self/uid_map") as f:
            worker = f.read().split()[1]
        return {"n": inputs.get("n"), "calls": self.calls, "pid": os.getpid(), "worker": worker}

    def get_capabilities(self):
        return {}
"""
WORKER_IDLE_SECONDS = 0.5


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session-workers")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(log_dir: Path) -> AsyncIterator[tuple[WorkerProcess, WorkerProcess]]:
    idle = {"TDEV_SANDBOX_SESSION_IDLE_SECONDS": str(WORKER_IDLE_SECONDS)}
    async with serving_workers(log_dir, (0, 1), idle) as (first, second):
        yield first, second


@pytest.fixture
def spare(log_dir: Path) -> Iterator[WorkerProcess]:
    with spare_worker(log_dir) as worker:
        yield worker


async def test_batches_of_a_remote_session_share_one_warm_process_and_sessions_spread_over_workers(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    sandbox = await remote_sandbox(*pair)
    one, two = sandbox.session(COUNTER), sandbox.session(COUNTER)
    try:
        got = outputs(await batch(one, [{"n": 0}, {"n": 1}]))
        got += outputs(await batch(one, [{"n": 2}]))
        other = outputs(await batch(two, [{"n": 0}]))
        got += outputs(await batch(one, [{"n": 3}]))
    finally:
        one.close()
        two.close()
        await sandbox.close()

    assert [o["n"] for o in got] == [0, 1, 2, 3]
    assert [o["calls"] for o in got] == [1, 2, 3, 4]
    assert len({(o["pid"], o["worker"]) for o in got}) == 1
    assert other[0]["calls"] == 1 and other[0]["worker"] != got[0]["worker"]  # the next session, the next worker
    assert {other[0]["worker"], got[0]["worker"]} == {str(w.uid_range[0]) for w in pair}


async def test_after_the_workers_idle_time_the_next_batch_runs_once_in_a_fresh_process(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    sandbox = await remote_sandbox(pair[0])
    session = sandbox.session(COUNTER)
    try:
        (first,) = outputs(await batch(session, [{"n": 0}]))
        assert await wait_for(lambda: not session.reusable, timeout=WORKER_IDLE_SECONDS + 3)  # the call ended
        assert await wait_for(lambda: not pair[0].job_processes(), timeout=3)
        (second,) = outputs(await batch(session, [{"n": 1}]))
    finally:
        session.close()
        await sandbox.close()

    assert first["calls"] == 1 and second["calls"] == 1  # a fresh process, and the batch ran (once)


async def test_a_crash_in_a_remote_session_fails_that_input_and_the_next_starts_fresh(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    sandbox = await remote_sandbox(pair[0])
    session = sandbox.session(COUNTER)
    try:
        outcomes = await batch(session, [{"n": 0}, {"n": 1, "exit": True}, {"n": 2}])
        (after,) = outputs(await batch(session, [{"n": 3}]))
    finally:
        session.close()
        await sandbox.close()

    assert [o.kind for o in outcomes] == [OutcomeKind.OK, OutcomeKind.ERROR, OutcomeKind.OK]
    assert outcomes[1].error is not None and outcomes[1].error.type == "ProcessExit"
    assert [o.output["calls"] for o in (outcomes[0], outcomes[2]) if o.output] == [1, 1]
    assert after["calls"] == 2 and outcomes[2].output is not None and after["pid"] == outcomes[2].output["pid"]


async def test_a_session_skips_a_worker_that_is_down_and_the_tier_down_is_unavailable(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    sandbox = await remote_sandbox(dead, pair[0])
    try:
        sessions = [sandbox.session(COUNTER) for _ in range(2)]  # one of them starts on the dead worker
        answers = [outputs(await batch(s, [{"n": i}])) for i, s in enumerate(sessions)]
    finally:
        for s in sessions:
            s.close()
        await sandbox.close()
    assert [a[0]["n"] for a in answers] == [0, 1]

    down = await remote_sandbox(dead, f"127.0.0.1:{free_port()}")
    session = down.session(COUNTER)
    try:
        with pytest.raises(SandboxUnavailableError):
            await asyncio.wait_for(batch(session, [{"n": 0}]), timeout=10)
    finally:
        session.close()
        await down.close()


async def test_abandoning_a_remote_batch_kills_its_process_on_the_worker(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    sandbox = await remote_sandbox(pair[0])
    session = sandbox.session(COUNTER)
    try:
        task = asyncio.ensure_future(batch(session, [{"n": 0, "seconds": 30}]))
        assert await wait_for(lambda: bool(pair[0].job_processes()), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_for(lambda: not pair[0].job_processes(), timeout=2)
    finally:
        session.close()
        await sandbox.close()


async def test_a_lost_worker_fails_the_batch_as_killed_and_never_reruns_it(spare: WorkerProcess) -> None:
    await wait_serving(spare)
    sandbox = await remote_sandbox(spare)
    session = sandbox.session(COUNTER)
    try:
        outputs(await batch(session, [{"n": 0}]))
        task = asyncio.ensure_future(batch(session, [{"n": 1, "seconds": 30}, {"n": 2}]))
        await asyncio.sleep(0.5)  # the warm process counts as a job process already: give input 1 time to start
        assert not task.done() and session.busy
        spare.kill()
        outcomes = await asyncio.wait_for(task, timeout=10)
    finally:
        session.close()
        await sandbox.close()

    assert [o.kind for o in outcomes] == [OutcomeKind.KILLED, OutcomeKind.KILLED]
    assert "lost" in outcomes[0].detail


async def test_malformed_session_requests_are_invalid_argument(pair: tuple[WorkerProcess, WorkerProcess]) -> None:
    limits = pb.Limits(timeout_seconds=5, cpu_seconds=5, memory_bytes=256 << 20, max_output_bytes=1 << 20,
                       max_stdout_bytes=1024, max_file_bytes=1 << 20, max_open_files=64, max_processes=1)
    async with grpc.aio.insecure_channel(pair[0].address) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)

        no_limits = stub.RunSession()
        await no_limits.write(pb.RunSessionRequest(code=COUNTER, inputs_json=[json.dumps({"n": 0})]))
        assert await no_limits.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "limits" in (await no_limits.details() or "")

        bad_later = stub.RunSession()
        await bad_later.write(pb.RunSessionRequest(code=COUNTER, limits=limits, inputs_json=[json.dumps({"n": 0})]))
        first = await bad_later.read()
        assert first.index == 0 and first.outcome.kind == pb.OUTCOME_KIND_OK
        await bad_later.write(pb.RunSessionRequest(inputs_json=["[1, 2]"]))
        assert await bad_later.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "inputs_json[0]" in (await bad_later.details() or "")
    assert await wait_for(lambda: not pair[0].job_processes(), timeout=3)
