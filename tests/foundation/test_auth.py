"""Bearer tokens with per-method permissions; production mode refuses to run without them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import boto3
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moto import mock_aws
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from tdev_common.auth import AuthConfigError, TokenTable, required_permission
from tdev_common.config import CommonSettings
from tdev_common.errors import NotFound
from tdev_common.grpc_client import ClientSecurity, open_channel
from tdev_common.grpc_server import RunningServer, ServerSecurity, ServiceBinding, build_server
from tdev_common.runtime import load_server_security

pytestmark = pytest.mark.mesh  # real servers or subprocesses

READER = "reader-token-0123456789abcdef"
WRITER = "writer-token-0123456789abcdef"
TOKENS = json.dumps({"tokens": [
    {"name": "reader", "token": READER, "permissions": ["registry:read"]},
    {"name": "writer", "token": WRITER, "permissions": ["registry:*"]},
]})


class Registry(pb2_grpc.RegistryServiceServicer):
    async def GetAgent(self, request: pb2.GetAgentRequest, context: grpc.aio.ServicerContext
                       ) -> pb2.GetAgentResponse:
        return pb2.GetAgentResponse()

    async def RegisterAgent(self, request: pb2.RegisterAgentRequest, context: grpc.aio.ServicerContext
                            ) -> pb2.RegisterAgentResponse:
        raise NotFound("reached the servicer")


@pytest.fixture
async def secured() -> AsyncIterator[RunningServer]:
    server = await build_server([ServiceBinding(pb2.DESCRIPTOR.services_by_name["RegistryService"], Registry(),
                                                pb2_grpc.add_RegistryServiceServicer_to_server)],
                                security=ServerSecurity(tokens=TokenTable.from_json(TOKENS)))
    yield server
    await server.stop(0)


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_calls_without_a_valid_token_are_unauthenticated(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = pb2_grpc.RegistryServiceStub(channel)
        for extra in ((), metadata("not-a-known-token-at-all")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetAgent(pb2.GetAgentRequest(agent_id="a"), metadata=extra)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in (caught.value.details() or "")


async def test_permissions_are_checked_per_method(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = pb2_grpc.RegistryServiceStub(channel)
        await stub.GetAgent(pb2.GetAgentRequest(agent_id="a"), metadata=metadata(READER))
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.RegisterAgent(pb2.RegisterAgentRequest(name="x"), metadata=metadata(READER))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "registry:write" in (denied.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as reached:
            await stub.RegisterAgent(pb2.RegisterAgentRequest(name="x"), metadata=metadata(WRITER))
        assert reached.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_stays_open_for_load_balancers(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_service_token_is_sent_by_channels(secured: RunningServer) -> None:
    channel = open_channel(f"127.0.0.1:{secured.port}", tracing=False, security=ClientSecurity(WRITER, None))
    try:
        await pb2_grpc.RegistryServiceStub(channel).GetAgent(pb2.GetAgentRequest(agent_id="a"))
    finally:
        await channel.close()


async def test_a_server_built_next_to_a_secured_one_keeps_its_own_security(secured: RunningServer) -> None:
    # No process-wide security state: an open server in the same process stays open.
    open_server = await build_server([ServiceBinding(pb2.DESCRIPTOR.services_by_name["RegistryService"], Registry(),
                                                     pb2_grpc.add_RegistryServiceServicer_to_server)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{open_server.port}") as channel:
            await pb2_grpc.RegistryServiceStub(channel).GetAgent(pb2.GetAgentRequest(agent_id="a"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb2_grpc.RegistryServiceStub(channel).GetAgent(pb2.GetAgentRequest(agent_id="a"))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await open_server.stop(0)


def test_required_permission_by_method_name() -> None:
    assert required_permission("/tdev.registry.v1.RegistryService/GetAgent") == "registry:read"
    assert required_permission("/tdev.workflow.v1.WorkflowService/WatchExecution") == "workflow:read"
    assert required_permission("/tdev.workflow.v1.WorkflowService/CancelExecution") == "workflow:write"
    assert required_permission("/grpc.health.v1.Health/Check") is None


def test_production_mode_refuses_to_start_without_tokens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthConfigError, match="refusing to start in production mode without auth"):
        load_server_security(CommonSettings(mode="production", data_dir=tmp_path))


def test_short_tokens_are_rejected_without_echoing_them() -> None:
    with pytest.raises(AuthConfigError) as caught:
        TokenTable.from_json(json.dumps({"tokens": [{"name": "ci", "token": "short-secret"}]}))
    assert "short-secret" not in str(caught.value)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def test_production_tokens_come_from_secrets_manager(aws: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="/t-developer/prod/auth/tokens", SecretString=TOKENS
    )
    common = CommonSettings(mode="production", secrets_prefix="/t-developer/prod/", aws_region="us-east-1",
                            data_dir=tmp_path)
    security = load_server_security(common)
    assert security.tokens is not None and len(security.tokens) == 2
    principal = security.tokens.lookup(READER)
    assert principal is not None and principal.name == "reader" and principal.may("registry:read")
