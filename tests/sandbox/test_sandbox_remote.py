"""The sandbox tier end to end: real worker processes on loopback, the RemoteBackend in this process."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from remote_helpers import (
    WorkerProcess,
    free_port,
    remote_sandbox,
    serving_workers,
    spare_worker,
    start_worker,
    wait_serving,
)
from sandbox_helpers import NORMAL_AGENT, hostile, wait_for
from tdev.sandbox.v1 import sandbox_service_pb2 as pb
from tdev.sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

from tdev_common.sandbox import Job, JobMode, Limits, OutcomeKind, SandboxUnavailableError, remote_wire

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

# Which worker ran a job: each worker's runtime maps its own uid range (the first line of uid_map).
WHO_AGENT = """
class Who:
    def execute(self, inputs):
        with open("/proc/self/uid_map") as f:
            return {"map": f.read().split()[1]}

    def get_capabilities(self):
        return {}
"""

BLOB_AGENT = """
class Blob:
    def execute(self, inputs):
        return {"blob": "x" * inputs["size"]}

    def get_capabilities(self):
        return {}
"""

SLEEPER = """
import time

class Sleeper:
    def execute(self, inputs):
        time.sleep(inputs.get("seconds", 60))
        return {"slept": True}

    def get_capabilities(self):
        return {}
"""


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(log_dir: Path) -> AsyncIterator[tuple[WorkerProcess, WorkerProcess]]:
    """Two workers shared by the module's tests that do not kill them."""
    async with serving_workers(log_dir, (0, 1)) as (first, second):
        yield first, second


@pytest.fixture
def spare(log_dir: Path) -> Iterator[WorkerProcess]:
    """A worker of one test's own (slot 2), for tests that kill it."""
    with spare_worker(log_dir) as worker:
        yield worker


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


async def test_jobs_go_round_robin_over_two_workers(pair: tuple[WorkerProcess, WorkerProcess]) -> None:
    first, second = pair
    sandbox = await remote_sandbox(first, second)
    try:
        maps = [(await sandbox.run(WHO_AGENT, {})).output for _ in range(6)]
    finally:
        await sandbox.close()

    expected = [str(w.uid_range[0]) for w in (first, second)]
    assert [m["map"] if m else None for m in maps] == expected * 3
    # The client takes the answers before the worker's handler returns and logs, so the lines may lag a little.
    assert await wait_for(lambda: all(w.log_text().count("sandbox_job.done") >= 3 for w in (first, second)),
                          timeout=10.0)
    assert not [w for w in (first, second) if "rpc_internal_error" in w.log_text()]


async def test_a_caller_that_stops_reading_ends_the_job_without_an_error(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    # The client leaves once it has the answers it wants, which cancels the call while the worker's handler
    # waits to send the next one (held here by HTTP/2 flow control: answers larger than the window, never
    # read). grpc then closes the handler's generator: that is the caller leaving, not an internal error.
    worker = pair[0]
    done_before = worker.log_text().count('"outcomes": 3')
    job = Job(JobMode.RUN, BLOB_AGENT, [{"size": 300_000}] * 3, Limits(max_output_bytes=1_000_000))
    async with grpc.aio.insecure_channel(worker.address) as channel:
        call = pb_grpc.SandboxServiceStub(channel).RunJob(remote_wire.job_request(job), timeout=30.0)
        first = await anext(aiter(call))
        assert first.index == 0 and len(first.outcome.output_json) > 300_000
        await asyncio.sleep(0.3)  # the handler is now waiting to send the third answer
        call.cancel()

    assert await wait_for(lambda: worker.log_text().count('"outcomes": 3') > done_before, timeout=5.0)
    assert "rpc_internal_error" not in worker.log_text()


async def test_outcomes_keep_types_and_order_through_the_tier(pair: tuple[WorkerProcess, WorkerProcess]) -> None:
    sandbox = await remote_sandbox(pair[0])
    try:
        outcomes = await sandbox.run_batch(NORMAL_AGENT, [{"x": 1}, {}, {"x": 2.5}, {"x": 3}])
        inspected = await sandbox.inspect(NORMAL_AGENT)
        segfault = await sandbox.run(hostile("segfault"), {})
    finally:
        await sandbox.close()

    assert [o.kind for o in outcomes] == [OutcomeKind.OK, OutcomeKind.ERROR, OutcomeKind.OK, OutcomeKind.OK]
    assert [o.output for o in outcomes] == [{"doubled": 2}, None, {"doubled": 5.0}, {"doubled": 6}]
    assert type(outcomes[0].output["doubled"]) is int  # type: ignore[index]
    assert outcomes[1].error is not None and outcomes[1].error.type == "KeyError"
    assert inspected.ok and inspected.class_name == "Doubler" and inspected.methods == ("execute", "get_capabilities")
    assert segfault.kind is OutcomeKind.KILLED and segfault.signal == 11
    assert sandbox.isolation["level"] == "remote" and "namespaces" in sandbox.isolation["summary"]


async def test_a_job_skips_a_worker_that_is_down(pair: tuple[WorkerProcess, WorkerProcess]) -> None:
    sandbox = await remote_sandbox(dead_address(), pair[0])
    try:
        outcomes = [await sandbox.run(NORMAL_AGENT, {"x": i}) for i in range(4)]
    finally:
        await sandbox.close()

    assert [o.output for o in outcomes] == [{"doubled": 2 * i} for i in range(4)]


async def test_the_tier_down_raises_sandbox_unavailable_at_once() -> None:
    sandbox = await remote_sandbox(dead_address(), dead_address())
    try:
        started = time.monotonic()
        with pytest.raises(SandboxUnavailableError, match="UNAVAILABLE"):
            await sandbox.run(NORMAL_AGENT, {"x": 1})
        elapsed = time.monotonic() - started
    finally:
        await sandbox.close()

    assert elapsed < 3.0


async def test_cancelling_the_call_kills_the_job_on_the_worker_within_a_second(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    worker = pair[0]
    sandbox = await remote_sandbox(worker)
    try:
        task = asyncio.create_task(sandbox.run(SLEEPER, {"seconds": 60}, Limits(timeout_seconds=60)))
        assert await wait_for(lambda: bool(worker.job_processes()), timeout=10.0)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_for(lambda: not worker.job_processes(), timeout=1.0), worker.job_processes()
        gone_after = time.monotonic() - started
        follow_up = await sandbox.run(NORMAL_AGENT, {"x": 4})
    finally:
        await sandbox.close()

    assert gone_after < 1.0
    assert follow_up.output == {"doubled": 8}


async def test_the_call_deadline_bounds_the_job(pair: tuple[WorkerProcess, WorkerProcess]) -> None:
    worker = pair[0]
    request = remote_wire.job_request(Job(JobMode.RUN, SLEEPER, [{"seconds": 60}], Limits(timeout_seconds=60)))
    async with grpc.aio.insecure_channel(worker.address) as channel:
        call = pb_grpc.SandboxServiceStub(channel).RunJob(request, timeout=1.0)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass

    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert await wait_for(lambda: not worker.job_processes(), timeout=1.0), worker.job_processes()


async def test_a_malformed_job_is_invalid_argument(pair: tuple[WorkerProcess, WorkerProcess]) -> None:
    request = pb.RunJobRequest(mode=pb.JOB_MODE_RUN, code=NORMAL_AGENT, inputs_json=["[1]"],
                               limits=pb.Limits(**Limits().to_wire()))
    async with grpc.aio.insecure_channel(pair[0].address) as channel:
        call = pb_grpc.SandboxServiceStub(channel).RunJob(request, timeout=5.0)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs_json[0] is not a JSON object" in (raised.value.details() or "")


async def test_kill_9_of_a_worker_mid_job_loses_only_that_job_and_leaves_no_process(
    spare: WorkerProcess, pair: tuple[WorkerProcess, WorkerProcess]
) -> None:
    await wait_serving(spare)
    sandbox = await remote_sandbox(spare, pair[1])
    try:
        task = asyncio.create_task(sandbox.run(SLEEPER, {"seconds": 60}, Limits(timeout_seconds=60)))
        assert await wait_for(lambda: bool(spare.job_processes()), timeout=10.0)
        spare.kill()
        lost = await asyncio.wait_for(task, 5.0)
        assert await wait_for(lambda: not spare.processes(), timeout=3.0), spare.processes()
        # the dead worker is skipped from now on (UNAVAILABLE before the job starts)
        after = [await sandbox.run(NORMAL_AGENT, {"x": i}) for i in range(3)]
    finally:
        await sandbox.close()

    assert lost.kind is OutcomeKind.KILLED and lost.signal is None
    assert "was lost during the job" in lost.detail
    assert [o.output for o in after] == [{"doubled": 0}, {"doubled": 2}, {"doubled": 4}]


async def test_inputs_after_a_lost_worker_are_killed_not_rerun_elsewhere(
    spare: WorkerProcess, pair: tuple[WorkerProcess, WorkerProcess]
) -> None:
    # Input 0 crashes its process (its outcome is final and streamed), input 1 runs in a fresh process and
    # sleeps: the worker dies then. Input 1 may have run, so it must not run again on the other worker.
    code = """
import ctypes, time

class Crash:
    def execute(self, inputs):
        if inputs.get("crash"):
            ctypes.string_at(0)
        time.sleep(60)
        return {}

    def get_capabilities(self):
        return {}
"""
    await wait_serving(spare)
    sandbox = await remote_sandbox(spare, pair[1])
    other_before = pair[1].log_text().count("sandbox_job.done")
    try:
        task = asyncio.create_task(sandbox.run_batch(code, [{"crash": True}, {}, {}], Limits(timeout_seconds=60)))
        assert await wait_for(lambda: bool(spare.job_processes()), timeout=10.0)
        await asyncio.sleep(0.3)  # input 0 crashed and input 1 runs in its fresh process
        assert await wait_for(lambda: bool(spare.job_processes()), timeout=10.0)
        spare.kill()
        outcomes = await asyncio.wait_for(task, 5.0)
    finally:
        await sandbox.close()

    assert outcomes[0].kind is OutcomeKind.KILLED and outcomes[0].signal == 11
    assert [o.kind for o in outcomes[1:]] == [OutcomeKind.KILLED, OutcomeKind.KILLED]
    assert all("was lost during the job" in o.detail for o in outcomes[1:])
    assert pair[1].log_text().count("sandbox_job.done") == other_before


async def test_worker_logs_never_hold_job_code_or_inputs(log_dir: Path) -> None:
    worker = start_worker(log_dir, 3)  # DEBUG logs, like every test worker
    code_marker, input_marker = "code-" + secrets.token_hex(8), "input-" + secrets.token_hex(8)
    code = f"# {code_marker}\n" + """
class Leaky:
    def execute(self, inputs):
        print(inputs["v"])
        raise ValueError(inputs["v"])

    def get_capabilities(self):
        return {"v": "CODE_MARKER"}
""".replace("CODE_MARKER", code_marker)
    try:
        await wait_serving(worker)
        sandbox = await remote_sandbox(worker)
        try:
            failed = await sandbox.run(code, {"v": input_marker})
            batch = await sandbox.run_batch(code, [{"v": input_marker}, {"v": input_marker}])
            inspected = await sandbox.inspect(code)
        finally:
            await sandbox.close()
        bad = pb.RunJobRequest(mode=pb.JOB_MODE_RUN, code=code, inputs_json=[json.dumps([input_marker])],
                               limits=pb.Limits(**Limits().to_wire()))
        async with grpc.aio.insecure_channel(worker.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                async for _ in pb_grpc.SandboxServiceStub(channel).RunJob(bad, timeout=5.0):
                    pass
    finally:
        assert worker.terminate() == 0
    logs = worker.log_text()

    assert failed.error is not None and failed.error.message == input_marker  # it did travel...
    assert [o.kind for o in batch] == [OutcomeKind.ERROR, OutcomeKind.ERROR]
    assert inspected.capabilities == {"v": code_marker}
    assert "rpc_failed" in logs and "sandbox_worker.started" in logs  # ...and the worker did log
    assert code_marker not in logs and input_marker not in logs  # ...but never the job


async def test_sigterm_lets_a_running_job_finish_then_stops(spare: WorkerProcess) -> None:
    await wait_serving(spare)
    sandbox = await remote_sandbox(spare)
    try:
        task = asyncio.create_task(sandbox.run(SLEEPER, {"seconds": 0.8}))
        assert await wait_for(lambda: bool(spare.job_processes()), timeout=10.0)
        code = await asyncio.to_thread(spare.terminate)
        outcome = await task
    finally:
        await sandbox.close()

    assert outcome.kind is OutcomeKind.OK and outcome.output == {"slept": True}
    assert code == 0
    assert not spare.processes()
