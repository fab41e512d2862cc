"""The abstractions the use-cases and the engine depend on; adapters are wired in server.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from workflow_svc.domain import (
    AgentInfo,
    AgentRef,
    AliasTarget,
    AttemptResult,
    Batch,
    Claim,
    Event,
    Execution,
    ExecutionFilter,
    ExecutionState,
    JsonObject,
    OutcomeRecord,
    Workflow,
)

# A keyset position of the List calls: (create time, id). Its page token holds the stored epoch double.
Cursor = tuple[datetime, str]


class LeaseLost(Exception):
    """A fenced write found another owner or epoch: this worker must stop the execution."""


class AgentNotFound(Exception):
    """The registry does not know the agent (or the version); the message says which."""


class Registry(Protocol):
    """The registry service, as the workflow service uses it."""

    async def get_agent(self, ref: AgentRef, *, with_code: bool) -> AgentInfo:
        """One agent version by id or name (the latest when the version is empty).

        Raises:
            AgentNotFound: no such agent or version.
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        ...

    async def record(self, records: Sequence[OutcomeRecord]) -> None:
        """Reports node outcomes (idempotent per record id); raises on failure."""
        ...

    async def aliases(self, agent_id: str) -> dict[str, AliasTarget]:
        """The agent's aliases by name.

        Raises:
            AgentNotFound: no such agent.
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        ...


class AgentRunner(Protocol):
    """Runs agent code in isolation (never in the service's own process)."""

    async def run(
        self, code: str, inputs: JsonObject, timeout_seconds: float, resources: JsonObject, warm_group: str = ""
    ) -> AttemptResult:
        """One attempt; cancelling the awaiting task stops the child promptly.

        Attempts with the same non-empty ``warm_group`` may run one after another in one warm process.
        """
        ...

    async def close(self) -> None:
        """Stops every child."""
        ...


class Repository(Protocol):
    """The workflow tables; every write of a lease holder is fenced by (owner, epoch)."""

    async def insert_workflow(self, workflow: Workflow, request_id: str, fingerprint: str = "") -> Workflow:
        """Stores a workflow; a request id seen before returns the first workflow.

        Raises:
            tdev_common.idempotency.RequestIdReused: the request id was stored with another fingerprint.
        """
        ...

    async def find_workflow_by_request(self, request_id: str, fingerprint: str = "") -> Workflow | None:
        """The workflow a request id created, or None.

        Raises:
            tdev_common.idempotency.RequestIdReused: the request id was stored with another fingerprint.
        """
        ...

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """A workflow, or None."""
        ...

    async def list_workflows(self, page_size: int, after: Cursor | None, name_contains: str) -> list[Workflow]:
        """Workflows, newest first, after the cursor."""
        ...

    async def insert_execution(
        self, execution: Execution, owner: str | None, lease_expires: float | None, fingerprint: str = ""
    ) -> tuple[Execution, Claim | None]:
        """Stores a new execution (leased to ``owner`` when given); a replayed request id returns the first.

        Raises:
            tdev_common.idempotency.RequestIdReused: the request id was stored with another fingerprint.
        """
        ...

    async def find_execution_by_request(self, request_id: str, fingerprint: str = "") -> Execution | None:
        """The execution a request id started, or None.

        Raises:
            tdev_common.idempotency.RequestIdReused: the request id was stored with another fingerprint.
        """
        ...

    async def get_execution(self, execution_id: str, *, with_nodes: bool = True) -> Execution | None:
        """An execution (with its stored node runs), or None."""
        ...

    async def list_executions(self, query: ExecutionFilter, page_size: int, after: Cursor | None) -> list[Execution]:
        """Executions, newest first, after the cursor."""
        ...

    async def events_after(self, execution_id: str, after_sequence: int, limit: int) -> list[Event]:
        """Stored events after a sequence number, in order."""
        ...

    async def request_cancel(
        self, execution_id: str, reason: str, now: float
    ) -> tuple[ExecutionState, str | None, float | None] | None:
        """Flags an active execution for cancellation; (state, owner, expiry) as found, or None."""
        ...

    async def cancel_reason(self, execution_id: str) -> str:
        """The stored reason of a cancellation request."""
        ...

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, *, reclaim_own: bool = False,
        execution_id: str | None = None, exclude: Sequence[str] = (),
    ) -> list[Claim]:
        """Leases unowned or expired active executions, except those in ``exclude`` (running here)."""
        ...

    async def renew(self, claims: Sequence[Claim], now: float, lease_seconds: float) -> tuple[set[str], set[str]]:
        """(ids still held, ids with a cancellation request)."""
        ...

    async def release(self, claim: Claim) -> None:
        """Gives a lease back."""
        ...

    async def write(self, claim: Claim, batch: Batch, now: float, lease_seconds: float) -> None:
        """Writes one batch atomically. Raises LeaseLost when the fence does not match."""
        ...

    async def drain_outbox(self, limit: int, send: Callable[[list[OutcomeRecord]], Awaitable[None]]) -> int:
        """Sends stored outcomes and deletes them once ``send`` returns."""
        ...
