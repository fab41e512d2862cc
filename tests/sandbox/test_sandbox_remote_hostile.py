"""The hostile-agent corpus through the sandbox tier: a real worker process, the same expected outcomes.

Reuses test_sandbox_hostile's cases and test; only the ``sandbox`` fixture differs. The worker inherits
this process's environment, planted secret included, so the corpus also shows the tier does not leak it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import test_sandbox_hostile
from remote_helpers import remote_sandbox, start_worker, wait_serving
from sandbox_helpers import descendants, host_processes, wait_for
from test_sandbox_hostile import (  # noqa: F401 (the host fixture and the tests are collected here too)
    Host,
    test_a_result_forged_for_an_earlier_input_of_a_batch_voids_that_input_too,
    test_fill_disk_leaves_the_next_execution_an_empty_work_dir,
    test_forged_result_for_another_input_of_a_batch_is_invalid_and_the_rest_still_run,
    test_forged_success_then_raise_in_a_batch_is_never_reported_as_success,
    test_hostile_agent_is_contained,
)

from tdev_common.sandbox import Sandbox

host = test_sandbox_hostile.host  # the same planted secret, canary and listener, one per module

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(host: Host, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    # Slot 0 is the start of the test uid range, which the shared checks (job_processes, double fork) scan.
    worker = start_worker(tmp_path_factory.mktemp("worker"), 0, inherit_env=True,
                          extra_env={"TDEV_SANDBOX_WORK_DIR_BYTES": str(16 * 1024 * 1024)})
    before = descendants(os.getpid())
    try:
        await wait_serving(worker)
        remote = await remote_sandbox(worker)
        try:
            assert remote.isolation["level"] == "remote"
            yield remote
        finally:
            await remote.close()
    finally:
        assert worker.terminate() == 0
        assert await wait_for(lambda: not host_processes()), f"left behind: {host_processes()}"
        assert await wait_for(lambda: descendants(os.getpid()) <= before)
        assert host.secret not in worker.log_text()
