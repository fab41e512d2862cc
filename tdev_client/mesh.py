"""One object for the whole mesh: a client per service on channels opened when first used."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import grpc

from tdev_client.base import WatchPolicy
from tdev_client.builds import BuilderClient
from tdev_client.connection import Connection
from tdev_client.evolution import EvolutionClient
from tdev_client.registry import RegistryClient
from tdev_client.workflows import WorkflowClient
from tdev_common.grpc_client import ClientSecurity, open_channel


class Mesh:
    """``async with Mesh(Connection.resolve()) as mesh: await mesh.registry.get_agent("echo")``.

    Channels carry the token and TLS of the connection, the default deadline and the retry policy the protos
    declare (``idempotency_level``); closing the mesh closes them.
    """

    def __init__(self, connection: Connection | None = None, *, watch_policy: WatchPolicy | None = None,
                 tracing: bool = False) -> None:
        self.connection = connection or Connection.resolve()
        ca, cert, key = self.connection.pem()
        self._security = ClientSecurity(self.connection.token, ca, tls_cert=cert, tls_key=key)
        self._watch_policy = watch_policy
        self._tracing = tracing
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._clients: dict[str, Any] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        """The channel to one service (opened on first use)."""
        if service not in self._channels:
            self._channels[service] = open_channel(
                self.connection.address(service), deadline_seconds=self.connection.deadline_seconds,
                tracing=self._tracing, security=self._security)
        return self._channels[service]

    def _client(self, service: str, cls: Any) -> Any:
        if service not in self._clients:
            self._clients[service] = cls(self.channel(service), watch_policy=self._watch_policy)
        return self._clients[service]

    @property
    def registry(self) -> RegistryClient:
        return self._client("registry", RegistryClient)  # type: ignore[no-any-return]

    @property
    def workflows(self) -> WorkflowClient:
        return self._client("workflow", WorkflowClient)  # type: ignore[no-any-return]

    @property
    def builds(self) -> BuilderClient:
        return self._client("builder", BuilderClient)  # type: ignore[no-any-return]

    @property
    def evolution(self) -> EvolutionClient:
        return self._client("evolution", EvolutionClient)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Closes every channel opened."""
        channels, self._channels, self._clients = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()
