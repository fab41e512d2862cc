"""The registry port over gRPC: GetAgent (by id or name) and RegisterAgent for promotions."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from evolution_svc import convert
from evolution_svc.domain import AgentSource
from tdev_common.errors import NotFound, from_rpc_error


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
        try:
            response = await self._stub.RegisterAgent(
                convert.register_request(source, code, labels, request_id), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, context="registry RegisterAgent") from error
        return convert.agent_source(response.agent)
