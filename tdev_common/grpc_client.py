"""Channels to other services by configured address, with default deadlines, retries and tracing.

Addresses are ``127.0.0.1:PORT`` locally and Cloud Map DNS names such as ``registry.tdev.local:50051``
on ECS. Retries use gRPC's own retry policy (service config), declared only for the methods whose proto
says ``option idempotency_level`` (reads, watches, and writes the server deduplicates by themselves).
Writes that are idempotent only through a caller's ``request_id`` are retried by ``tdev_common.retry``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

from tdev_common.client_layers import CallDecorations, LayeredChannel

_RETRYABLE_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


def idempotent_methods(services: Sequence[ServiceDescriptor]) -> dict[str, tuple[str, ...]]:
    """Per service, the methods whose proto declares ``option idempotency_level`` (safe to retry).

    The contract says which calls may be repeated, so a new RPC is retried exactly when its proto says so,
    never because someone remembered to add it to a list.
    """
    return {
        service.full_name: tuple(
            method.name for method in service.methods if method.GetOptions().idempotency_level in _RETRYABLE_LEVELS
        )
        for service in services
    }


def _mesh_services() -> list[ServiceDescriptor]:
    from grpc_health.v1 import health_pb2
    from tdev.builder.v1 import builder_service_pb2
    from tdev.evolution.v1 import evolution_service_pb2
    from tdev.registry.v1 import registry_service_pb2
    from tdev.workflow.v1 import workflow_service_pb2

    return [
        registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"],
        workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"],
        builder_service_pb2.DESCRIPTOR.services_by_name["BuilderService"],
        evolution_service_pb2.DESCRIPTOR.services_by_name["EvolutionService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]


@functools.cache
def _idempotent_mesh_methods() -> dict[str, tuple[str, ...]]:
    methods = idempotent_methods(_mesh_services())
    # grpc.health.v1 predates idempotency options; Check only reads.
    methods["grpc.health.v1.Health"] = ("Check",)
    return methods


def service_config(max_attempts: int = 4) -> str:
    """The JSON service config: retry UNAVAILABLE with exponential backoff on idempotent methods."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [
                        {"service": service, "method": method}
                        for service, methods in _idempotent_mesh_methods().items()
                        for method in methods
                    ],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class ClientSecurity:
    """What a channel to another service presents: this service's bearer token, the CA to trust for TLS and,
    for servers that require mTLS, the client certificate and key to present.

    Passed to each channel (tdev_common.runtime loads it from the settings), never set process-wide.
    """

    service_token: str | None = None
    tls_ca: bytes | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None


def open_channel(
    address: str,
    *,
    deadline_seconds: float = 30.0,
    max_message_mb: int = 32,
    tracing: bool = True,
    retries: bool = True,
    security: ClientSecurity | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``address`` with deadlines, retry policy, the service token and trace propagation
    (``tdev_common.client_layers``: added per call, not by grpc.aio client interceptors).

    TLS when ``security.tls_ca`` is set (presenting ``tls_cert``/``tls_key`` when given), else plaintext.
    """
    limit = max_message_mb * 1024 * 1024
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    if retries:
        options.append(("grpc.service_config", service_config()))
    security = security or ClientSecurity()
    tracer = None
    if tracing:
        from tdev_common.telemetry import tracer_provider

        tracer = tracer_provider().get_tracer("tdev_common.client_layers")
    decorations = CallDecorations(default_timeout=deadline_seconds, token=security.service_token, tracer=tracer)
    if security.tls_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=security.tls_ca, private_key=security.tls_key, certificate_chain=security.tls_cert
        )
        return LayeredChannel(grpc.aio.secure_channel(address, credentials, options=options), decorations)
    return LayeredChannel(grpc.aio.insecure_channel(address, options=options), decorations)
