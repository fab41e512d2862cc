"""Every RPC of every service, called from its descriptor with hostile requests, never answers UNKNOWN or INTERNAL.

The requests are built from the protos alone (no knowledge of what each RPC does): empty, oversized,
wrong-typed, undecodable and seeded-random ones, with the values the fault campaign found breaking services
(NUL characters, NaN and Infinity inside Structs, out-of-range Timestamps, unknown enum numbers, 20,000-
character ids, Structs nested 33 levels deep). The mesh runs on Postgres, which is where most of them used to
fail.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tdev.builder.v1 import builder_service_pb2
from tdev.evolution.v1 import evolution_service_pb2
from tdev.registry.v1 import registry_service_pb2
from tdev.workflow.v1 import workflow_service_pb2

from tdev_common.config import CommonSettings
from tests.support.inprocess_mesh import inprocess_mesh

pytestmark = [pytest.mark.mesh, pytest.mark.asyncio(loop_scope="module")]

SERVICE_DESCRIPTORS = [
    ("registry", registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"]),
    ("workflow", workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"]),
    ("builder", builder_service_pb2.DESCRIPTOR.services_by_name["BuilderService"]),
    ("evolution", evolution_service_pb2.DESCRIPTOR.services_by_name["EvolutionService"]),
]
METHODS = [(name, method) for name, service in SERVICE_DESCRIPTORS for method in service.methods]
FORBIDDEN = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
HOSTILE_STRINGS = ["", "x", "wf_\x00", "\x00", "r\x00", "a" * 20_000, "é€𝄞", "agent_0000", "1.0.0", "../../etc"]
HOSTILE_NUMBERS = [0.0, -1.0, 1e308, float("nan"), float("inf"), float("-inf")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory,
               make_module_postgres: Callable[[], str]) -> AsyncIterator[dict[str, int]]:
    data: Path = tmp_path_factory.mktemp("edges")
    common = CommonSettings(data_dir=data, database_url=make_module_postgres(), log_json=True)
    async with inprocess_mesh(common) as ports:
        yield ports


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channels(mesh: dict[str, int]) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: grpc.aio.insecure_channel(f"127.0.0.1:{port}") for name, port in mesh.items()}
    yield opened
    for channel in opened.values():
        await channel.close()


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call_raw(channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """Sends raw request bytes; returns the status code (streams are read to their end or a short deadline)."""
    error = await call_raw_error(channel, method, payload)
    return grpc.StatusCode.OK if error is None else error.code()


async def call_raw_error(
    channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes
) -> grpc.aio.AioRpcError | None:
    """Like :func:`call_raw`, answering the error itself (None for OK)."""
    try:
        if method.server_streaming:
            stream = channel.unary_stream(_path(method))(payload, timeout=3)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(_path(method))(payload, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def detail_problems(error: grpc.aio.AioRpcError) -> list[str]:
    """What is wrong with the details of an answer the services made (empty when nothing is).

    Every INVALID_ARGUMENT carries ErrorInfo and a BadRequest with at least one field violation, and no
    ErrorInfo.reason is the bare code name (reasons say what went wrong; INTERNAL is the one generic answer).
    """
    code = error.code()
    status = rpc_status.from_call(error)
    if status is None:
        # Only the client's own deadline (a stream read until the short test deadline) comes without details.
        return [] if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED) else [
            f"{code.name} without google.rpc.Status details"]
    problems = []
    reasons = []
    violations = 0
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += len(bad.field_violations)
    if len(reasons) != 1:
        problems.append(f"{code.name} with {len(reasons)} ErrorInfo details")
    if any(reason == code.name and code != grpc.StatusCode.INTERNAL for reason in reasons):
        problems.append(f"{code.name} with the bare reason {code.name}: {error.details()}")
    if code == grpc.StatusCode.INVALID_ARGUMENT and violations == 0:
        problems.append(f"INVALID_ARGUMENT ({reasons}) without a BadRequest field violation: {error.details()}")
    return problems


def _request_class(method: MethodDescriptor) -> type[Message]:
    return GetMessageClass(method.input_type)


# ----- request generators, from the descriptors only -----------------------------------------------------------

def _fill_struct(struct: struct_pb2.Struct, rng: random.Random, depth: int) -> None:
    for index in range(rng.randint(0, 3)):
        key = rng.choice(["x", "text", "\x00k", f"k{index}"])
        choice = rng.random()
        if choice < 0.4:
            struct[key] = rng.choice(HOSTILE_NUMBERS)
        elif choice < 0.7:
            struct[key] = rng.choice(HOSTILE_STRINGS[:7])
        elif depth < 3:
            _fill_struct(struct.get_or_create_struct(key), rng, depth + 1)
        else:
            struct[key] = [1, "a", None, float("nan")]


def _random_scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(HOSTILE_STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randint(0, 64))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(HOSTILE_NUMBERS)
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return rng.choice([*numbers, 7_777, -3])
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1])
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice([0, 1, 2**64 - 1])
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return rng.choice([0, 1, -1, 2**31 - 1, -(2**31)])
    return rng.choice([0, 1, -1, 2**63 - 1, -(2**63)])


def fill_random(message: Message, rng: random.Random, depth: int = 0) -> None:
    """Sets a random subset of ``message``'s fields to hostile values, recursing into sub-messages."""
    descriptor: Descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Struct":
        _fill_struct(message, rng, 0)  # type: ignore[arg-type]
        return
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds = rng.choice([0, 1_700_000_000, 253_402_300_800, -70_000_000_000])  # type: ignore[attr-defined]
        message.nanos = rng.choice([0, 5, 1_000_000_000, -1])  # type: ignore[attr-defined]
        return
    for field in descriptor.fields:
        if rng.random() < 0.4:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 3:
                continue
            if field.message_type.GetOptions().map_entry:
                container = getattr(message, field.name)
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(rng.randint(1, 3)):
                    key = rng.choice(HOSTILE_STRINGS[:6])
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        fill_random(container[key], rng, depth + 1)
                    else:
                        container[key] = _random_scalar(value_field, rng)
            elif field.is_repeated:
                for _ in range(rng.randint(1, 3)):
                    fill_random(getattr(message, field.name).add(), rng, depth + 1)
            else:
                fill_random(getattr(message, field.name), rng, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend(_random_scalar(field, rng) for _ in range(rng.randint(1, 3)))
        else:
            setattr(message, field.name, _random_scalar(field, rng))


def oversized(method: MethodDescriptor) -> bytes:
    """Every top-level string field 300,000 characters long, every repeated string field 3,000 entries."""
    request = _request_class(method)()
    for field in request.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                getattr(request, field.name).extend(["y" * 50] * 3_000)
            else:
                setattr(request, field.name, "x" * 300_000)
    return request.SerializeToString()


def wrong_typed(method: MethodDescriptor) -> Iterator[bytes]:
    """Another request type's bytes, and each field number sent with every other wire type."""
    others = [other for _, other in METHODS if other.input_type is not method.input_type]
    other = others[hash(method.name) % len(others)]
    donor = _request_class(other)()
    fill_random(donor, random.Random(7))
    yield donor.SerializeToString()
    for field in method.input_type.fields:
        tag = field.number << 3
        yield bytes([tag | 0]) + b"\x96\x01"          # varint
        yield bytes([tag | 1]) + b"\x00" * 8           # 64-bit
        yield bytes([tag | 2]) + b"\x03abc"            # length-delimited
        yield bytes([tag | 5]) + b"\x00" * 4           # 32-bit


def undecodable(method: MethodDescriptor) -> Iterator[bytes]:
    """Bytes that protobuf refuses to decode: invalid UTF-8 in a string, truncation, a 33-deep Struct."""
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield bytes([(field.number << 3) | 2]) + b"\x02\xff\xfe"
        yield bytes([(field.number << 3) | 2]) + b"\x7fab"   # says 127 bytes follow, sends 2
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct":
            deep = struct_pb2.Struct()
            inner = deep
            for _ in range(40):
                inner = inner.get_or_create_struct("n")
            payload = deep.SerializeToString()
            yield bytes([(field.number << 3) | 2]) + _varint(len(payload)) + payload
    yield b"\xff\xff\xff\xff"
    yield random.Random(method.name).randbytes(40)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def random_requests(method: MethodDescriptor, count: int) -> Iterator[bytes]:
    rng = random.Random(f"{method.full_name}:edges")
    for _ in range(count):
        request = _request_class(method)()
        fill_random(request, rng)
        yield request.SerializeToString()


# ----- the descriptor-driven test -------------------------------------------------------------------------------

@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
async def test_no_request_makes_an_rpc_answer_unknown_or_internal(
    channels: dict[str, grpc.aio.Channel], service: str, method: MethodDescriptor
) -> None:
    channel = channels[service]
    payloads = [
        ("empty", b""),
        ("oversized", oversized(method)),
        *(("wrong-typed", payload) for payload in wrong_typed(method)),
        *(("undecodable", payload) for payload in undecodable(method)),
        *(("random", payload) for payload in random_requests(method, 12)),
    ]
    failures = []
    for kind, payload in payloads:
        error = await call_raw_error(channel, method, payload)
        if error is None:
            continue
        if error.code() in FORBIDDEN:
            failures.append(f"{kind} {payload[:60]!r} -> {error.code().name}")
        failures.extend(f"{kind} {payload[:60]!r} -> {problem}" for problem in detail_problems(error))
    assert not failures, "\n".join(failures)


# ----- each finding of the fault campaign, with the exact answer ------------------------------------------------

async def _invalid_argument(channel: grpc.aio.Channel, method: MethodDescriptor, request: Message) -> Any:
    try:
        if method.server_streaming:
            stream = channel.unary_stream(_path(method), request_serializer=lambda m: m.SerializeToString())
            async for _ in stream(request, timeout=5):
                pass
        else:
            await channel.unary_unary(_path(method), request_serializer=lambda m: m.SerializeToString())(
                request, timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        return error
    raise AssertionError(f"{method.name} accepted {request}")


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


def _method(service: str, name: str) -> MethodDescriptor:
    return dict(SERVICE_DESCRIPTORS)[service].methods_by_name[name]


@pytest.mark.parametrize(("service", "name", "fields"), [
    ("workflow", "GetWorkflow", {"workflow_id": "wf_\x00"}),
    ("registry", "ListAgents", {"capability": "\x00"}),
    ("workflow", "StartExecution", {"workflow_id": "wf_x", "request_id": "r\x00"}),
    ("registry", "GetAgent", {"agent_id": "agent_\x00"}),
    ("builder", "GetBuild", {"build_id": "b\x00"}),
    ("evolution", "GetEvolution", {"run_id": "\x00"}),
])
async def test_a_nul_character_is_invalid_argument_naming_the_field(
    channels: dict[str, grpc.aio.Channel], service: str, name: str, fields: dict[str, str]
) -> None:
    method = _method(service, name)
    request = _request_class(method)(**fields)
    error = await _invalid_argument(channels[service], method, request)
    nul_fields = [key for key, value in fields.items() if "\x00" in value]
    assert set(_violations(error)) == set(nul_fields)
    assert "NUL" in error.details()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
async def test_a_non_finite_number_in_a_struct_is_invalid_argument(
    channels: dict[str, grpc.aio.Channel], value: float
) -> None:
    method = _method("workflow", "StartExecution")
    request = workflow_service_pb2.StartExecutionRequest(workflow_id="wf_x")
    request.inputs.update({"x": value, "ok": 1})
    error = await _invalid_argument(channels["workflow"], method, request)
    assert list(_violations(error)) == ["inputs.x"]


async def test_an_out_of_range_timestamp_is_invalid_argument(channels: dict[str, grpc.aio.Channel]) -> None:
    method = _method("registry", "RecordExecutions")
    request = registry_service_pb2.RecordExecutionsRequest()
    first = request.records.add()
    first.finish_time.seconds = 253_402_300_800
    second = request.records.add()
    second.finish_time.nanos = 1_000_000_000
    error = await _invalid_argument(channels["registry"], method, request)
    assert set(_violations(error)) >= {"records[0].finish_time", "records[1].finish_time.nanos"}


async def test_undecodable_bytes_are_invalid_argument(channels: dict[str, grpc.aio.Channel]) -> None:
    method = _method("registry", "GetAgent")
    for payload in (b"\x0a\x02\xff\xfe", b"\x0a\x7fab"):
        try:
            await channels["registry"].unary_unary(_path(method))(payload, timeout=5)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "could not be decoded" in (error.details() or "")
        else:
            raise AssertionError("undecodable bytes were accepted")


async def test_a_struct_nested_33_levels_is_invalid_argument(channels: dict[str, grpc.aio.Channel]) -> None:
    method = _method("workflow", "StartExecution")
    request = workflow_service_pb2.StartExecutionRequest(workflow_id="wf_x")
    inner = request.inputs
    for _ in range(33):
        inner = inner.get_or_create_struct("n")
    code = await call_raw(channels["workflow"], method, request.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_long_id_is_invalid_argument_and_the_error_stays_small(
    channels: dict[str, grpc.aio.Channel]
) -> None:
    method = _method("workflow", "GetWorkflow")
    error = await _invalid_argument(
        channels["workflow"], method, workflow_service_pb2.GetWorkflowRequest(workflow_id="w" * 20_000))
    assert "at most 256" in _violations(error)["workflow_id"]
    assert len(error.details() or "") < 1_200


async def test_an_unknown_enum_number_is_invalid_argument(channels: dict[str, grpc.aio.Channel]) -> None:
    method = _method("registry", "ListAgents")
    request = registry_service_pb2.ListAgentsRequest()
    enum_fields = [field for field in request.DESCRIPTOR.fields if field.type == FieldDescriptor.TYPE_ENUM]
    assert enum_fields, "ListAgentsRequest has an enum field to try"
    setattr(request, enum_fields[0].name, 7_777)
    error = await _invalid_argument(channels["registry"], method, request)
    assert enum_fields[0].name in _violations(error)


# ----- required ids ---------------------------------------------------------------------------------------------

REQUIRED_IDS = [
    ("registry", "GetAgent", "agent_id"),
    ("registry", "ListAgentVersions", "agent_id"),
    ("registry", "GetAgentLineage", "agent_id"),
    ("registry", "UpdateAgentLabels", "agent_id"),
    ("registry", "GetAgentExecutionStats", "agent_id"),
    ("workflow", "GetWorkflow", "workflow_id"),
    ("workflow", "StartExecution", "workflow_id"),
    ("workflow", "ExecuteWorkflow", "workflow_id"),
    ("workflow", "GetExecution", "execution_id"),
    ("workflow", "WatchExecution", "execution_id"),
    ("workflow", "CancelExecution", "execution_id"),
    ("builder", "GetBuild", "build_id"),
    ("builder", "WatchBuild", "build_id"),
    ("builder", "CancelBuild", "build_id"),
    ("evolution", "StartEvolution", "agent_id"),
    ("evolution", "GetEvolution", "run_id"),
    ("evolution", "WatchEvolution", "run_id"),
    ("evolution", "CancelEvolution", "run_id"),
    ("evolution", "GetEvolutionPolicy", "agent_id"),
    ("evolution", "DeleteEvolutionPolicy", "agent_id"),
    ("evolution", "TriggerEvolutionPolicy", "agent_id"),
]


def test_every_rpc_naming_one_resource_is_in_the_required_id_list() -> None:
    """Get/Watch/Cancel/Start RPCs whose request names a resource by id must be covered below."""
    covered = {(service, name) for service, name, _ in REQUIRED_IDS}
    expected = {
        (service, method.name) for service, method in METHODS
        if method.name.startswith(("Get", "Watch", "Cancel", "Start", "Execute", "Update"))
        and any(f.name.endswith("_id") and f.name != "request_id" for f in method.input_type.fields)
    }
    assert expected <= covered, sorted(expected - covered)


@pytest.mark.parametrize(("service", "name", "field"), REQUIRED_IDS, ids=[f"{s}.{n}" for s, n, _ in REQUIRED_IDS])
async def test_an_empty_required_id_is_invalid_argument_naming_the_field(
    channels: dict[str, grpc.aio.Channel], service: str, name: str, field: str
) -> None:
    method = _method(service, name)
    error = await _invalid_argument(channels[service], method, _request_class(method)())
    assert _reason(error) == "FIELD_REQUIRED", error.details()
    assert field in _violations(error)


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


# ----- request ids: the same request replays, a different one is refused -----------------------------------------

AGENT_CODE = (Path(__file__).resolve().parents[2] / "examples" / "agents" / "sum_numbers.py").read_text()
REQUIREMENTS = "Given a list of numbers, compute the mean, median, min, max and standard deviation."


async def _unary(channel: grpc.aio.Channel, service: str, name: str, request: Message) -> Any:
    method = _method(service, name)
    response_class = GetMessageClass(method.output_type)
    call = channel.unary_unary(_path(method), request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_class.FromString)
    return await call(request, timeout=30)


async def _first_event(channel: grpc.aio.Channel, service: str, name: str, request: Message) -> Any:
    """The first streamed message; the stream is cancelled after it (the work goes on)."""
    method = _method(service, name)
    response_class = GetMessageClass(method.output_type)
    stream = channel.unary_stream(_path(method), request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=response_class.FromString)(request, timeout=30)
    try:
        async for message in stream:
            return message
    finally:
        stream.cancel()
    raise AssertionError(f"{name} streamed nothing")


async def _reused(channel: grpc.aio.Channel, service: str, name: str, request: Message) -> None:
    """Asserts the exact answer to a request id reused with a different request."""
    error = await _invalid_argument(channel, _method(service, name), request)
    assert _reason(error) == "REQUEST_ID_REUSED", error.details()
    assert list(_violations(error)) == ["request_id"]


async def _registered(channels: dict[str, grpc.aio.Channel], name: str) -> Any:
    answer = await _unary(channels["registry"], "registry", "RegisterAgent",
                          registry_service_pb2.RegisterAgentRequest(name=name, code=AGENT_CODE))
    return answer.agent


async def test_register_agent_replays_a_request_id_and_refuses_it_for_another_request(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    request = registry_service_pb2.RegisterAgentRequest(
        name="edges_sum", code=AGENT_CODE, description="adds", request_id="edges-register-1", labels={"a": "1"})
    first = await _unary(channels["registry"], "registry", "RegisterAgent", request)
    again = await _unary(channels["registry"], "registry", "RegisterAgent", request)
    assert (again.agent.agent_id, again.agent.version, again.created) == (first.agent.agent_id, "1.0.0", False)
    other = registry_service_pb2.RegisterAgentRequest()
    other.CopyFrom(request)
    other.description = "adds numbers"
    await _reused(channels["registry"], "registry", "RegisterAgent", other)
    # The same name and code under a fresh id stays the idempotent same-code answer, and binds that id.
    other.request_id = "edges-register-2"
    same_code = await _unary(channels["registry"], "registry", "RegisterAgent", other)
    assert (same_code.agent.version, same_code.created) == ("1.0.0", False)
    other.description = "adds, again"
    await _reused(channels["registry"], "registry", "RegisterAgent", other)


async def test_update_agent_labels_replays_a_request_id_and_refuses_it_for_another_request(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    agent = await _registered(channels, "edges_labels")
    request = registry_service_pb2.UpdateAgentLabelsRequest(
        agent_id=agent.agent_id, version=agent.version, set_labels={"team": "edges"}, request_id="edges-labels-1")
    first = await _unary(channels["registry"], "registry", "UpdateAgentLabels", request)
    again = await _unary(channels["registry"], "registry", "UpdateAgentLabels", request)
    assert dict(again.agent.labels) == dict(first.agent.labels) == {"team": "edges"}
    request.set_labels["team"] = "other"
    await _reused(channels["registry"], "registry", "UpdateAgentLabels", request)


def _definition(agent_id: str, name: str) -> Any:
    from tdev.workflow.v1 import workflow_pb2

    workflow = workflow_pb2.Workflow(name=name, version="1.0.0")
    node = workflow.nodes.add(id="sum", agent_id=agent_id)
    node.inputs.update({"numbers": {"$ref": "inputs.numbers"}})
    workflow.outputs["total"] = "nodes.sum.output.total"
    return workflow


async def test_create_workflow_replays_a_request_id_and_refuses_it_for_another_request(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    agent = await _registered(channels, "edges_wf_sum")
    request = workflow_service_pb2.CreateWorkflowRequest(
        workflow=_definition(agent.agent_id, "edges-one"), request_id="edges-create-1")
    first = await _unary(channels["workflow"], "workflow", "CreateWorkflow", request)
    again = await _unary(channels["workflow"], "workflow", "CreateWorkflow", request)
    assert again.workflow.workflow_id == first.workflow.workflow_id != ""
    request.workflow.name = "edges-two"
    await _reused(channels["workflow"], "workflow", "CreateWorkflow", request)


async def test_start_execution_and_execute_workflow_replay_a_request_id_and_refuse_it_for_another_request(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    agent = await _registered(channels, "edges_ex_sum")
    create = workflow_service_pb2.CreateWorkflowRequest(workflow=_definition(agent.agent_id, "edges-exec"))
    created = await _unary(channels["workflow"], "workflow", "CreateWorkflow", create)
    workflow_id = created.workflow.workflow_id
    request = workflow_service_pb2.StartExecutionRequest(workflow_id=workflow_id, request_id="edges-exec-1")
    request.inputs.update({"numbers": [1, 2]})
    first = await _unary(channels["workflow"], "workflow", "StartExecution", request)
    again = await _unary(channels["workflow"], "workflow", "StartExecution", request)
    assert again.execution.execution_id == first.execution.execution_id
    # ExecuteWorkflow has the same field layout: the same request through it streams the same execution.
    execute = workflow_service_pb2.ExecuteWorkflowRequest.FromString(request.SerializeToString())
    event = await _first_event(channels["workflow"], "workflow", "ExecuteWorkflow", execute)
    assert event.event.execution_id == first.execution.execution_id
    request.inputs.update({"numbers": [1, 2, 3]})
    await _reused(channels["workflow"], "workflow", "StartExecution", request)
    execute.inputs.update({"numbers": [5]})
    await _reused(channels["workflow"], "workflow", "ExecuteWorkflow", execute)


async def test_start_build_and_build_service_replay_a_request_id_and_refuse_it_for_another_request(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    request = builder_service_pb2.StartBuildRequest(requirements=REQUIREMENTS, request_id="edges-build-1")
    first = await _unary(channels["builder"], "builder", "StartBuild", request)
    try:
        again = await _unary(channels["builder"], "builder", "StartBuild", request)
        assert again.build.build_id == first.build.build_id
        streamed = builder_service_pb2.BuildServiceRequest.FromString(request.SerializeToString())
        event = await _first_event(channels["builder"], "builder", "BuildService", streamed)
        assert event.event.build_id == first.build.build_id
        request.requirements = REQUIREMENTS + " Round to two decimals."
        await _reused(channels["builder"], "builder", "StartBuild", request)
        streamed.constraints.max_fix_attempts = 1
        await _reused(channels["builder"], "builder", "BuildService", streamed)
    finally:
        # Nothing here needs the build to finish: stop it so that it does not compete for the CPU.
        with contextlib.suppress(grpc.aio.AioRpcError):
            await _unary(channels["builder"], "builder", "CancelBuild",
                         builder_service_pb2.CancelBuildRequest(build_id=first.build.build_id))


async def test_start_evolution_replays_a_request_id_and_refuses_it_for_another_request(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    from tdev.evolution.v1 import evolution_pb2

    agent = await _registered(channels, "edges_evo_sum")
    request = evolution_service_pb2.StartEvolutionRequest(agent_id=agent.agent_id, request_id="edges-evo-1")
    for numbers, total in (([1, 2], 3), ([4], 4)):
        case = request.suite.cases.add()
        case.inputs.update({"numbers": numbers})
        case.expected.update({"total": total})
    request.suite.scoring_mode = evolution_pb2.SCORING_MODE_EXACT
    request.config.population_size = 4
    request.config.islands = 1
    request.config.elitism = 0
    request.config.generations = 1
    request.config.operators = evolution_pb2.OPERATOR_SET_PROGRAM_TRANSFORM
    first = await _unary(channels["evolution"], "evolution", "StartEvolution", request)
    try:
        again = await _unary(channels["evolution"], "evolution", "StartEvolution", request)
        assert again.run.run_id == first.run.run_id
        request.config.generations = 2
        await _reused(channels["evolution"], "evolution", "StartEvolution", request)
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await _unary(channels["evolution"], "evolution", "CancelEvolution",
                         evolution_service_pb2.CancelEvolutionRequest(run_id=first.run.run_id))
