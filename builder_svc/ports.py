"""What the builder's use-cases need from the outside: storage, the registry, workflows, a sandbox, a model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from builder_svc.admission import Cursor
from builder_svc.domain import (
    AgentRegistration,
    AgentSummary,
    Build,
    BuildEvent,
    BuildFilter,
    BuildState,
    Claimed,
    ExampleOutcome,
    ExecutionResult,
    Lease,
    MarkJob,
    NewEvent,
    Progress,
    RepairRequest,
    RepairResult,
    StoredWorkflow,
    WorkflowDefinition,
)
from tdev_common.llm import Budget, Completion


class LeaseLost(Exception):
    """Another worker (or a cancellation) holds the build now; nothing was written."""


class Repository(Protocol):
    """The ``builder`` schema."""

    async def insert_build(self, build: Build, request_id: str, fingerprint: str = "") -> tuple[Build, bool]:
        """Stores a new build; a request id seen before returns the first build and False."""

    async def get_build(self, build_id: str) -> Build | None:
        """One build."""

    async def list_builds(self, query: BuildFilter, page_size: int, after: Cursor | None) -> list[Build]:
        """Builds newest first, after a cursor."""

    async def events_after(self, build_id: str, after_sequence: int, limit: int) -> list[BuildEvent]:
        """Stored events with a greater sequence, in order."""

    async def append(self, lease: Lease, event: NewEvent, progress: Progress, now: float,
                     lease_seconds: float) -> BuildEvent:
        """Stores an event and the build's progress atomically, fenced by the lease; renews it.

        Raises:
            LeaseLost: the lease is no longer held.
        """

    async def cancel(self, build_id: str, reason: str, now: float) -> tuple[Build, BuildEvent | None]:
        """Ends an active build as cancelled (fencing out its worker); returns it and the event stored."""

    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int, *, reclaim_own: bool,
                    build_id: str | None = None, exclude: Sequence[str] = ()) -> list[Claimed]:
        """Leases active builds that are unowned or expired, except those in ``exclude``."""

    async def renew(self, leases: Sequence[Lease], now: float, lease_seconds: float) -> set[str]:
        """Extends leases still held; returns the ids still held."""

    async def release(self, lease: Lease) -> None:
        """Gives a lease back so another worker may resume the build at once."""

    async def states(self, build_ids: Sequence[str]) -> dict[str, BuildState]:
        """The state of each known build."""

    async def claim_marks(self, now: float, hold_seconds: float, limit: int) -> list[MarkJob]:
        """Ended builds whose versions are due to be marked, each held for ``hold_seconds``."""

    async def finish_marks(self, job: MarkJob, *, error: str = "", retry_at: float | None = None) -> bool:
        """Records a marking job's end (done, due again, or given up); False when fenced by a newer request."""

    async def mark_again(self, build_id: str, now: float) -> bool:
        """Queues an ended build's versions to be marked once more; False when the build has not ended."""


class Registry(Protocol):
    """The registry service, over gRPC."""

    async def search(self, query: str, top_k: int) -> list[AgentSummary]:
        """Agents ranked by how well they match the query (without code)."""

    async def get(self, agent_id: str, version: str) -> AgentSummary:
        """One version with its code."""

    async def register(self, registration: AgentRegistration) -> AgentSummary:
        """Validates, loads and stores code; the same name and code returns the existing version."""

    async def update_labels(self, agent_id: str, version: str, labels: Mapping[str, str], request_id: str) -> None:
        """Sets labels of one version (idempotent per request id)."""

    async def versions_labelled(self, name_contains: str, label: str, value: str) -> list[tuple[str, str]]:
        """(agent_id, version) of every version of the agents whose name contains ``name_contains`` that carries
        the label ``label=value``."""


class Workflows(Protocol):
    """The workflow service, over gRPC."""

    async def create(self, definition: WorkflowDefinition, request_id: str) -> StoredWorkflow:
        """Validates and stores a definition (a replayed request id returns the first workflow)."""

    async def run(self, workflow_id: str, inputs: Mapping[str, Any], request_id: str, deadline_seconds: float,
                  started: Callable[[str], None] | None = None) -> ExecutionResult:
        """Starts (or, for a replayed request id, finds) an execution, tells ``started`` its id, and waits for
        its end."""

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Cancels an execution; best effort."""


class Evolution(Protocol):
    """The evolution service, over gRPC."""

    async def repair(self, request: RepairRequest) -> RepairResult:
        """Starts (or, for a replayed request id, finds) an evolution run of the version on the cases and waits
        for its end; cancelling the call cancels the run."""


class Tester(Protocol):
    """Runs agent code on example inputs in the sandbox."""

    async def run(self, code: str, inputs: Sequence[Mapping[str, Any]], timeout_seconds: float) -> list[ExampleOutcome]:
        """One outcome per input, in order."""


class LanguageModel(Protocol):
    """The slice of tdev_common.llm.LLMClient the builder uses."""

    async def complete(self, messages: Sequence[Any], *, schema: Mapping[str, Any] | None = None, purpose: str,
                       max_tokens: int, temperature: float, model: str | None = None,
                       budget: Budget | None = None, ensemble: bool | None = None) -> Completion:
        """One schema-checked answer."""
