"""The four services of the mesh, their ports and how to ask one if it is healthy (``tdev up``; ``tdev status``
asks through the typed client's channels)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tdev_common.grpc_client import ClientSecurity, open_channel


@dataclass(frozen=True)
class MeshService:
    """One service of the mesh."""

    name: str
    module: str
    grpc_service: str
    port_env: str
    default_port: int


SERVICES: tuple[MeshService, ...] = (
    MeshService("registry", "registry_svc", "tdev.registry.v1.RegistryService", "TDEV_REGISTRY_PORT", 50051),
    MeshService("workflow", "workflow_svc", "tdev.workflow.v1.WorkflowService", "TDEV_WORKFLOW_PORT", 50052),
    MeshService("builder", "builder_svc", "tdev.builder.v1.BuilderService", "TDEV_BUILDER_PORT", 50053),
    MeshService(
        "evolution", "evolution_svc", "tdev.evolution.v1.EvolutionService", "TDEV_EVOLUTION_PORT", 50054
    ),
)


async def check_health(address: str, service: str, timeout: float = 2.0, *,
                       security: ClientSecurity | None = None) -> str:
    """The service's health status name, or ``UNREACHABLE`` (also when a TLS handshake is refused)."""
    async with open_channel(address, tracing=False, retries=False, security=security) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
