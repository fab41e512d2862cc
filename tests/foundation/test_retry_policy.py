"""Which calls are retried comes from the protos' idempotency options, and retries never stack."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc
from tdev.workflow.v1 import workflow_service_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as wf_pb2_grpc

from builder_svc.clients import GrpcRegistry, GrpcWorkflows
from builder_svc.domain import WorkflowDefinition
from tdev_common.errors import Unavailable, Unimplemented
from tdev_common.grpc_client import _mesh_services, idempotent_methods, open_channel
from tdev_common.grpc_server import RunningServer, ServiceBinding, build_server
from tdev_common.retry import retry_keyed_write

pytestmark = pytest.mark.mesh  # real servers or subprocesses

READ_PREFIXES = ("Get", "List", "Search", "Watch")


def test_every_read_rpc_declares_no_side_effects_and_creates_declare_nothing() -> None:
    for service in _mesh_services()[:4]:
        for method in service.methods:
            level = method.GetOptions().idempotency_level
            if method.name.startswith(READ_PREFIXES):
                assert level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, method.full_name
            if method.name.startswith(("Create", "Start", "Execute", "Build")):
                # Safe to repeat only with the caller's request_id: never retried by the channel.
                assert level == descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN, method.full_name


def test_the_retry_policy_lists_exactly_the_methods_the_protos_mark() -> None:
    methods = idempotent_methods(_mesh_services())
    assert "GetAgent" in methods["tdev.registry.v1.RegistryService"]
    assert "RecordExecutions" in methods["tdev.registry.v1.RegistryService"]
    assert "CreateWorkflow" not in methods["tdev.workflow.v1.WorkflowService"]
    assert "StartExecution" not in methods["tdev.workflow.v1.WorkflowService"]


class AlwaysDown(pb2_grpc.RegistryServiceServicer, wf_pb2_grpc.WorkflowServiceServicer):
    """Answers every call UNAVAILABLE and counts the attempts it saw."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def GetAgent(self, request: pb2.GetAgentRequest, context: grpc.aio.ServicerContext) -> pb2.GetAgentResponse:
        self.calls["GetAgent"] += 1
        raise Unavailable("down for the test")

    async def CreateWorkflow(
        self, request: wf_pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> wf_pb2.CreateWorkflowResponse:
        self.calls["CreateWorkflow"] += 1
        raise Unavailable("down for the test")

    async def ListWorkflows(
        self, request: wf_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> wf_pb2.ListWorkflowsResponse:
        self.calls["ListWorkflows"] += 1
        raise Unimplemented("not here")


@pytest.fixture
async def down() -> AsyncIterator[tuple[RunningServer, AlwaysDown]]:
    servicer = AlwaysDown()
    server = await build_server([
        ServiceBinding(pb2.DESCRIPTOR.services_by_name["RegistryService"], servicer,
                       pb2_grpc.add_RegistryServiceServicer_to_server),
        ServiceBinding(wf_pb2.DESCRIPTOR.services_by_name["WorkflowService"], servicer,
                       wf_pb2_grpc.add_WorkflowServiceServicer_to_server),
    ], tracing=False)
    yield server, servicer
    await server.stop(0)


async def test_a_read_is_retried_by_the_channel_only_not_once_more_by_the_caller(
    down: tuple[RunningServer, AlwaysDown],
) -> None:
    server, servicer = down
    channel = open_channel(f"127.0.0.1:{server.port}", tracing=False)
    try:
        with pytest.raises(Unavailable):
            await GrpcRegistry(channel, 5.0).get("agent_x", "")
    finally:
        await channel.close()
    assert servicer.calls["GetAgent"] == 4  # the service config's maxAttempts, not 4 x the builder's tries


async def test_a_keyed_write_is_not_retried_by_the_channel_but_by_the_one_helper(
    down: tuple[RunningServer, AlwaysDown],
) -> None:
    server, servicer = down
    channel = open_channel(f"127.0.0.1:{server.port}", tracing=False)
    try:
        stub = wf_pb2_grpc.WorkflowServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateWorkflow(wf_pb2.CreateWorkflowRequest())
        assert servicer.calls["CreateWorkflow"] == 1
        with pytest.raises(Unavailable):
            await GrpcWorkflows(channel, 5.0, attempts=3).create(
                WorkflowDefinition(name="w", version="1.0.0", description="", nodes=(), outputs={}, metadata={}),
                "req-1")
        assert servicer.calls["CreateWorkflow"] == 1 + 3
    finally:
        await channel.close()


async def test_the_helper_does_not_retry_what_is_not_unavailable(down: tuple[RunningServer, AlwaysDown]) -> None:
    server, servicer = down
    channel = open_channel(f"127.0.0.1:{server.port}", tracing=False)
    try:
        stub = wf_pb2_grpc.WorkflowServiceStub(channel)
        with pytest.raises(Unimplemented):
            await retry_keyed_write(lambda: stub.ListWorkflows(wf_pb2.ListWorkflowsRequest()), "list", 5,
                                    initial_seconds=0.01)
    finally:
        await channel.close()
    assert servicer.calls["ListWorkflows"] == 1
