"""gRPC surface of the registry service: request -> service call -> response, nothing else."""

from __future__ import annotations

import grpc
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from common.errors import Unimplemented


def _missing(rpc: str) -> Unimplemented:
    return Unimplemented(f"{rpc} is not built yet: the registry service's use-cases arrive with issue #5")


class RegistryServiceServicer(pb2_grpc.RegistryServiceServicer):
    """Implements tdev.registry.v1.RegistryService."""

    async def RegisterAgent(
        self, request: pb2.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb2.RegisterAgentResponse:
        """Answers RegisterAgent."""
        raise _missing("RegisterAgent")

    async def GetAgent(
        self, request: pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentResponse:
        """Answers GetAgent."""
        raise _missing("GetAgent")

    async def ListAgents(
        self, request: pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListAgentsResponse:
        """Answers ListAgents."""
        raise _missing("ListAgents")

    async def SearchAgents(
        self, request: pb2.SearchAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.SearchAgentsResponse:
        """Answers SearchAgents."""
        raise _missing("SearchAgents")

    async def ListAgentVersions(
        self, request: pb2.ListAgentVersionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListAgentVersionsResponse:
        """Answers ListAgentVersions."""
        raise _missing("ListAgentVersions")

    async def GetAgentLineage(
        self, request: pb2.GetAgentLineageRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentLineageResponse:
        """Answers GetAgentLineage."""
        raise _missing("GetAgentLineage")

    async def RecordExecutions(
        self, request: pb2.RecordExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.RecordExecutionsResponse:
        """Answers RecordExecutions."""
        raise _missing("RecordExecutions")
