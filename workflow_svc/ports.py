"""The abstractions the use-cases and the engine depend on; adapters are wired in server.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from workflow_svc.domain import AgentInfo, AgentRef, AttemptResult, JsonObject, OutcomeRecord


class AgentNotFound(Exception):
    """The registry does not know the agent (or the version); the message says which."""


class Registry(Protocol):
    """The registry service, as the workflow service uses it."""

    async def get_agent(self, ref: AgentRef, *, with_code: bool) -> AgentInfo:
        """One agent version by id or name (the latest when the version is empty).

        Raises:
            AgentNotFound: no such agent or version.
            common.errors.Unavailable: the registry cannot be reached.
        """
        ...

    async def record(self, records: Sequence[OutcomeRecord]) -> None:
        """Reports node outcomes (idempotent per record id); raises on failure."""
        ...


class AgentRunner(Protocol):
    """Runs agent code in isolation (never in the service's own process)."""

    async def run(
        self, code: str, inputs: JsonObject, timeout_seconds: float, resources: JsonObject
    ) -> AttemptResult:
        """One attempt; cancelling the awaiting task stops the child promptly."""
        ...

    async def close(self) -> None:
        """Stops every child."""
        ...
