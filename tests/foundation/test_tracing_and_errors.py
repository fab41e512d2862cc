"""One trace across services, and the one place that maps errors to status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from tdev_common.errors import FieldViolation, InvalidArgument, NotFound
from tdev_common.grpc_client import open_channel
from tdev_common.grpc_server import RunningServer, ServiceBinding, build_server
from tdev_common.server_tracing import _unexported_span
from tdev_common.telemetry import configure_tracing

pytestmark = pytest.mark.mesh  # real servers or subprocesses

EXPORTER = InMemorySpanExporter()
configure_tracing("tests", span_exporter=EXPORTER)


class Downstream(pb2_grpc.RegistryServiceServicer):
    """Plays the registry: answers GetAgent, fails in the ways a service can fail."""

    async def GetAgent(
        self, request: pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentResponse:
        if request.agent_id == "missing":
            raise NotFound('agent "missing" not found')
        if request.agent_id == "bad":
            raise InvalidArgument("code is invalid", violations=[FieldViolation("code", "line 3: no class")])
        if request.agent_id == "gone":
            raise NotFound('agent "gone" not found', reason="AGENT_NOT_FOUND")
        if request.agent_id == "crash":
            raise RuntimeError("secret internals")
        response = pb2.GetAgentResponse()
        response.agent.agent_id = request.agent_id
        return response


class Upstream(pb2_grpc.RegistryServiceServicer):
    """Plays a service that calls another: GetAgent is answered by asking the downstream one."""

    def __init__(self, address: str) -> None:
        self._channel = open_channel(address)

    async def GetAgent(
        self, request: pb2.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb2.GetAgentResponse:
        answer: pb2.GetAgentResponse = await pb2_grpc.RegistryServiceStub(self._channel).GetAgent(request)
        return answer


def binding(servicer: pb2_grpc.RegistryServiceServicer) -> ServiceBinding:
    return ServiceBinding(
        pb2.DESCRIPTOR.services_by_name["RegistryService"],
        servicer,
        pb2_grpc.add_RegistryServiceServicer_to_server,
    )


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    downstream = await build_server([binding(Downstream())])
    upstream = await build_server([binding(Upstream(f"127.0.0.1:{downstream.port}"))])
    yield upstream, downstream
    await upstream.stop(0)
    await downstream.stop(0)


async def test_one_trace_id_spans_a_call_from_one_service_into_another(
    mesh: tuple[RunningServer, RunningServer],
) -> None:
    upstream, _ = mesh
    EXPORTER.clear()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{upstream.port}") as channel:
        answer = await pb2_grpc.RegistryServiceStub(channel).GetAgent(pb2.GetAgentRequest(agent_id="a1"))
    assert answer.agent.agent_id == "a1"
    spans = [s for s in EXPORTER.get_finished_spans() if s.name.endswith("RegistryService/GetAgent")]
    kinds = sorted(s.kind.name for s in spans)
    assert kinds == ["CLIENT", "SERVER", "SERVER"]
    assert len({s.context.trace_id for s in spans}) == 1
    client = next(s for s in spans if s.kind == SpanKind.CLIENT)
    inner_server = next(
        s
        for s in spans
        if s.kind == SpanKind.SERVER and s.parent is not None and s.parent.span_id == client.context.span_id
    )
    assert inner_server.context.trace_id == client.context.trace_id


async def call_downstream(server: RunningServer, agent_id: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb2_grpc.RegistryServiceStub(channel).GetAgent(pb2.GetAgentRequest(agent_id=agent_id))
    return caught.value


async def test_domain_error_maps_to_its_code_with_error_info(
    mesh: tuple[RunningServer, RunningServer],
) -> None:
    _, downstream = mesh
    error = await call_downstream(downstream, "missing")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == 'agent "missing" not found'
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "NOT_FOUND" and info.domain == "tdev.dev" and info.metadata["request_id"]


def _reason_and_violations(error: grpc.aio.AioRpcError) -> tuple[str, list[tuple[str, str]]]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, violations = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return reason, violations


@pytest.mark.parametrize(("agent_id", "code", "reason", "violations"), [
    ("gone", grpc.StatusCode.NOT_FOUND, "AGENT_NOT_FOUND", []),
    ("bad", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", [("code", "line 3: no class")]),
])
async def test_a_dependency_error_reaches_the_caller_with_its_reason_and_violations(
    mesh: tuple[RunningServer, RunningServer], agent_id: str, code: grpc.StatusCode, reason: str,
    violations: list[tuple[str, str]],
) -> None:
    upstream, _ = mesh
    error = await call_downstream(upstream, agent_id)
    assert error.code() == code
    assert _reason_and_violations(error) == (reason, violations)


async def test_field_violations_travel_as_bad_request(mesh: tuple[RunningServer, RunningServer]) -> None:
    _, downstream = mesh
    error = await call_downstream(downstream, "bad")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("code", "line 3: no class")]


async def test_unexpected_exception_is_internal_without_internals(
    mesh: tuple[RunningServer, RunningServer],
) -> None:
    _, downstream = mesh
    error = await call_downstream(downstream, "crash")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (error.details() or "")
    assert "request id" in (error.details() or "")


async def test_unavailable_dependency_propagates_as_unavailable(
    mesh: tuple[RunningServer, RunningServer],
) -> None:
    upstream, downstream = mesh
    await downstream.stop(0)
    error = await call_downstream(upstream, "a1")
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_health_service_is_reflected_by_name() -> None:
    assert health_pb2.DESCRIPTOR.services_by_name["Health"].full_name == "grpc.health.v1.Health"


async def test_a_failed_call_s_server_span_carries_its_status_code_and_caller(
    mesh: tuple[RunningServer, RunningServer],
) -> None:
    _, downstream = mesh
    EXPORTER.clear()
    error = await call_downstream(downstream, "missing")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    server = next(s for s in EXPORTER.get_finished_spans() if s.kind == SpanKind.SERVER)
    attributes = dict(server.attributes or {})
    assert server.name == "/tdev.registry.v1.RegistryService/GetAgent"
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "tdev.registry.v1.RegistryService"
    assert attributes["rpc.method"] == "GetAgent"
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert attributes["net.peer.ip"] == "127.0.0.1"
    assert server.status.status_code == StatusCode.ERROR
    assert 'agent "missing" not found' in (server.status.description or "")


async def test_a_successful_call_s_server_span_is_ok(mesh: tuple[RunningServer, RunningServer]) -> None:
    _, downstream = mesh
    EXPORTER.clear()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{downstream.port}") as channel:
        await pb2_grpc.RegistryServiceStub(channel).GetAgent(pb2.GetAgentRequest(agent_id="a1"))
    server = next(s for s in EXPORTER.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert dict(server.attributes or {})["rpc.grpc.status_code"] == 0
    assert server.status.status_code == StatusCode.UNSET


def test_an_unexported_span_continues_the_caller_s_trace_with_its_sampling_flag() -> None:
    caller = SpanContext(trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = trace.set_span_in_context(NonRecordingSpan(caller))
    span = _unexported_span(parent, RandomIdGenerator())
    context = span.get_span_context()
    assert (context.trace_id, context.trace_flags, context.is_remote) == (0x1234, TraceFlags.SAMPLED, False)
    assert context.span_id not in (0, 0x99)
    assert not span.is_recording()
    fresh = _unexported_span(None, RandomIdGenerator()).get_span_context()
    assert fresh.is_valid and fresh.trace_id != 0x1234 and fresh.trace_flags == TraceFlags.DEFAULT


async def test_a_failed_downstream_call_s_client_span_carries_its_status_code(
    mesh: tuple[RunningServer, RunningServer],
) -> None:
    upstream, _ = mesh
    EXPORTER.clear()
    error = await call_downstream(upstream, "missing")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    for _ in range(50):  # the CLIENT span ends as the call's done-callback runs
        client = [s for s in EXPORTER.get_finished_spans() if s.kind == SpanKind.CLIENT]
        if client:
            break
        await asyncio.sleep(0.01)
    (span,) = client
    attributes = dict(span.attributes or {})
    assert span.name == "/tdev.registry.v1.RegistryService/GetAgent"
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert attributes["rpc.method"] == "GetAgent"
    assert span.status.status_code == StatusCode.ERROR
