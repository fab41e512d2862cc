"""gRPC surface of the builder service: request -> service call -> response, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc

from common.errors import Unimplemented


def _missing(rpc: str) -> Unimplemented:
    return Unimplemented(f"{rpc} is not built yet: the builder service's use-cases arrive with issue #7")


class BuilderServiceServicer(pb2_grpc.BuilderServiceServicer):
    """Implements tdev.builder.v1.BuilderService."""

    async def BuildService(
        self, request: pb2.BuildServiceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.BuildServiceResponse]:
        """Streams BuildService responses."""
        raise _missing("BuildService")
        yield pb2.BuildServiceResponse()  # pragma: no cover - makes this an async generator

    async def StartBuild(
        self, request: pb2.StartBuildRequest, context: grpc.aio.ServicerContext
    ) -> pb2.StartBuildResponse:
        """Answers StartBuild."""
        raise _missing("StartBuild")

    async def WatchBuild(
        self, request: pb2.WatchBuildRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.WatchBuildResponse]:
        """Streams WatchBuild responses."""
        raise _missing("WatchBuild")
        yield pb2.WatchBuildResponse()  # pragma: no cover - makes this an async generator

    async def GetBuild(
        self, request: pb2.GetBuildRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetBuildResponse:
        """Answers GetBuild."""
        raise _missing("GetBuild")

    async def ListBuilds(
        self, request: pb2.ListBuildsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListBuildsResponse:
        """Answers ListBuilds."""
        raise _missing("ListBuilds")

    async def CancelBuild(
        self, request: pb2.CancelBuildRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CancelBuildResponse:
        """Answers CancelBuild."""
        raise _missing("CancelBuild")
