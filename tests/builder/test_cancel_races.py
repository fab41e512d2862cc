"""CancelBuild right after StartBuild: the run fenced out mid-write leaves no unretrieved task exception."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from tdev.builder.v1 import builder_service_pb2 as pb2

from tests.builder.conftest import Builder, BuildState, get_build

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]


async def test_cancel_right_after_start_leaves_no_task_exception_unretrieved(builder: Builder) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    # asyncio reports a task whose exception nobody retrieved through the loop's handler when the task is
    # collected; catching every report here (not only LeaseLost) keeps the test honest about any other one.
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        build_ids = []
        for attempt in range(7):
            started = await builder.stub.StartBuild(pb2.StartBuildRequest(
                requirements="Sort the numbers in ascending order", request_id=f"cancel-race-{attempt}-{time.time()}"))
            await builder.stub.CancelBuild(pb2.CancelBuildRequest(build_id=started.build.build_id))
            build_ids.append(started.build.build_id)
            # Let the claim loop pick the next build up mid-write, as a CLI user's quick cancel would.
            await asyncio.sleep(0.05 * attempt)
        deadline = time.monotonic() + 30
        for build_id in build_ids:
            while (await get_build(builder.stub, build_id)).state != BuildState.STATE_CANCELLED:
                assert time.monotonic() < deadline, f"{build_id} never reached STATE_CANCELLED"
                await asyncio.sleep(0.1)
        # The fenced runs finish their in-flight writes a moment after the state changes.
        await asyncio.sleep(2.0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [(context.get("message"), repr(context.get("exception")), repr(context.get("future")))
            for context in reported] == []
