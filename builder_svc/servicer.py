"""gRPC surface of the builder service: request -> service call -> response, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc

from builder_svc import convert
from builder_svc.service import BuilderService


class BuilderServiceServicer(pb2_grpc.BuilderServiceServicer):
    """Implements tdev.builder.v1.BuilderService."""

    def __init__(self, service: BuilderService) -> None:
        self._service = service

    async def BuildService(
        self, request: pb2.BuildServiceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.BuildServiceResponse]:
        """Starts a build and streams its events until it ends."""
        async for event in self._service.build_and_watch(convert.start_command(request)):
            yield convert.build_service_response(event)

    async def StartBuild(
        self, request: pb2.StartBuildRequest, context: grpc.aio.ServicerContext
    ) -> pb2.StartBuildResponse:
        """Starts a build and returns at once."""
        build = await self._service.start(convert.start_command(request))
        return convert.start_response(build)

    async def WatchBuild(
        self, request: pb2.WatchBuildRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb2.WatchBuildResponse]:
        """Streams a build's events after a sequence number, then live ones until it ends."""
        async for event in self._service.watch(request.build_id, request.after_sequence):
            yield convert.watch_response(event)

    async def GetBuild(self, request: pb2.GetBuildRequest, context: grpc.aio.ServicerContext) -> pb2.GetBuildResponse:
        """Returns a build."""
        return convert.get_response(await self._service.get(request.build_id))

    async def ListBuilds(
        self, request: pb2.ListBuildsRequest, context: grpc.aio.ServicerContext
    ) -> pb2.ListBuildsResponse:
        """Lists builds, newest first."""
        query, page_size, after = convert.list_query(request)
        page = await self._service.list(query, page_size, after)
        return convert.list_response(request, page)

    async def CancelBuild(
        self, request: pb2.CancelBuildRequest, context: grpc.aio.ServicerContext
    ) -> pb2.CancelBuildResponse:
        """Cancels a running build."""
        return convert.cancel_response(await self._service.cancel(request.build_id, request.reason))
