"""Each service starts on SQLite and on Postgres, reports SERVING and serves reflection."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tdev_cli.mesh import SERVICES, MeshService
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle

pytestmark = pytest.mark.mesh  # real servers or subprocesses


async def start(service: MeshService, common: CommonSettings) -> ServiceHandle:
    server = importlib.import_module(f"{service.module}.server")
    config = importlib.import_module(f"{service.module}.config")
    settings_cls = getattr(config, f"{service.name.capitalize()}Settings")
    handle: ServiceHandle = await server.create_server(settings_cls(), common, port=0)
    return handle


@pytest.fixture
async def channel_to() -> AsyncIterator[list[grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []
    yield channels
    for channel in channels:
        await channel.close()


def described_methods(address: str, service: str) -> list[str]:
    """Method names of a service, built only from the descriptors reflection serves."""
    with grpc.insecure_channel(address) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        return [method.name for method in pool.FindServiceByName(service).methods]


async def reflection_answers(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([request]))
    async for answer in call:
        return answer
    raise AssertionError("no reflection answer")


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
async def test_service_serves_health_and_reflection_on_each_database(
    service: MeshService, database_url: str, common_settings: CommonSettings
) -> None:
    common = common_settings.model_copy(update={"database_url": database_url})
    handle = await start(service, common)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service.grpc_service), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            listing = await reflection_answers(
                channel, reflection_pb2.ServerReflectionRequest(list_services="")
            )
            names = {entry.name for entry in listing.list_services_response.service}
            assert {service.grpc_service, "grpc.health.v1.Health"} <= names

            methods = await asyncio.to_thread(
                described_methods, f"127.0.0.1:{handle.port}", service.grpc_service
            )
            assert len(methods) >= 5
            assert all(name[0].isupper() for name in methods)
    finally:
        await handle.close(grace=1)


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
async def test_health_reports_not_serving_after_stop_begins(
    service: MeshService, common_settings: CommonSettings
) -> None:
    handle = await start(service, common_settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        await handle.running.set_serving(False)
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service.grpc_service), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await handle.close(grace=1)
