"""Every gRPC call the console makes, answering plain dicts (protobuf JSON mapping, snake_case field names).

The rest of the console never sees a stub or a message, so this module alone changes when the console moves
to the typed client (tdev_client).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from tdev.builder.v1 import builder_service_pb2 as builder_pb2
from tdev.builder.v1 import builder_service_pb2_grpc as builder_grpc
from tdev.evolution.v1 import evolution_service_pb2 as evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as evolution_grpc
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_grpc
from tdev.workflow.v1 import workflow_service_pb2 as workflow_pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as workflow_grpc

from tdev_common.config import CommonSettings
from tdev_common.grpc_client import ClientSecurity, open_channel
from tdev_common.protojson import whole_numbers

# A watch that drops with one of these is reopened after the last event seen; anything else ends it.
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
PAGE_SIZE = 50


def plain(message: Message) -> dict[str, Any]:
    """A message as JSON values: snake_case keys, enums by name, defaults included, int64 and whole numbers as
    ints."""
    value = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True, unquote_int64_if_possible=True)
    return whole_numbers(value)  # type: ignore[no-any-return]


class Backend:
    """One channel per service, opened once; every method is one read or one watch of a service."""

    def __init__(self, common: CommonSettings, security: ClientSecurity, *, max_watch_failures: int = 30) -> None:
        self._channels = [
            open_channel(address, deadline_seconds=common.client_deadline_seconds, tracing=False,
                         security=security, max_message_mb=common.grpc_max_message_mb)
            for address in (common.registry_address, common.workflow_address, common.builder_address,
                            common.evolution_address)
        ]
        self._registry = registry_grpc.RegistryServiceStub(self._channels[0])
        self._workflow = workflow_grpc.WorkflowServiceStub(self._channels[1])
        self._builder = builder_grpc.BuilderServiceStub(self._channels[2])
        self._evolution = evolution_grpc.EvolutionServiceStub(self._channels[3])
        self._max_watch_failures = max_watch_failures

    async def close(self) -> None:
        """Closes the channels (open watches end with CANCELLED)."""
        await asyncio.gather(*(channel.close() for channel in self._channels))

    # registry

    async def list_agents(self, page_token: str = "") -> dict[str, Any]:
        """A page of agents (latest version of each), most recent first."""
        request = registry_pb2.ListAgentsRequest(page_size=PAGE_SIZE, page_token=page_token, exclude_code=True,
                                                 order_by=registry_pb2.ListAgentsRequest.ORDER_BY_RECENT)
        return plain(await self._registry.ListAgents(request))

    async def search_agents(self, query: str) -> list[dict[str, Any]]:
        """Search results (agent, score, reasons) for a plain-language query."""
        answer = await self._registry.SearchAgents(registry_pb2.SearchAgentsRequest(query=query, top_k=20))
        return [plain(result) for result in answer.results]

    async def get_agent(self, agent_id: str, version: str = "") -> dict[str, Any]:
        """One version of an agent with its code, analysis and metrics (latest when ``version`` is empty)."""
        answer = await self._registry.GetAgent(registry_pb2.GetAgentRequest(agent_id=agent_id, version=version))
        return plain(answer.agent)

    async def list_agent_versions(self, agent_id: str) -> list[dict[str, Any]]:
        """Every version of an agent, without code."""
        versions: list[dict[str, Any]] = []
        token = ""
        while True:
            answer = await self._registry.ListAgentVersions(
                registry_pb2.ListAgentVersionsRequest(agent_id=agent_id, page_size=200, page_token=token))
            versions.extend(plain(version) for version in answer.versions)
            token = answer.next_page_token
            if not token:
                return versions

    async def get_agent_lineage(self, agent_id: str, version: str = "") -> dict[str, Any]:
        """The ancestors of a version: root, parent/child edges and the agents on them."""
        answer = await self._registry.GetAgentLineage(
            registry_pb2.GetAgentLineageRequest(agent_id=agent_id, version=version, max_depth=20))
        return plain(answer)

    # workflow

    async def list_executions(self, page_token: str = "", workflow_id: str = "") -> dict[str, Any]:
        """A page of executions, most recent first."""
        answer = await self._workflow.ListExecutions(
            workflow_pb2.ListExecutionsRequest(page_size=PAGE_SIZE, page_token=page_token, workflow_id=workflow_id))
        return plain(answer)

    async def get_execution(self, execution_id: str) -> dict[str, Any]:
        """One execution with its node runs, outputs and error."""
        answer = await self._workflow.GetExecution(workflow_pb2.GetExecutionRequest(execution_id=execution_id))
        return plain(answer.execution)

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """A workflow definition (its nodes and dependencies)."""
        answer = await self._workflow.GetWorkflow(workflow_pb2.GetWorkflowRequest(workflow_id=workflow_id))
        return plain(answer.workflow)

    def watch_execution(self, execution_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The execution's events after sequence ``after``, resumed across dropped streams."""
        return self._resumable(lambda last: self._workflow.WatchExecution(
            workflow_pb2.WatchExecutionRequest(execution_id=execution_id, after_sequence=last)), after)

    # builder

    async def list_builds(self, page_token: str = "") -> dict[str, Any]:
        """A page of builds, most recent first."""
        answer = await self._builder.ListBuilds(builder_pb2.ListBuildsRequest(page_size=PAGE_SIZE,
                                                                              page_token=page_token))
        return plain(answer)

    async def get_build(self, build_id: str) -> dict[str, Any]:
        """One build with its stages, package, usage and error."""
        answer = await self._builder.GetBuild(builder_pb2.GetBuildRequest(build_id=build_id))
        return plain(answer.build)

    def watch_build(self, build_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The build's events after sequence ``after``, resumed across dropped streams."""
        return self._resumable(lambda last: self._builder.WatchBuild(
            builder_pb2.WatchBuildRequest(build_id=build_id, after_sequence=last)), after)

    # evolution

    async def list_evolutions(self, page_token: str = "") -> dict[str, Any]:
        """A page of evolution runs (without code), most recent first."""
        answer = await self._evolution.ListEvolutions(
            evolution_pb2.ListEvolutionsRequest(page_size=PAGE_SIZE, page_token=page_token))
        return plain(answer)

    async def get_evolution(self, run_id: str) -> dict[str, Any]:
        """One evolution run with its generation reports, best candidate (with code) and promotion."""
        answer = await self._evolution.GetEvolution(evolution_pb2.GetEvolutionRequest(run_id=run_id))
        return plain(answer.run)

    async def list_candidates(self, run_id: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A run's candidates with code, by generation, at most ``limit``; and whether that is all of them."""
        found: list[dict[str, Any]] = []
        token = ""
        while len(found) < limit:
            answer = await self._evolution.ListCandidates(evolution_pb2.ListCandidatesRequest(
                run_id=run_id, page_size=min(500, limit - len(found)), page_token=token))
            found.extend(plain(candidate) for candidate in answer.candidates)
            token = answer.next_page_token
            if not token:
                return found, True
        return found, False

    def watch_evolution(self, run_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The run's events after sequence ``after``, resumed across dropped streams."""
        return self._resumable(lambda last: self._evolution.WatchEvolution(
            evolution_pb2.WatchEvolutionRequest(run_id=run_id, after_sequence=last)), after)

    async def _resumable(self, open_stream: Callable[[int], Any], after: int) -> AsyncIterator[dict[str, Any]]:
        # The services store every event before streaming it and replay from a sequence number, so reopening
        # after the last sequence seen gives each event once, with no gap.
        last = after
        failures = 0
        while True:
            try:
                async for answer in open_stream(last):
                    failures = 0
                    last = answer.event.sequence
                    yield plain(answer.event)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RESUMABLE or failures >= self._max_watch_failures:
                    raise
                failures += 1
                await asyncio.sleep(min(0.2 * failures, 2.0))
