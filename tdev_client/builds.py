"""The builder: plain-language requirements to a validated, packaged service, watched stage by stage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import grpc
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc

from tdev_client.base import Page, ServiceClient, WatchPolicy
from tdev_client.types import Build, BuildEvent


class BuilderClient(ServiceClient):
    """``tdev.builder.v1.BuilderService`` with plain values in and out."""

    def __init__(self, channel: grpc.aio.Channel, *, watch_policy: WatchPolicy | None = None) -> None:
        super().__init__(channel, pb2_grpc.BuilderServiceStub, watch_policy=watch_policy)

    async def start_build(self, requirements: str, *, constraints: Mapping[str, Any] | None = None,
                          request_id: str = "") -> Build:
        """Starts a build and returns it at once; follow it with :meth:`watch_build`."""
        answer = await self._call("StartBuild", pb2.StartBuildRequest, {
            "requirements": requirements, "constraints": dict(constraints) if constraints else None,
            "request_id": request_id})
        return cast("Build", answer["build"])

    def build_service(self, requirements: str, *, constraints: Mapping[str, Any] | None = None,
                      request_id: str = "") -> AsyncIterator[BuildEvent]:
        """Starts a build and streams its events until it ends (one stream; watch by build id to resume)."""
        return cast("AsyncIterator[BuildEvent]", self._stream("BuildService", pb2.BuildServiceRequest, {
            "requirements": requirements, "constraints": dict(constraints) if constraints else None,
            "request_id": request_id}))

    def watch_build(self, build_id: str, *, after_sequence: int = 0) -> AsyncIterator[BuildEvent]:
        """Every event after ``after_sequence`` until the build ends, reconnecting on its own."""
        events = self._events("WatchBuild", pb2.WatchBuildRequest, {"build_id": build_id}, after_sequence)
        return cast("AsyncIterator[BuildEvent]", events)

    async def get_build(self, build_id: str) -> Build:
        """One build with its stages, artifacts and package."""
        return cast("Build", (await self._call("GetBuild", pb2.GetBuildRequest, {"build_id": build_id}))["build"])

    async def list_builds(self, *, page_size: int = 0, page_token: str = "",
                          state: str | None = None) -> Page[Build]:
        """One page of builds, newest first."""
        return cast("Page[Build]", await self._page("ListBuilds", pb2.ListBuildsRequest, "builds",
                                {"page_size": page_size, "page_token": page_token, "state": state}))

    def iter_builds(self, *, state: str | None = None) -> AsyncIterator[Build]:
        """Every build, page after page."""
        builds = self._all_pages("ListBuilds", pb2.ListBuildsRequest, "builds", {"state": state})
        return cast("AsyncIterator[Build]", builds)

    async def cancel_build(self, build_id: str, *, reason: str = "") -> Build:
        """Asks a running build to stop; returns it."""
        answer = await self._call("CancelBuild", pb2.CancelBuildRequest, {"build_id": build_id, "reason": reason})
        return cast("Build", answer["build"])
