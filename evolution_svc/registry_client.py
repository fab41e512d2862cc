"""The registry ports over gRPC: GetAgent (by id or name) and RegisterAgent for promotions; cases, execution
stats and aliases for the policy loop."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import TypeVar

import grpc

from evolution_svc import convert
from evolution_svc.domain import AgentSource
from evolution_svc.ports import AliasState, ExecutionStats
from evolution_svc.production_suite import ProductionCase
from tdev_common.errors import NotFound, from_rpc_error

T = TypeVar("T")
MAX_CASES_READ = 5000


class GrpcRegistry:
    """Calls tdev.registry.v1.RegistryService on an open channel."""

    def __init__(self, channel: grpc.aio.Channel, deadline_seconds: float) -> None:
        self._stub = convert.registry_stub(channel)
        self._deadline = deadline_seconds

    async def get_agent(self, agent: str, version: str) -> AgentSource:
        """One agent version by id or name (the latest when ``version`` is empty).

        Raises:
            NotFound: neither an id nor a name matches, or the version does not exist.
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        for request in convert.get_agent_requests(agent, version):
            try:
                response = await self._stub.GetAgent(request, timeout=self._deadline)
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    continue
                raise from_rpc_error(error, context="registry GetAgent") from error
            return convert.agent_source(response.agent)
        if version:
            raise NotFound(f'agent "{agent}" has no version "{version}" in the registry',
                           reason="AGENT_VERSION_NOT_FOUND", metadata={"agent": agent, "version": version})
        raise NotFound(f'unknown agent "{agent}": no registry agent has this id or name', reason="AGENT_NOT_FOUND",
                       metadata={"agent": agent})

    async def register_version(
        self, source: AgentSource, code: str, *, labels: Mapping[str, str], request_id: str
    ) -> AgentSource:
        """Registers ``code`` as a new version of ``source``'s agent (idempotent by ``request_id``).

        Raises:
            tdev_common.errors.DomainError: what the registry answered (its code kept), or UNAVAILABLE.
        """
        response = await self._call("RegisterAgent", self._stub.RegisterAgent(
            convert.register_request(source, code, labels, request_id), timeout=self._deadline))
        return convert.agent_source(response.agent)

    async def list_cases(self, agent_id: str) -> list[ProductionCase]:
        """Every captured case of the agent, newest pages first, at most MAX_CASES_READ."""
        found: list[ProductionCase] = []
        token = ""
        while len(found) < MAX_CASES_READ:
            response = await self._call("ListAgentCases", self._stub.ListAgentCases(
                convert.list_cases_request(agent_id, token), timeout=self._deadline))
            found.extend(convert.production_case(case) for case in response.cases)
            token = response.next_page_token
            if not token:
                break
        return found[:MAX_CASES_READ]

    async def execution_stats(self, agent_id: str, version: str, since: datetime) -> ExecutionStats:
        """One version's executions finished since ``since``."""
        response = await self._call("GetAgentExecutionStats", self._stub.GetAgentExecutionStats(
            convert.execution_stats_request(agent_id, version, since), timeout=self._deadline))
        return ExecutionStats(response.stats.version, response.stats.executions, response.stats.success_rate)

    async def aliases(self, agent_id: str) -> AliasState:
        """The agent's aliases and finished rollouts."""
        response = await self._call("ListAgentAliases", self._stub.ListAgentAliases(
            convert.aliases_request(agent_id), timeout=self._deadline))
        return convert.alias_view(response)

    async def set_alias(self, agent_id: str, alias: str, version: str, *, traffic_fraction: float = 0.0,
                        min_sample: int = 0) -> None:
        """Points an alias at a version."""
        await self._call("SetAgentAlias", self._stub.SetAgentAlias(
            convert.set_alias_request(agent_id, alias, version, traffic_fraction, min_sample),
            timeout=self._deadline))

    @staticmethod
    async def _call(name: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, context=f"registry {name}") from error
