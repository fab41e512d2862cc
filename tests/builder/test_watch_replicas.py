"""A watcher on another replica hears of a build's events through Redis at once, not at its safety poll."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from tdev.builder.v1 import builder_service_pb2 as pb2

from tests.builder.conftest import REQUIREMENTS, BuildState, Event, Mesh, assert_gapless, get_build, watch
from tests.conftest import REDIS_URL, require_service

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]
QUIET_POLL_SECONDS = 30.0


async def test_a_watcher_on_another_replica_follows_a_build_live(mesh: Mesh) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    common = mesh.common(redis_url=REDIS_URL)
    channel = f"tdev:test:builder:{uuid.uuid4().hex[:8]}"
    database = await mesh.new_database()
    runner = await mesh.start_builder(database_url=database, common=common, redis_channel=channel,
                                      watch_poll_seconds=QUIET_POLL_SECONDS)
    # This replica runs nothing itself: every event it streams was written by the other one.
    watcher = await mesh.start_builder(database_url=database, common=common, redis_channel=channel,
                                       watch_poll_seconds=QUIET_POLL_SECONDS, max_active_builds=0)
    requirements = (REQUIREMENTS / "word_frequency.txt").read_text()
    started = (await watcher.stub.StartBuild(pb2.StartBuildRequest(requirements=requirements))).build
    began = time.monotonic()
    events = await asyncio.wait_for(watch(watcher.stub, started.build_id), timeout=QUIET_POLL_SECONDS / 2)
    followed_for = time.monotonic() - began
    assert_gapless(events)
    assert events[-1].type == Event.TYPE_BUILD_SUCCEEDED
    assert (await get_build(runner.stub, started.build_id)).state == BuildState.STATE_SUCCEEDED
    # Far below the safety poll: the watcher was woken by the notices, not by polling.
    assert followed_for < QUIET_POLL_SECONDS / 3, followed_for
