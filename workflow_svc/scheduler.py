"""Dependency-driven scheduling of one execution as a pure state machine (no I/O, no clocks).

A node becomes ready the moment its last dependency succeeds (not level by level); ready nodes leave
in priority order (longest remaining path first, then id). The engine tells the scheduler what
happened and asks it what may run next.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from workflow_svc.domain import FailurePolicy, NodeSpec, NodeState


class Scheduler:
    """Node states of one execution and the ready queue."""

    def __init__(
        self, nodes: Iterable[NodeSpec], priorities: Mapping[str, int], policy: FailurePolicy
    ) -> None:
        self.policy = FailurePolicy.CONTINUE if policy == FailurePolicy.CONTINUE else FailurePolicy.FAIL_FAST
        self.order: list[str] = []
        self.children: dict[str, list[str]] = {}
        self.parents: dict[str, tuple[str, ...]] = {}
        for node in nodes:
            self.order.append(node.id)
            self.parents[node.id] = tuple(node.depends_on)
            self.children.setdefault(node.id, [])
        for node_id, parents in self.parents.items():
            for parent in parents:
                self.children[parent].append(node_id)
        self.index = {node_id: position for position, node_id in enumerate(self.order)}
        self.priority = {node_id: -priorities.get(node_id, 0) for node_id in self.order}
        self.state: dict[str, NodeState] = dict.fromkeys(self.order, NodeState.PENDING)
        self.unmet: dict[str, int] = {node_id: len(parents) for node_id, parents in self.parents.items()}
        self._ready: list[tuple[int, str]] = []
        self.open = len(self.order)  # nodes not yet terminal
        self.failed: list[str] = []
        self.stopped = False

    # -- start-up -----------------------------------------------------------------------------------------
    def restore(self, states: Mapping[str, NodeState]) -> None:
        """Applies the stored terminal states of a resumed execution; other nodes start over."""
        for node_id in self.order:
            state = states.get(node_id, NodeState.PENDING)
            if state == NodeState.SUCCEEDED:
                self._finish(node_id, NodeState.SUCCEEDED)
                for child in self.children[node_id]:
                    self.unmet[child] -= 1
            elif state in (NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED):
                self._finish(node_id, state)
                if state == NodeState.FAILED:
                    self.failed.append(node_id)

    def settle_restored(self) -> list[str]:
        """After :meth:`restore`: applies the policy to stored failures; returns the nodes now skipped."""
        if not self.failed:
            return []
        if self.policy == FailurePolicy.FAIL_FAST:
            return self.stop(NodeState.SKIPPED)[1]
        skipped: list[str] = []
        for node_id in list(self.failed):
            stack = list(self.children[node_id])
            while stack:
                child = stack.pop()
                if not self.state[child].is_terminal:
                    self._finish(child, NodeState.SKIPPED)
                    skipped.append(child)
                    stack.extend(self.children[child])
        skipped.sort(key=self.index.__getitem__)
        return skipped

    def initial(self) -> list[str]:
        """Nodes ready now (dependencies all succeeded), moved to SCHEDULED."""
        ready = []
        for node_id in self.order:
            if self.state[node_id] == NodeState.PENDING and self.unmet[node_id] == 0 and not self._blocked(node_id):
                ready.append(node_id)
                self._schedule(node_id)
        return ready

    def _blocked(self, node_id: str) -> bool:
        return any(self.state[parent] != NodeState.SUCCEEDED for parent in self.parents[node_id])

    # -- transitions ----------------------------------------------------------------------------------------
    def _schedule(self, node_id: str) -> None:
        self.state[node_id] = NodeState.SCHEDULED
        heapq.heappush(self._ready, (self.priority[node_id], node_id))

    def _finish(self, node_id: str, state: NodeState) -> None:
        if not self.state[node_id].is_terminal:
            self.open -= 1
        self.state[node_id] = state

    def pop_ready(self, limit: int) -> list[str]:
        """Up to ``limit`` scheduled nodes, best first, moved to RUNNING."""
        taken: list[str] = []
        while self._ready and len(taken) < limit:
            _, node_id = heapq.heappop(self._ready)
            if self.state[node_id] == NodeState.SCHEDULED:
                self.state[node_id] = NodeState.RUNNING
                taken.append(node_id)
        return taken

    @property
    def has_ready(self) -> bool:
        """True when some node waits for a slot."""
        return bool(self._ready)

    def retrying(self, node_id: str) -> None:
        """A failed attempt will be retried after a backoff."""
        self.state[node_id] = NodeState.RETRYING

    def retry_due(self, node_id: str) -> None:
        """The backoff is over: the node waits for a slot again."""
        if self.state[node_id] == NodeState.RETRYING:
            self._schedule(node_id)

    def succeeded(self, node_id: str) -> list[str]:
        """Marks a node done; returns the nodes that became ready (now SCHEDULED)."""
        self._finish(node_id, NodeState.SUCCEEDED)
        ready = []
        for child in self.children[node_id]:
            self.unmet[child] -= 1
            if self.unmet[child] == 0 and self.state[child] == NodeState.PENDING and not self.stopped:
                self._schedule(child)
                ready.append(child)
        return ready

    def failed_for_good(self, node_id: str) -> tuple[list[str], list[str]]:
        """Marks a node failed; returns (nodes to cancel, nodes to skip) as the policy decides.

        Fail-fast: every running or retrying node is cancelled and every other open node skipped.
        Continue: the failed node's open descendants are skipped; independent branches go on.
        """
        self._finish(node_id, NodeState.FAILED)
        self.failed.append(node_id)
        if self.policy == FailurePolicy.FAIL_FAST:
            return self.stop(NodeState.SKIPPED)
        skipped = []
        stack = list(self.children[node_id])
        while stack:
            child = stack.pop()
            if self.state[child].is_terminal:
                continue
            self._finish(child, NodeState.SKIPPED)
            skipped.append(child)
            stack.extend(self.children[child])
        skipped.sort(key=self.index.__getitem__)
        return [], skipped

    def stop(self, unstarted: NodeState) -> tuple[list[str], list[str]]:
        """Ends every open node: (running/retrying ones to cancel, others marked ``unstarted``)."""
        self.stopped = True
        self._ready.clear()
        cancel, skip = [], []
        for node_id in self.order:
            state = self.state[node_id]
            if state.is_terminal:
                continue
            if state in (NodeState.RUNNING, NodeState.RETRYING):
                cancel.append(node_id)
                self._finish(node_id, NodeState.CANCELLED)
            else:
                skip.append(node_id)
                self._finish(node_id, unstarted)
        return cancel, skip

    @property
    def done(self) -> bool:
        """True when every node is terminal."""
        return self.open == 0

    def sinks(self) -> list[str]:
        """Nodes nothing depends on, in definition order."""
        return [node_id for node_id in self.order if not self.children[node_id]]
