"""One execution on this replica: its scheduler, its attempts in the sandbox and its write-behind writer.

A :class:`Run` drives the scheduler: a node starts as soon as its dependencies have succeeded and a slot is
free. Each tick's changes (events, node rows, outbox records) go to the :class:`Writer`, which commits them
in order, one fenced transaction per flush; events reach watchers only after their commit. The stored state
is therefore always a prefix of the run's history, which is what a restarted replica resumes from: finished
nodes keep their outputs, nodes that were running start again (nodes are at-least-once).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from tdev_common.clock import utc_now
from tdev_common.errors import DomainError
from tdev_common.tasks import watch
from workflow_svc import refs
from workflow_svc.capture import captured_case, should_capture
from workflow_svc.domain import (
    AttemptResult,
    Batch,
    Claim,
    ErrorInfo,
    Event,
    EventType,
    Execution,
    ExecutionState,
    ExecutionUpdate,
    FailurePolicy,
    JsonObject,
    NodeRun,
    NodeSpec,
    NodeState,
    OutcomeRecord,
)
from workflow_svc.ports import AgentNotFound, LeaseLost
from workflow_svc.routing import CANARY_ALIAS, STABLE_ALIAS, canary_bucket
from workflow_svc.scheduler import Scheduler

if TYPE_CHECKING:
    from workflow_svc.engine import Engine

log = structlog.get_logger("workflow_svc.engine")


def backoff_seconds(node: NodeSpec, failures: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * multiplier^(failures-1), capped, times [0.5, 1)."""
    policy = node.retry_policy
    base = min(policy.ceiling, policy.initial * policy.multiplier ** max(failures - 1, 0))
    return base * (0.5 + rng.random() / 2)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


@dataclass
class _Current:
    """The node (and attempt) an attempt task is running now: a task may run several, one after another."""

    node_id: str
    attempt: int


class Writer:
    """Commits a run's batches in order, merging whatever piles up while a commit is in flight.

    Commits start at most every ``flush_interval_seconds`` (group commit): the first change after a
    quiet spell is written at once, a busy run's changes are merged into fewer, larger transactions.
    The last batch of a run is written without waiting.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._last_start = 0.0
        self._queued: Batch | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, batch: Batch) -> None:
        """Queues a batch; never waits."""
        if batch.empty:
            return
        if self._queued is None:
            self._queued = batch
        else:
            self._queued.merge(batch)
        if self._task is None or self._task.done():
            self._idle.clear()
            # A write that fails outside its own retries (publishing to the bus, say) is logged, not lost.
            self._task = watch(asyncio.create_task(self._flush()), event="batch_flush_failed",
                               execution_id=self._run.execution_id)

    async def drain(self) -> None:
        """Waits until everything submitted is committed (or the lease is lost)."""
        await self._idle.wait()

    async def _flush(self) -> None:
        run = self._run
        engine = run.engine
        delay = 0.05
        interval = engine.settings.flush_interval_seconds
        try:
            while self._queued is not None:
                pause = self._last_start + interval - time.monotonic()
                if pause > 0 and not self._queued.release:
                    await asyncio.sleep(pause)
                batch, self._queued = self._queued, None
                self._last_start = time.monotonic()
                while True:
                    try:
                        await engine.repo.write(run.claim, batch, time.time(), engine.settings.lease_seconds)
                        break
                    except LeaseLost:
                        run.lease_lost()
                        return
                    except Exception as error:
                        if run.aborted:
                            return
                        # Storage trouble: keep the batch (and what piles up behind it) and retry; if the
                        # lease expires meanwhile, the fenced write is rejected and the run stops.
                        log.warning("batch_write_failed", execution_id=run.execution_id, error=str(error))
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        if self._queued is not None:
                            batch.merge(self._queued)
                            self._queued = None
                delay = 0.05
                if batch.events:
                    await engine.bus.published(run.execution_id, batch.events)
        finally:
            self._queued = None if run.aborted else self._queued
            if self._queued is None:
                self._idle.set()


class Run:
    """Drives one execution on this replica while it holds the lease."""

    def __init__(self, engine: Engine, claim: Claim, fresh: Execution | None = None) -> None:
        self.engine = engine
        self.claim = claim
        # A new execution as its creator stored it: no node ran and no event exists, so it need not be read.
        self._fresh = fresh
        self.execution_id = claim.execution_id
        self.writer = Writer(self)
        self.aborted = False
        self._wake = asyncio.Event()
        self._done: deque[tuple[str, int, AttemptResult | None]] = deque()
        self._due: deque[str] = deque()
        self._tasks: dict[str, asyncio.Task[AttemptResult]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._cancel_reason: str | None = None
        self._batch = Batch()
        self._seq = 0
        self._cancelled_tasks: list[asyncio.Task[AttemptResult]] = []
        # Resolved inputs of each node's latest attempt, kept only when the workflow captures cases.
        self._captured_inputs: dict[str, JsonObject] = {}
        self.task: asyncio.Task[None] | None = None

    # -- signals from outside ----------------------------------------------------------------------------------
    def request_cancel(self, reason: str) -> None:
        """Cancels the execution at the next tick."""
        if self._cancel_reason is None:
            self._cancel_reason = reason or "cancelled"
            self._wake.set()

    def lease_lost(self) -> None:
        """Another worker owns the execution now: stop at once, write nothing more."""
        if not self.aborted:
            log.warning("lease_lost", execution_id=self.execution_id, worker_id=self.claim.owner)
        self.abort()

    def abort(self) -> None:
        """Stops the run without writing (shutdown, lost lease)."""
        self.aborted = True
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self.aborted = True
        except Exception:
            log.exception("run_crashed", execution_id=self.execution_id)
            self.aborted = True
        finally:
            for task in self._tasks.values():
                task.cancel()
            for timer in self._timers.values():
                timer.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self.engine.forget(self)

    async def _run(self) -> None:
        engine = self.engine
        execution = self._fresh if self._fresh is not None else await engine.repo.get_execution(self.execution_id)
        self._fresh = None
        if execution is None or execution.state.is_terminal:
            return
        workflow = await engine.workflow(execution.workflow_id)
        self.execution = execution
        self.workflow = workflow
        self.nodes = workflow.nodes_by_id
        self._seq = execution.last_sequence
        stored = {run.node_id: run for run in execution.nodes}
        self.runs: dict[str, NodeRun] = {
            node_id: stored.get(node_id, NodeRun(node_id=node_id)) for node_id in self.nodes
        }
        self.outputs: dict[str, JsonObject] = {
            node_id: run.output or {} for node_id, run in self.runs.items() if run.state == NodeState.SUCCEEDED
        }
        spec = workflow.spec
        policy = execution.failure_policy
        self.scheduler = Scheduler(spec.nodes, workflow.plan.priorities, policy)
        self.scheduler.restore({node_id: run.state for node_id, run in self.runs.items()})
        self.limit = spec.max_concurrency or engine.settings.default_concurrency
        now = utc_now()
        self.start_time = execution.start_time or now
        resumed = execution.last_sequence > 0
        worker = engine.settings.worker_id
        if resumed:
            self._emit(EventType.EXECUTION_RESUMED, message=f"resumed by worker {worker}")
            # Nodes that were running when the previous owner stopped start again (at-least-once).
            for node_id, run in self.runs.items():
                if not run.state.is_terminal and run.state != NodeState.PENDING:
                    self._set(node_id, state=NodeState.PENDING)
        else:
            self._emit(EventType.EXECUTION_STARTED, message=f"started by worker {worker}")
        self._batch.execution = ExecutionUpdate(state=ExecutionState.RUNNING, start_time=self.start_time)
        if execution.cancel_requested:
            self._cancel_reason = await engine.cancel_reason(self.execution_id)
        for node_id in self.scheduler.settle_restored():
            self._skip(node_id, "a dependency failed")
        for node_id in self.scheduler.initial():
            self._scheduled(node_id)
        engine.prefetch(self.nodes.values())
        while not self.aborted:
            if self._cancel_reason is not None:
                await self._stop_all(self._cancel_reason)
                await self._finish(now=utc_now())
                return
            self._start_ready()
            if self.scheduler.done and not self._tasks:
                await self._finish(now=utc_now())
                return
            self._flush()
            await self._wake.wait()
            self._wake.clear()
            self._tick()
        await self.writer.drain()

    def _tick(self) -> None:
        while self._done:
            node_id, attempt, result = self._done.popleft()
            if self.scheduler.state[node_id] != NodeState.RUNNING or self.runs[node_id].attempt != attempt:
                continue  # cancelled meanwhile
            if result is None:
                result = AttemptResult(ok=False, error=ErrorInfo("cancelled", "the attempt was cancelled"))
            if result.ok:
                self._succeeded(node_id, result)
            else:
                self._failed(node_id, result)
        while self._due:
            node_id = self._due.popleft()
            self._timers.pop(node_id, None)
            if self.scheduler.state[node_id] == NodeState.RETRYING:
                self.scheduler.retry_due(node_id)
                self._scheduled(node_id)

    def _flush(self) -> None:
        if not self._batch.empty:
            self.writer.submit(self._batch)
            self._batch = Batch()

    # -- events and node rows -------------------------------------------------------------------------------
    def _emit(self, type_: EventType, **fields: Any) -> Event:
        self._seq += 1
        event = Event(
            execution_id=self.execution_id,
            sequence=self._seq,
            type=type_,
            time=utc_now(),
            worker_id=self.claim.owner,
            **fields,
        )
        self._batch.events.append(event)
        return event

    def _set(self, node_id: str, **changes: Any) -> NodeRun:
        # A new frozen snapshot per change: a queued batch keeps the state it was given.
        run = NodeRun(**{**self.runs[node_id].__dict__, **changes})
        self.runs[node_id] = run
        self._batch.nodes[node_id] = run
        return run

    def _scheduled(self, node_id: str) -> None:
        run = self.runs[node_id]
        self._set(node_id, state=NodeState.SCHEDULED)
        self._emit(EventType.NODE_SCHEDULED, node_id=node_id, attempt=run.attempt + 1)

    def _skip(self, node_id: str, why: str) -> None:
        self._set(node_id, state=NodeState.SKIPPED, end_time=utc_now())
        self._emit(EventType.NODE_SKIPPED, node_id=node_id, message=why)

    # -- node attempts ----------------------------------------------------------------------------------------
    def _start_ready(self, *, carry_on: bool = False) -> tuple[str, int] | None:
        """Starts the ready nodes that fit the free slots, each in a task of its own; with ``carry_on`` (from
        the task of an attempt that just finished) the first one is returned instead, for that task to run
        next: a chain's next node then starts in the same callback, ahead of the bookkeeping the finished
        one queued (commits, events), and without waiting an event-loop turn for a new task to start."""
        free = self.limit - len(self._tasks)
        if free <= 0 or not self.scheduler.has_ready:
            return None
        carried: tuple[str, int] | None = None
        for node_id in self.scheduler.pop_ready(free):
            attempt = self.runs[node_id].attempt + 1
            now = utc_now()
            self._set(node_id, state=NodeState.RUNNING, attempt=attempt, start_time=now, end_time=None)
            self._emit(EventType.NODE_STARTED, node_id=node_id, attempt=attempt)
            if carry_on and carried is None:
                carried = (node_id, attempt)
                self._tasks[node_id] = asyncio.current_task()  # type: ignore[assignment]
                continue
            self._start_task(node_id, attempt)
        return carried

    def _start_task(self, node_id: str, attempt: int) -> None:
        current = _Current(node_id, attempt)
        task = asyncio.create_task(self._attempt_and_report(current))
        self._tasks[node_id] = task
        task.add_done_callback(self._attempt_done(current))

    async def _attempt_and_report(self, current: _Current) -> AttemptResult:
        """Runs ``current``'s attempt and handles its result, then the attempts it hands this task
        (see :meth:`_start_ready`); ``current`` always names the node this task is on."""
        while True:
            node_id, attempt = current.node_id, current.attempt
            try:
                result = await self._attempt(node_id, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug, not an agent failure: fail the attempt, keep the run going
                log.exception("attempt_crashed", execution_id=self.execution_id, node_id=node_id)
                result = AttemptResult(ok=False, error=ErrorInfo("internal", str(error), node_id=node_id))
            if self._tasks.get(node_id) is asyncio.current_task():
                del self._tasks[node_id]
            self._done.append((node_id, attempt, result))
            carried = None
            if not self.aborted and self._cancel_reason is None:
                # On the critical path: handle the result and start what it unblocked right here, without
                # the extra event-loop hops of waking the run's loop first.
                self._tick()
                carried = self._start_ready(carry_on=True)
                self._flush()
            self._wake.set()
            if carried is None:
                return result
            current.node_id, current.attempt = carried

    def _attempt_done(self, current: _Current) -> Callable[[asyncio.Task[AttemptResult]], None]:
        def done(task: asyncio.Task[AttemptResult]) -> None:
            if not task.cancelled():
                return  # reported by the task itself
            if self._tasks.get(current.node_id) is task:
                del self._tasks[current.node_id]
            self._done.append((current.node_id, current.attempt, None))
            self._wake.set()

        return done

    async def _attempt(self, node_id: str, attempt: int) -> AttemptResult:
        node = self.nodes[node_id]
        engine = self.engine
        try:
            if node.agent_alias and not node.agent_version:
                node = await self._resolve_alias(node_id, node)
            agent = await engine.agent(node)
        except AgentNotFound as error:
            return AttemptResult(ok=False, error=ErrorInfo("agent_not_found", str(error), node_id=node_id))
        except DomainError as error:
            return AttemptResult(ok=False, error=ErrorInfo("registry_unavailable", error.message, node_id=node_id))
        try:
            inputs = refs.resolve(
                node.inputs,
                self.execution.inputs,
                self.outputs,
                {
                    "attempt": attempt,
                    "execution_id": self.execution_id,
                    "node_id": node_id,
                    "workflow_id": self.workflow.workflow_id,
                },
            ) if node.inputs else {}
        except refs.RefError as error:
            return AttemptResult(
                ok=False, error=ErrorInfo("ref_error", str(error), node_id=node_id), retryable=False
            )
        if self.workflow.spec.capture.enabled:
            self._captured_inputs[node_id] = inputs
        timeout = node.timeout_seconds or engine.settings.default_timeout_seconds
        # Only this execution's nodes of this very version (the runner adds the limits): never across executions.
        group = f"{self.execution_id}/{agent.agent_id}@{agent.version}" if agent.reuses_warm_process else ""
        result = await engine.runner.run(agent.code, inputs, timeout, node.required_resources, warm_group=group)
        if result.error is not None and not result.error.node_id:
            result = replace(result, error=replace(result.error, node_id=node_id))
        return result

    async def _resolve_alias(self, node_id: str, node: NodeSpec) -> NodeSpec:
        """The node with the version its alias points at now; through "stable", a canary takes its share of
        executions (chosen from the execution and agent ids, so every node of the agent in one execution runs
        the same version). Kept for the rest of the execution.

        Raises:
            AgentNotFound: the agent has no such alias any more.
        """
        targets = await self.engine.aliases(node.agent_id)
        target = targets.get(node.agent_alias)
        if target is None:
            raise AgentNotFound(f'agent {node.agent_id} has no alias "{node.agent_alias}"')
        version = target.version
        canary = targets.get(CANARY_ALIAS)
        if node.agent_alias == STABLE_ALIAS and canary is not None and canary_bucket(
                self.execution_id, node.agent_id) < canary.traffic_fraction:
            version = canary.version
        resolved = replace(node, agent_version=version)
        self.nodes[node_id] = resolved
        return resolved

    def _succeeded(self, node_id: str, result: AttemptResult) -> None:
        now = utc_now()
        output = result.output or {}
        self.outputs[node_id] = output
        run = self.runs[node_id]
        large = self.engine.settings.inline_output_bytes < _json_size(output)
        ref = f"outputs/{self.execution_id}/{node_id}" if large else ""
        self._set(
            node_id,
            state=NodeState.SUCCEEDED,
            output=output,
            output_ref=ref,
            error=None,
            end_time=now,
            duration_ms=result.duration_ms,
            agent_version=self.nodes[node_id].agent_version,
        )
        self._emit(
            EventType.NODE_SUCCEEDED,
            node_id=node_id,
            attempt=run.attempt,
            duration_ms=result.duration_ms,
            output=None if large else output,
            output_ref=ref,
        )
        self._record(node_id, run.attempt, True, result.duration_ms, now, "", output=output)
        for child in self.scheduler.succeeded(node_id):
            self._scheduled(child)

    def _failed(self, node_id: str, result: AttemptResult) -> None:
        now = utc_now()
        node = self.nodes[node_id]
        run = self.runs[node_id]
        failures = run.failures + 1
        error = result.error or ErrorInfo("error", "the attempt failed", node_id=node_id)
        self._record(node_id, run.attempt, False, result.duration_ms, now, error.type, error_message=error.message)
        common = {"failures": failures, "error": error, "end_time": now, "duration_ms": result.duration_ms,
                  "agent_version": self.nodes[node_id].agent_version}
        if result.retryable and failures <= node.retry_policy.max_retries and self._cancel_reason is None:
            delay = backoff_seconds(node, failures, self.engine.rng)
            self.scheduler.retrying(node_id)
            self._set(node_id, state=NodeState.RETRYING, **common)
            self._emit(
                EventType.NODE_RETRYING,
                node_id=node_id,
                attempt=run.attempt,
                duration_ms=result.duration_ms,
                error=error,
                backoff_seconds=delay,
                message=f"attempt {run.attempt} failed ({error.type}); retry {failures} of "
                f"{node.retry_policy.max_retries} in {delay:.3f}s",
            )
            self._timers[node_id] = asyncio.get_running_loop().call_later(delay, self._retry_due, node_id)
            return
        self._set(node_id, state=NodeState.FAILED, **common)
        self._emit(
            EventType.NODE_FAILED,
            node_id=node_id,
            attempt=run.attempt,
            duration_ms=result.duration_ms,
            error=error,
            message=f"failed for good after {run.attempt} attempt(s)",
        )
        cancel, skip = self.scheduler.failed_for_good(node_id)
        why = f'fail-fast: node "{node_id}" failed'
        if self.scheduler.policy != FailurePolicy.FAIL_FAST:
            why = f'dependency "{node_id}" failed'
        self._cancel_nodes(cancel, why)
        for other in skip:
            self._skip(other, why)

    def _retry_due(self, node_id: str) -> None:
        self._due.append(node_id)
        self._wake.set()

    def _record(self, node_id: str, attempt: int, success: bool, duration_ms: float, now: datetime, error: str,
                *, output: JsonObject | None = None, error_message: str = "") -> None:
        node = self.nodes[node_id]
        policy = self.workflow.spec.capture
        case = None
        inputs = self._captured_inputs.pop(node_id, None)
        if inputs is not None and should_capture(policy, self.execution_id, node_id, success):
            source = f"workflow {self.workflow.workflow_id} execution {self.execution_id} node {node_id}"
            case = captured_case(policy, inputs, output if success else None, error_message, source)
        self._batch.outbox.append(
            OutcomeRecord(
                record_id=f"{self.execution_id}/{node_id}/{attempt}",
                agent_id=node.agent_id,
                version=node.agent_version,
                success=success,
                duration_ms=duration_ms,
                finish_time=now,
                error_type=error,
                case=case,
            )
        )

    def _cancel_nodes(self, node_ids: list[str], why: str) -> None:
        now = utc_now()
        for node_id in node_ids:
            task = self._tasks.pop(node_id, None)
            if task is not None:
                task.cancel()
                self._cancelled_tasks.append(task)
            timer = self._timers.pop(node_id, None)
            if timer is not None:
                timer.cancel()
            run = self.runs[node_id]
            self._set(node_id, state=NodeState.CANCELLED, end_time=now)
            self._emit(EventType.NODE_CANCELLED, node_id=node_id, attempt=run.attempt, message=why)

    async def _stop_all(self, reason: str) -> None:
        cancel, skip = self.scheduler.stop(NodeState.SKIPPED)
        self._cancel_nodes(cancel, f"execution cancelled: {reason}")
        for node_id in skip:
            self._skip(node_id, f"execution cancelled: {reason}")

    # -- the end --------------------------------------------------------------------------------------------
    async def _finish(self, now: datetime) -> None:
        # Sandboxes of cancelled attempts are stopped before the end is announced.
        pending = [task for task in self._cancelled_tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        duration_ms = (now - self.start_time).total_seconds() * 1000
        update = ExecutionUpdate(end_time=now)
        if self._cancel_reason is not None:
            update.state = ExecutionState.CANCELLED
            update.error = ErrorInfo("cancelled", self._cancel_reason)
            self._emit(EventType.EXECUTION_CANCELLED, duration_ms=duration_ms, error=update.error,
                       message=self._cancel_reason)
        elif self.scheduler.failed:
            first = self.scheduler.failed[0]
            cause = self.runs[first].error or ErrorInfo("error", "failed")
            names = ", ".join(f'"{n}"' for n in self.scheduler.failed)
            update.state = ExecutionState.FAILED
            update.error = ErrorInfo(cause.type, f"node {names} failed: {cause.message}", cause.traceback, first)
            self._emit(EventType.EXECUTION_FAILED, duration_ms=duration_ms, error=update.error,
                       message=update.error.message)
        else:
            try:
                outputs = self._outputs()
            except refs.RefError as error:
                update.state = ExecutionState.FAILED
                update.error = ErrorInfo("output_error", str(error))
                self._emit(EventType.EXECUTION_FAILED, duration_ms=duration_ms, error=update.error,
                           message=update.error.message)
            else:
                update.state = ExecutionState.SUCCEEDED
                update.outputs = outputs
                large = self.engine.settings.inline_output_bytes < _json_size(outputs)
                self._emit(
                    EventType.EXECUTION_SUCCEEDED,
                    duration_ms=duration_ms,
                    output=None if large else outputs,
                    output_ref=f"outputs/{self.execution_id}" if large else "",
                )
        self._batch.execution = update if self._batch.execution is None else self._merge_update(update)
        self._batch.release = True
        self._flush()
        await self.writer.drain()

    def _merge_update(self, update: ExecutionUpdate) -> ExecutionUpdate:
        batch = Batch(execution=self._batch.execution)
        batch.merge(Batch(execution=update))
        assert batch.execution is not None
        return batch.execution

    def _outputs(self) -> JsonObject:
        mapping = self.workflow.spec.outputs
        if not mapping:
            return {node_id: self.outputs.get(node_id, {}) for node_id in self.scheduler.sinks()}
        context: dict[str, Any] = {}
        return {
            name: refs.resolve({"$ref": text}, self.execution.inputs, self.outputs, context)
            for name, text in mapping.items()
        }
