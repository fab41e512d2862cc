"""Agent versions and workflow definitions a replica runs, fetched once and kept (both are immutable)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable

from workflow_svc.domain import AgentInfo, AgentRef, NodeSpec, Workflow
from workflow_svc.ports import Registry, Repository


class AgentCache:
    """Pinned agent versions with their code, by (agent_id, version), least recently used dropped first.

    Entries are futures, so concurrent runs needing the same version share one registry call; a failed
    fetch is not kept (the next run asks again).
    """

    def __init__(self, registry: Registry, size: int) -> None:
        self._registry = registry
        self._size = size
        self._entries: OrderedDict[tuple[str, str], asyncio.Future[AgentInfo]] = OrderedDict()

    def prefetch(self, nodes: Iterable[NodeSpec]) -> None:
        """Starts fetching every agent the nodes need, once per version."""
        for node in nodes:
            self._future(node)

    async def get(self, node: NodeSpec) -> AgentInfo:
        """The node's pinned agent version with its code.

        Raises:
            AgentNotFound: the registry has no such version; a DomainError when the registry is down.
        """
        # Shielded: one run cancelled while waiting must not cancel the fetch others share.
        return await asyncio.shield(self._future(node))

    def _future(self, node: NodeSpec) -> asyncio.Future[AgentInfo]:
        key = (node.agent_id, node.agent_version)
        future = self._entries.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(
                self._registry.get_agent(AgentRef(node.agent_id, node.agent_version), with_code=True)
            )
            # Retrieved here so an unused failed prefetch never logs "exception was never retrieved".
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            self._entries[key] = future
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return future


class WorkflowCache:
    """Stored workflow definitions by id (immutable once stored, so never invalidated)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._entries: dict[str, Workflow] = {}

    async def get_or_none(self, workflow_id: str) -> Workflow | None:
        """A stored workflow, or None."""
        cached = self._entries.get(workflow_id)
        if cached is None and workflow_id:
            cached = await self._repo.get_workflow(workflow_id)
            if cached is not None:
                self._entries[workflow_id] = cached
        return cached

    async def get(self, workflow_id: str) -> Workflow:
        """A stored workflow; KeyError when it does not exist."""
        workflow = await self.get_or_none(workflow_id)
        if workflow is None:
            raise KeyError(workflow_id)
        return workflow
