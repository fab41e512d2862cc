"""The registry, workflow and evolution services as the builder's ports, over gRPC (their public APIs only)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
import structlog

from builder_svc import convert
from builder_svc.domain import (
    AgentRegistration,
    AgentSummary,
    ExecutionResult,
    RepairRequest,
    RepairResult,
    StoredWorkflow,
    WorkflowDefinition,
)
from tdev_common.errors import DeadlineExceeded, from_rpc_error
from tdev_common.retry import call_once, retry_keyed_write

log = structlog.get_logger(__name__)
T = TypeVar("T")


class GrpcRegistry:
    """tdev.registry.v1.RegistryService on an open channel."""

    def __init__(self, channel: grpc.aio.Channel, deadline_seconds: float) -> None:
        self._stub = convert.registry_stub(channel)
        self._deadline = deadline_seconds

    async def search(self, query: str, top_k: int) -> list[AgentSummary]:
        """Agents ranked by match (without code).

        Raises:
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        response = await call_once(
            lambda: self._stub.SearchAgents(convert.search_request(query, top_k), timeout=self._deadline),
            "registry SearchAgents")
        return convert.search_results(response)

    async def get(self, agent_id: str, version: str) -> AgentSummary:
        """One version with its code.

        Raises:
            tdev_common.errors.NotFound: no such version; Unavailable: the registry cannot be reached.
        """
        response = await call_once(
            lambda: self._stub.GetAgent(convert.get_agent_request(agent_id, version), timeout=self._deadline),
            "registry GetAgent")
        return convert.agent_summary(response.agent)

    async def register(self, registration: AgentRegistration) -> AgentSummary:
        """Registers code (idempotent by name and code, and by request id).

        Raises:
            tdev_common.errors.InvalidArgument: the registry rejected the code (the message says where and why);
            Unavailable: the registry cannot be reached.
        """
        response = await call_once(
            lambda: self._stub.RegisterAgent(convert.register_request(registration), timeout=self._deadline),
            "registry RegisterAgent")
        return convert.agent_summary(response.agent)

    async def update_labels(self, agent_id: str, version: str, labels: Mapping[str, str], request_id: str) -> None:
        """Sets labels of one version; the channel retries it on UNAVAILABLE (idempotent per request id).

        Raises:
            tdev_common.errors.NotFound: no such version; InvalidArgument: a label the registry refuses;
            Unimplemented: a registry without UpdateAgentLabels; Unavailable: the registry cannot be reached.
        """
        request = convert.update_labels_request(agent_id, version, labels, request_id)
        await call_once(lambda: self._stub.UpdateAgentLabels(request, timeout=self._deadline),
                        "registry UpdateAgentLabels")

    async def versions_labelled(self, name_contains: str, label: str, value: str) -> list[tuple[str, str]]:
        """(agent_id, version) of every version carrying ``label=value`` among agents named like ``name_contains``.

        Raises:
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        agent_ids: list[str] = []
        token = ""
        while True:
            page = await call_once(functools.partial(
                self._stub.ListAgents, convert.list_agents_request(name_contains, token), timeout=self._deadline),
                "registry ListAgents")
            agent_ids += [agent.agent_id for agent in page.agents]
            token = page.next_page_token
            if not token:
                break
        found: list[tuple[str, str]] = []
        for agent_id in agent_ids:
            token = ""
            while True:
                versions = await call_once(functools.partial(
                    self._stub.ListAgentVersions, convert.list_versions_request(agent_id, token),
                    timeout=self._deadline), "registry ListAgentVersions")
                found += [(v.agent_id, v.version) for v in versions.versions if v.labels.get(label) == value]
                token = versions.next_page_token
                if not token:
                    break
        return found


class GrpcWorkflows:
    """tdev.workflow.v1.WorkflowService on an open channel."""

    def __init__(self, channel: grpc.aio.Channel, deadline_seconds: float, attempts: int) -> None:
        self._stub = convert.workflow_stub(channel)
        self._deadline = deadline_seconds
        self._attempts = attempts

    async def create(self, definition: WorkflowDefinition, request_id: str) -> StoredWorkflow:
        """Validates and stores a definition; a replayed request id returns the first workflow.

        Raises:
            tdev_common.errors.InvalidArgument: the definition failed validation (every problem listed);
            Unavailable: the workflow service cannot be reached.
        """
        request = convert.create_workflow_request(definition, request_id)
        response = await retry_keyed_write(lambda: self._stub.CreateWorkflow(request, timeout=self._deadline),
                                           "workflow CreateWorkflow", self._attempts)
        return convert.stored_workflow(response)

    async def run(self, workflow_id: str, inputs: Mapping[str, Any], request_id: str, deadline_seconds: float,
                  started: Callable[[str], None] | None = None) -> ExecutionResult:
        """Starts an execution (a replayed request id finds the first one), follows it to its end and reads it.

        Raises:
            tdev_common.errors.DeadlineExceeded: it did not end within ``deadline_seconds``;
            Unavailable: the workflow service cannot be reached.
        """
        request = convert.start_execution_request(workflow_id, inputs, request_id)
        response = await retry_keyed_write(lambda: self._stub.StartExecution(request, timeout=self._deadline),
                                           "workflow StartExecution", self._attempts)
        execution = convert.execution_id(response)
        if started is not None:
            started(execution)
        try:
            async with asyncio.timeout(deadline_seconds):
                await self._follow(execution)
        except TimeoutError:
            raise DeadlineExceeded(
                f"workflow execution {execution} did not end within {deadline_seconds:g} s",
                reason="EXECUTION_DEADLINE_EXCEEDED") from None
        finished = await call_once(
            lambda: self._stub.GetExecution(convert.get_execution_request(execution), timeout=self._deadline),
            "workflow GetExecution")
        return convert.execution_result(finished)

    async def _follow(self, execution: str) -> None:
        """Watches until the terminal event, resuming after the last seen sequence when the stream breaks."""
        after = 0
        failures = 0
        while True:
            try:
                async for response in self._stub.WatchExecution(convert.watch_execution_request(execution, after)):
                    after, terminal = convert.watched_event(response)
                    if terminal:
                        return
                return  # the server ends the stream only after the terminal event
            except grpc.aio.AioRpcError as error:
                failures += 1
                if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= self._attempts:
                    raise from_rpc_error(error, context="workflow WatchExecution") from None
                await asyncio.sleep(0.2 * 2**failures)

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Cancels an execution; failures are logged, never raised."""
        try:
            await self._stub.CancelExecution(convert.cancel_execution_request(execution_id, reason),
                                             timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            log.info("execution_cancel_failed", execution_id=execution_id, code=error.code().name)


class GrpcEvolution:
    """tdev.evolution.v1.EvolutionService on an open channel."""

    def __init__(self, channel: grpc.aio.Channel, deadline_seconds: float, attempts: int,
                 poll_seconds: float = 0.2) -> None:
        self._stub = convert.evolution_stub(channel)
        self._deadline = deadline_seconds
        self._attempts = attempts
        self._poll = poll_seconds

    async def repair(self, request: RepairRequest) -> RepairResult:
        """Starts the run (a replayed request id finds the first one) and polls it to its end.

        Raises:
            tdev_common.errors.InvalidArgument: the evolution service rejected the suite or config;
            Unavailable: it cannot be reached.
        """
        started = await retry_keyed_write(
            lambda: self._stub.StartEvolution(convert.start_evolution_request(request), timeout=self._deadline),
            "evolution StartEvolution", self._attempts)
        run_id = started.run.run_id
        try:
            while True:
                response = await call_once(
                    lambda: self._stub.GetEvolution(convert.get_evolution_request(run_id), timeout=self._deadline),
                    "evolution GetEvolution")
                if convert.evolution_ended(response):
                    return convert.repair_result(response)
                await asyncio.sleep(self._poll)
        except asyncio.CancelledError:
            # The build's time budget ran out or it was cancelled: the run is its, so it stops with it.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await asyncio.shield(self._stub.CancelEvolution(
                    convert.cancel_evolution_request(run_id, "the build that started it stopped"),
                    timeout=self._deadline))
            raise
