"""tdev_common.tasks.watch: a failed fire-and-forget task is logged once and never reported as "never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import structlog

from tdev_common.tasks import watch

pytestmark = pytest.mark.unit


class Expected(Exception):
    pass


async def _fail(error: Exception) -> None:
    raise error


async def test_watched_tasks_log_their_failure_and_leave_nothing_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    with structlog.testing.capture_logs() as logs:
        watch(asyncio.create_task(_fail(RuntimeError("boom"))), event="thing_failed", job="a")
        watch(asyncio.create_task(_fail(Expected("lease gone"))), event="thing_failed", expected=(Expected,))
        watch(asyncio.create_task(asyncio.sleep(0)), event="thing_failed")
        cancelled = watch(asyncio.create_task(asyncio.sleep(10)), event="thing_failed")
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0)
    assert reported == []
    assert [(e["event"], e["log_level"], e.get("job"), e.get("error")) for e in logs] == [
        ("thing_failed", "error", "a", None), ("thing_failed", "info", None, "Expected: lease gone")]
    assert isinstance(logs[0]["exc_info"], RuntimeError)


async def test_unwatched_failed_task_is_reported_never_retrieved() -> None:
    """The failure the helper prevents: the same task without watch is reported when collected."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    task = asyncio.create_task(_fail(RuntimeError("boom")))
    await asyncio.sleep(0.01)
    del task  # the last reference: collecting the task is what makes asyncio report it
    gc.collect()
    await asyncio.sleep(0)
    assert [context["message"] for context in reported] == ["Task exception was never retrieved"]
