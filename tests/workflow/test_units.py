"""Pure parts of the workflow service: references, scheduling, planning, backoff, validation details."""

from __future__ import annotations

import random

import pytest

from tdev_common.clock import from_epoch
from workflow_svc import refs
from workflow_svc.domain import Batch, FailurePolicy, NodeSpec, NodeState, RetryPolicy, WorkflowSpec
from workflow_svc.planning import plan
from workflow_svc.run import backoff_seconds
from workflow_svc.scheduler import Scheduler
from workflow_svc.validation import Limits, structural_violations

pytestmark = pytest.mark.unit  # no I/O

LIMITS = Limits(max_nodes=10, max_timeout_seconds=60, max_concurrency=8)


def spec(*nodes: NodeSpec, **fields: object) -> WorkflowSpec:
    return WorkflowSpec(name="t", nodes=nodes, **fields)  # type: ignore[arg-type]


def n(node_id: str, *deps: str, **fields: object) -> NodeSpec:
    return NodeSpec(id=node_id, agent_id="agent", depends_on=deps, **fields)  # type: ignore[arg-type]


def test_resolve_reads_inputs_outputs_paths_and_context() -> None:
    value = {
        "a": {"$ref": "inputs.doc.items.1"},
        "b": [{"$ref": "nodes.fetch.output"}, {"$ref": "nodes.fetch.output.rows.0.id"}],
        "c": {"$ref": "context.attempt"},
        "d": {"nested": {"$ref": "inputs.flag"}},
        "not_a_ref": {"$ref": "x", "other": 1},
    }
    resolved = refs.resolve(
        value, {"doc": {"items": ["x", "y"]}, "flag": False}, {"fetch": {"rows": [{"id": 7}]}}, {"attempt": 2}
    )
    assert resolved == {
        "a": "y", "b": [{"rows": [{"id": 7}]}, 7], "c": 2, "d": {"nested": False},
        "not_a_ref": {"$ref": "x", "other": 1},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inputs.missing", '"inputs.missing": the execution has no input "missing"'),
        ("nodes.fetch.output.nope", '"nodes.fetch.output.nope": no key "nope"'),
        ("nodes.fetch.output.rows.5", '"nodes.fetch.output.rows.5": no list item "5"'),
        ("nodes.other.output", '"nodes.other.output": node "other" has no output'),
    ],
)
def test_resolve_names_the_reference_that_points_at_nothing(text: str, message: str) -> None:
    with pytest.raises(refs.RefError) as caught:
        refs.resolve({"$ref": text}, {}, {"fetch": {"rows": []}}, {})
    assert str(caught.value) == message


def test_parse_rejects_malformed_references() -> None:
    for text in ("", "inputs", "nodes.a", "nodes.a.input", "context.nope", "env.HOME", "inputs..x"):
        with pytest.raises(refs.RefError):
            refs.parse(text)


def test_scheduler_starts_children_as_soon_as_their_own_parents_finish() -> None:
    nodes = [n("root"), n("slow", "root"), n("fast", "root"), n("after", "fast"), n("sink", "slow", "after")]
    scheduler = Scheduler(nodes, {}, FailurePolicy.FAIL_FAST)
    assert scheduler.initial() == ["root"]
    assert scheduler.pop_ready(10) == ["root"]
    assert sorted(scheduler.succeeded("root")) == ["fast", "slow"]
    assert sorted(scheduler.pop_ready(10)) == ["fast", "slow"]
    assert scheduler.succeeded("fast") == ["after"]
    assert scheduler.pop_ready(10) == ["after"]
    assert scheduler.succeeded("after") == []
    assert scheduler.succeeded("slow") == ["sink"]


def test_scheduler_pops_by_priority_then_id_within_the_limit() -> None:
    nodes = [n("r"), n("b", "r"), n("a", "r"), n("c", "r")]
    scheduler = Scheduler(nodes, {"c": 5, "a": 1, "b": 1}, FailurePolicy.FAIL_FAST)
    scheduler.initial()
    scheduler.pop_ready(1)
    scheduler.succeeded("r")
    assert scheduler.pop_ready(2) == ["c", "a"]
    assert scheduler.pop_ready(2) == ["b"]


def test_fail_fast_cancels_running_and_skips_the_rest() -> None:
    nodes = [n("r"), n("bad", "r"), n("long", "r"), n("sink", "bad", "long")]
    scheduler = Scheduler(nodes, {}, FailurePolicy.FAIL_FAST)
    scheduler.initial()
    scheduler.pop_ready(5)
    scheduler.succeeded("r")
    scheduler.pop_ready(5)
    assert scheduler.failed_for_good("bad") == (["long"], ["sink"])
    assert scheduler.done and scheduler.failed == ["bad"]


def test_continue_skips_only_descendants_of_the_failure() -> None:
    nodes = [n("r"), n("bad", "r"), n("child", "bad"), n("grandchild", "child"), n("ok", "r")]
    scheduler = Scheduler(nodes, {}, FailurePolicy.CONTINUE)
    scheduler.initial()
    scheduler.pop_ready(5)
    scheduler.succeeded("r")
    scheduler.pop_ready(5)
    assert scheduler.failed_for_good("bad") == ([], ["child", "grandchild"])
    assert not scheduler.done
    scheduler.succeeded("ok")
    assert scheduler.done


def test_restore_keeps_finished_nodes_and_restarts_the_others() -> None:
    nodes = [n("a"), n("b", "a"), n("c", "a"), n("d", "b", "c")]
    scheduler = Scheduler(nodes, {}, FailurePolicy.FAIL_FAST)
    scheduler.restore({"a": NodeState.SUCCEEDED, "b": NodeState.SUCCEEDED, "c": NodeState.RUNNING})
    assert scheduler.settle_restored() == []
    assert scheduler.initial() == ["c"]


def test_plan_is_deterministic_and_weights_estimates() -> None:
    nodes = (n("s"), n("x", "s"), n("y", "s"), n("t", "x", "y"))
    first = plan(nodes, {})
    assert first == plan(nodes, {})
    assert first.critical_path == ("s", "x", "t")
    heavy_y = plan(nodes, {"y": 50.0})
    assert heavy_y.critical_path == ("s", "y", "t")
    assert heavy_y.priorities["y"] > heavy_y.priorities["x"]


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    node = n("a", retry_policy=RetryPolicy(max_retries=5, backoff_multiplier=3, initial_backoff=1, max_backoff=5))
    rng = random.Random(1)
    for failures, base in ((1, 1.0), (2, 3.0), (3, 5.0), (4, 5.0)):
        delay = backoff_seconds(node, failures, rng)
        assert base * 0.5 <= delay < base


def test_validation_limits_and_resources() -> None:
    problems = structural_violations(
        spec(*(n(f"n{i}", *([f"n{i - 1}"] if i else [])) for i in range(11)), max_concurrency=9), LIMITS)
    assert [(p.field, p.description) for p in problems] == [
        ("nodes", "11 nodes; at most 10 are allowed"), ("max_concurrency", "must be 0 to 8, got 9")]
    problems = structural_violations(spec(n("a", required_resources={"memory_mb": 8, "gpus": 1})), LIMITS)
    assert [(p.field, p.description) for p in problems] == [
        ("nodes[0].required_resources.memory_mb", "must be 64 to 16384, got 8"),
        ("nodes[0].required_resources.gpus", "unknown resource; known: cpu_seconds, memory_mb"),
    ]


def test_batches_merge_in_order_with_later_values_winning() -> None:
    from workflow_svc.domain import ExecutionState, ExecutionUpdate

    started, ended = from_epoch(1.0), from_epoch(2.0)
    first = Batch(execution=ExecutionUpdate(state=ExecutionState.RUNNING, start_time=started))
    first.merge(Batch(execution=ExecutionUpdate(state=ExecutionState.SUCCEEDED, end_time=ended), release=True))
    assert first.execution == ExecutionUpdate(state=ExecutionState.SUCCEEDED, start_time=started, end_time=ended)
    assert first.release


def test_a_full_watcher_buffer_switches_to_storage_instead_of_growing() -> None:
    from workflow_svc.bus import Subscription
    from workflow_svc.domain import Event, EventType

    subscription = Subscription("ex_1", max_buffer=3)
    events = [Event("ex_1", i, EventType.NODE_STARTED, from_epoch(0.0)) for i in range(1, 6)]
    subscription.push(events[:2])
    assert [e.sequence for e in subscription.buffer] == [1, 2] and not subscription.stale
    subscription.push(events[2:])
    assert not subscription.buffer and subscription.stale and subscription.wake.is_set()
