"""Warm-process reuse: nodes of one opted-in agent version in one execution share a process; nothing else does.

Nodes that start together share one as a batch; a later node of the group (the next of a chain) takes the
warm process of an earlier one that is idle.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from tdev.registry.v1 import registry_service_pb2 as reg_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2

from tests.workflow.conftest import (
    Event,
    Mesh,
    NodeState,
    State,
    Workflows,
    create,
    definition,
    eventually,
    execute,
    has_job_processes,
    job_processes_under,
    node,
    of_type,
    plain,
)

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module", autouse=True)
def _patient_warm_processes() -> Iterator[None]:
    """A warm process waits 1 s for its group's next node here (0.1 s by default): the chains' reuse must
    not depend on how loaded the test machine is. Set before the module's services start."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TDEV_SANDBOX_SESSION_IDLE_SECONDS", "1.0")
        yield

# A token drawn once per process, a module-level call count and a per-instance one: together they tell which
# process and which instance ran each node, and in what order.
_BODY = '''
import os
import time

TOKEN = os.urandom(8).hex()
CALLS = 0


class {name}:
    """Test agent."""

    def __init__(self) -> None:
        self.seen = 0

    def get_capabilities(self) -> dict:
        return {{"name": "{name}"{flag}}}

    def execute(self, inputs: dict) -> dict:
        global CALLS
        CALLS += 1
        self.seen += 1
        if inputs.get("fail"):
            raise ValueError("asked to fail")
        if inputs.get("seconds"):
            time.sleep(inputs["seconds"])
        return {{"token": TOKEN, "calls": CALLS, "seen": self.seen, "value": inputs.get("value")}}
'''


async def _register(mesh: Mesh, name: str, opted_in: bool) -> Any:
    flag = ', "reuse_warm_process": True' if opted_in else ""
    code = _BODY.format(name=name.title().replace("_", ""), flag=flag)
    return (await mesh.registry_stub.RegisterAgent(reg_pb2.RegisterAgentRequest(name=name, code=code))).agent


def _fan_out(name: str, agent_id: str, count: int) -> Any:
    middle = [node(f"n{i}", agent_id, {"value": i}, ["start"]) for i in range(count)]
    return definition(name, [node("start", agent_id, {"value": -1}), *middle])


def _outputs(events: list[Event]) -> dict[str, dict[str, Any]]:
    return {e.node_id: plain(e.output) for e in of_type(events, Event.TYPE_NODE_SUCCEEDED) if e.node_id != "start"}


async def test_the_registry_reports_the_opt_in(mesh: Mesh) -> None:
    assert (await _register(mesh, "warm_flag_on", True)).reuses_warm_process is True
    assert (await _register(mesh, "warm_flag_off", False)).reuses_warm_process is False


async def test_nodes_started_together_share_one_process_and_instance_but_keep_their_own_inputs(
    mesh: Mesh, workflows: Workflows,
) -> None:
    agent = await _register(mesh, "warm_share", True)
    stored = await create(workflows.stub, _fan_out("warm-share", agent.agent_id, 6))
    events = await execute(workflows.stub, stored.workflow_id)
    assert events[-1].type == Event.TYPE_EXECUTION_SUCCEEDED
    outputs = _outputs(events)
    assert {node_id: output["value"] for node_id, output in outputs.items()} == {f"n{i}": i for i in range(6)}
    assert len({output["token"] for output in outputs.values()}) == 1  # one process for the six
    start = next(plain(e.output) for e in of_type(events, Event.TYPE_NODE_SUCCEEDED) if e.node_id == "start")
    # ... the one "start" ran in, idle when they became ready, with its instance of the class.
    assert {output["token"] for output in outputs.values()} == {start["token"]}
    assert start["seen"] == 1 and sorted(output["seen"] for output in outputs.values()) == [2, 3, 4, 5, 6, 7]

    again = _outputs(await execute(workflows.stub, stored.workflow_id))
    assert {o["token"] for o in again.values()}.isdisjoint({o["token"] for o in outputs.values()})
    assert sorted(o["seen"] for o in again.values()) == [2, 3, 4, 5, 6, 7]  # never across executions


def _chain(name: str, agent_id: str, count: int, **extra: Any) -> Any:
    return definition(name, [node(f"c{i}", agent_id, {"value": i}, [f"c{i - 1}"] if i else [], **extra)
                             for i in range(count)])


async def test_a_chain_runs_in_one_warm_process_and_a_new_execution_never_reuses_it(
    mesh: Mesh, workflows: Workflows,
) -> None:
    agent = await _register(mesh, "warm_chain", True)
    stored = await create(workflows.stub, _chain("warm-chain", agent.agent_id, 5))

    first = _outputs(await execute(workflows.stub, stored.workflow_id))
    second = _outputs(await execute(workflows.stub, stored.workflow_id))

    for outputs in (first, second):
        assert {node_id: o["value"] for node_id, o in outputs.items()} == {f"c{i}": i for i in range(5)}
        assert len({o["token"] for o in outputs.values()}) == 1
        assert [outputs[f"c{i}"]["seen"] for i in range(5)] == [1, 2, 3, 4, 5]  # in chain order, one instance
    assert {o["token"] for o in first.values()}.isdisjoint({o["token"] for o in second.values()})


async def test_a_chain_of_an_agent_without_the_opt_in_runs_every_node_fresh(mesh: Mesh, workflows: Workflows) -> None:
    agent = await _register(mesh, "warm_chain_off", False)
    stored = await create(workflows.stub, _chain("warm-chain-off", agent.agent_id, 4))

    outputs = _outputs(await execute(workflows.stub, stored.workflow_id))

    assert len({o["token"] for o in outputs.values()}) == 4
    assert {o["seen"] for o in outputs.values()} == {1}


async def test_nodes_with_other_limits_never_take_the_warm_process(mesh: Mesh, workflows: Workflows) -> None:
    agent = await _register(mesh, "warm_limits", True)
    stored = await create(workflows.stub, definition("warm-limits", [
        node("a", agent.agent_id, {"value": 0}),
        node("b", agent.agent_id, {"value": 1}, ["a"], timeout_seconds=7.0),
        node("c", agent.agent_id, {"value": 2}, ["b"]),
    ]))

    events = await execute(workflows.stub, stored.workflow_id)

    done = {e.node_id: plain(e.output) for e in of_type(events, Event.TYPE_NODE_SUCCEEDED)}
    assert done["a"]["token"] == done["c"]["token"] != done["b"]["token"]
    assert (done["a"]["seen"], done["b"]["seen"], done["c"]["seen"]) == (1, 1, 2)


async def test_a_node_of_a_shared_process_succeeds_as_soon_as_it_is_answered(mesh: Mesh, workflows: Workflows) -> None:
    agent = await _register(mesh, "warm_prompt", True)
    stored = await create(workflows.stub, definition("warm-prompt", [
        node("start", agent.agent_id, {"value": -1}),
        node("quick", agent.agent_id, {"value": 0}, ["start"]),
        node("slow", agent.agent_id, {"value": 1, "seconds": 1.5}, ["start"]),
    ]))  # equal priority: the batch runs them in id order, "quick" first

    events = await execute(workflows.stub, stored.workflow_id)

    succeeded = {e.node_id: e for e in of_type(events, Event.TYPE_NODE_SUCCEEDED)}
    assert plain(succeeded["quick"].output)["token"] == plain(succeeded["slow"].output)["token"]
    gap = succeeded["slow"].time.ToMicroseconds() - succeeded["quick"].time.ToMicroseconds()
    assert gap > 1_000_000  # "quick" was not held back until "slow" and the process were done


async def test_without_the_opt_in_every_node_gets_a_fresh_process(mesh: Mesh, workflows: Workflows) -> None:
    agent = await _register(mesh, "warm_none", False)
    stored = await create(workflows.stub, _fan_out("warm-none", agent.agent_id, 6))
    outputs = _outputs(await execute(workflows.stub, stored.workflow_id))
    assert len({output["token"] for output in outputs.values()}) == 6
    assert {output["calls"] for output in outputs.values()} == {1}


async def test_a_failing_or_timed_out_node_fails_alone_and_the_rest_go_on_in_a_fresh_process(
    mesh: Mesh, workflows: Workflows,
) -> None:
    agent = await _register(mesh, "warm_faults", True)
    # Equal limits for all, so all six share a batch; n1 raises, n3 outlives its deadline.
    limits = {"timeout_seconds": 1.0, "retry_policy": {"max_retries": 0}}
    stored = await create(workflows.stub, definition("warm-faults", [
        node("start", agent.agent_id, {"value": -1}),
        *[node(f"n{i}", agent.agent_id, {"value": i, **({"fail": True} if i == 1 else {}),
                                         **({"seconds": 30} if i == 3 else {})}, ["start"], **limits)
          for i in range(6)],
    ], failure_policy="FAILURE_POLICY_CONTINUE"))
    events = await execute(workflows.stub, stored.workflow_id)
    failed = {e.node_id: e.error.type for e in of_type(events, Event.TYPE_NODE_FAILED)}
    assert failed == {"n1": "ValueError", "n3": "timeout"}
    outputs = _outputs(events)
    assert sorted(outputs) == ["n0", "n2", "n4", "n5"]
    assert {node_id: output["value"] for node_id, output in outputs.items()} == {"n0": 0, "n2": 2, "n4": 4, "n5": 5}
    by_token = Counter(output["token"] for output in outputs.values())
    # The timeout killed the process: the inputs after it ran in another one, with a new instance.
    assert len(by_token) == 2
    assert sorted(outputs[n]["seen"] for n in ("n4", "n5")) == [1, 2]


async def test_at_most_warm_batch_size_nodes_share_a_process(mesh: Mesh) -> None:
    small = await mesh.start_workflows(warm_batch_size=3)
    agent = await _register(mesh, "warm_small", True)
    stored = await create(small.stub, _fan_out("warm-small", agent.agent_id, 7))
    outputs = _outputs(await execute(small.stub, stored.workflow_id))
    assert sorted(outputs) == [f"n{i}" for i in range(7)]
    per_process = Counter(output["token"] for output in outputs.values())
    assert len(per_process) >= 3 and max(per_process.values()) == 3


async def test_cancelling_the_execution_kills_the_shared_process_at_once(mesh: Mesh, workflows: Workflows) -> None:
    agent = await _register(mesh, "warm_cancel", True)
    stored = await create(workflows.stub, definition("warm-cancel", [
        node("start", agent.agent_id, {"value": -1}),
        *[node(f"n{i}", agent.agent_id, {"value": i, "seconds": 30}, ["start"]) for i in range(3)],
    ]))
    started = await workflows.stub.StartExecution(pb2.StartExecutionRequest(workflow_id=stored.workflow_id))
    execution_id = started.execution.execution_id
    await eventually(lambda: _running(workflows, execution_id, 3), timeout=10)
    await eventually(has_job_processes, timeout=5)
    began = time.monotonic()
    answer = await workflows.stub.CancelExecution(pb2.CancelExecutionRequest(execution_id=execution_id))
    assert time.monotonic() - began < 1.0
    assert answer.execution.state == State.STATE_CANCELLED
    assert {n.node_id: n.state for n in answer.execution.nodes if n.node_id != "start"} == {
        f"n{i}": NodeState.STATE_CANCELLED for i in range(3)}
    await eventually(_no_job_processes, timeout=2)


async def _running(workflows: Workflows, execution_id: str, count: int) -> bool:
    request = pb2.GetExecutionRequest(execution_id=execution_id)
    execution = (await workflows.stub.GetExecution(request)).execution
    return sum(n.state == NodeState.STATE_RUNNING for n in execution.nodes) == count


async def _no_job_processes() -> bool:
    return not job_processes_under(os.getpid())
