"""gRPC surface of the evolution service: request -> service call -> response, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc

from common.errors import Unimplemented


def _missing(rpc: str) -> Unimplemented:
    return Unimplemented(f"{rpc} is not built yet: the evolution service's use-cases arrive with issue #8")


class EvolutionServiceServicer(pb2_grpc.EvolutionServiceServicer):
    """Implements tdev.evolution.v1.EvolutionService."""

    async def StartEvolution(
        self, request: pb2.StartEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.StartEvolutionResponse:
        """Answers StartEvolution."""
        raise _missing("StartEvolution")

    async def WatchEvolution(
        self, request: pb2.WatchEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.WatchEvolutionResponse]:
        """Streams WatchEvolution responses."""
        raise _missing("WatchEvolution")
        yield pb2.WatchEvolutionResponse()  # pragma: no cover - makes this an async generator

    async def GetEvolution(
        self, request: pb2.GetEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetEvolutionResponse:
        """Answers GetEvolution."""
        raise _missing("GetEvolution")

    async def ListEvolutions(
        self, request: pb2.ListEvolutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListEvolutionsResponse:
        """Answers ListEvolutions."""
        raise _missing("ListEvolutions")

    async def CancelEvolution(
        self, request: pb2.CancelEvolutionRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CancelEvolutionResponse:
        """Answers CancelEvolution."""
        raise _missing("CancelEvolution")
