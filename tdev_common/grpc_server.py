"""gRPC server bootstrap: handler layers (tracing, auth, errors), health per service, reflection, limits, stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tdev_common.auth import TokenTable, auth_layer
from tdev_common.errors import error_layer
from tdev_common.handler_layers import Layer, LayeredServer, completion_layer
from tdev_common.reflection import enable_reflection
from tdev_common.server_tracing import tracing_layer
from tdev_common.telemetry import tracer_provider

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServerSecurity:
    """A server's security: bearer tokens and TLS material (both optional when embedded).

    Passed to each server it applies to (tdev_common.runtime loads it from the settings), never set
    process-wide: two servers in one process (tests, an embedded mesh) may differ.
    """

    tokens: TokenTable | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    # mTLS: client certificates are verified against this CA bundle (requested, and refused at the handshake
    # when missing if require_client_auth). Ignored without tls_cert/tls_key.
    tls_client_ca: bytes | None = None
    require_client_auth: bool = True


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to serve: its descriptor, its servicer and the generated ``add_..._to_server``."""

    descriptor: ServiceDescriptor
    servicer: object
    add_to_server: Callable[[Any, Any], None]


@dataclass
class RunningServer:
    """A started server with its health servicer, for graceful stop."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def set_serving(self, serving: bool) -> None:
        """Marks every service (and the overall server) SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first (load balancers stop sending), then drain in-flight calls for ``grace``."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        log.info("server_draining", port=self.port, grace_seconds=grace)
        await self.server.stop(grace)
        log.info("server_stopped", port=self.port)

    async def wait_for_termination(self) -> None:
        """Returns when the server has stopped."""
        await self.server.wait_for_termination()


def server_options(max_message_mb: int) -> list[tuple[str, Any]]:
    """Channel arguments every server uses."""
    limit = max_message_mb * 1024 * 1024
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # Clients re-resolve after this, so replicas added later get traffic; long streams get a grace.
        ("grpc.max_connection_age_ms", 5 * 60_000),
        ("grpc.max_connection_age_grace_ms", 60 * 60_000),
    ]


async def build_server(
    bindings: Sequence[ServiceBinding],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_mb: int = 32,
    tracing: bool = True,
    security: ServerSecurity | None = None,
) -> RunningServer:
    """Builds, binds and starts a server; returns it with the bound port.

    Raises:
        OSError: when the port cannot be bound (taken, or not allowed).
    """
    security = security or ServerSecurity()
    server = grpc.aio.server(options=server_options(max_message_mb))
    # Outermost first: the span covers the whole call, auth refuses before any work, errors map last.
    layers: list[Layer] = []
    if tracing:
        layers.append(tracing_layer(tracer_provider()))
    if security.tokens is not None:
        layers.append(auth_layer(security.tokens))
    layers.append(error_layer)
    layers.append(completion_layer)  # innermost: the work itself, shielded from the caller leaving
    # No grpc.aio interceptors: each handler is wrapped once as it registers (tdev_common.handler_layers).
    registrar: Any = LayeredServer(server, layers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    names = [binding.descriptor.full_name for binding in bindings]
    for binding in bindings:
        binding.add_to_server(binding.servicer, registrar)
    # v1 and v1alpha, with the protos' comments (tdev_common.reflection)
    enable_reflection(registrar, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    try:
        if security.tls_cert and security.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(security.tls_key, security.tls_cert)],
                root_certificates=security.tls_client_ca,
                require_client_auth=security.tls_client_ca is not None and security.require_client_auth,
            )
            bound = server.add_secure_port(f"{host}:{port}", credentials)
        else:
            bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error}") from error
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}: the port is taken or not allowed")
    await server.start()
    running = RunningServer(server=server, port=bound, health=health_servicer, service_names=names)
    await running.set_serving(True)
    tls = "mtls" if security.tls_cert and security.tls_client_ca else "tls" if security.tls_cert else "plaintext"
    log.info("server_started", address=f"{host}:{bound}", services=names, transport=tls)
    return running


def install_stop_signals(stop: asyncio.Event) -> None:
    """Sets ``stop`` on SIGTERM or SIGINT (ECS sends SIGTERM, a person presses Ctrl-C)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
