"""Server reflection, ``grpc.reflection.v1`` and ``v1alpha``, serving the protos' descriptors with their comments.

grpcio-reflection serves v1alpha only, and from a DescriptorPool, whose ``CopyToProto`` drops
``source_code_info``: ``grpcurl describe`` would show no comments. Here both versions answer from the descriptor
set protoc wrote beside the generated code (``tdev/descriptor_set.binpb``, ``--include_source_info
--include_imports``; see scripts/protogen.py), falling back to the default pool only for files that set does not
hold (grpc.health.v1, the reflection protos themselves). The two versions have the same messages on the wire;
v1's descriptor is v1alpha's under its own package, so clients can describe it too.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

log = structlog.get_logger(__name__)

DESCRIPTOR_SET = "descriptor_set.binpb"
V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_METHOD = "ServerReflectionInfo"


class ReflectionIndex:
    """Files by name and the file defining each symbol and extension, from serialized FileDescriptorProtos.

    Files the index does not hold are looked up in ``fallback`` (without comments: a pool keeps none).
    """

    def __init__(
        self, files: Iterable[descriptor_pb2.FileDescriptorProto], fallback: descriptor_pool.DescriptorPool | None
    ) -> None:
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self._serialized: dict[str, bytes] = {}
        self._symbols: dict[str, str] = {}
        self._extensions: dict[str, dict[int, str]] = {}
        self._fallback = fallback
        for file in files:
            self._add(file)

    @classmethod
    def from_descriptor_set(
        cls, data: bytes, fallback: descriptor_pool.DescriptorPool | None = None
    ) -> ReflectionIndex:
        """An index of every file of a serialized FileDescriptorSet.

        Raises:
            google.protobuf.message.DecodeError: when ``data`` is not a FileDescriptorSet.
        """
        return cls(descriptor_pb2.FileDescriptorSet.FromString(data).file, fallback)

    def _add(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._files[file.name] = file
        self._serialized[file.name] = file.SerializeToString()
        scope = f"{file.package}." if file.package else ""
        for message in file.message_type:
            self._add_message(file.name, scope, message)
        for enum in file.enum_type:
            self._add_enum(file.name, scope, enum)
        for extension in file.extension:
            self._add_extension(file.name, scope, extension)
        for service in file.service:
            name = f"{scope}{service.name}"
            self._symbols[name] = file.name
            for method in service.method:
                self._symbols[f"{name}.{method.name}"] = file.name

    def _add_message(self, file_name: str, scope: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{scope}{message.name}"
        self._symbols[name] = file_name
        for field in message.field:
            self._symbols[f"{name}.{field.name}"] = file_name
        for oneof in message.oneof_decl:
            self._symbols[f"{name}.{oneof.name}"] = file_name
        for nested in message.nested_type:
            self._add_message(file_name, f"{name}.", nested)
        for enum in message.enum_type:
            self._add_enum(file_name, f"{name}.", enum)
        for extension in message.extension:
            self._add_extension(file_name, f"{name}.", extension)

    def _add_enum(self, file_name: str, scope: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self._symbols[f"{scope}{enum.name}"] = file_name
        # Enum values are scoped like C++ enumerators: siblings of their enum (protoc's own rule).
        for value in enum.value:
            self._symbols[f"{scope}{value.name}"] = file_name

    def _add_extension(self, file_name: str, scope: str, extension: descriptor_pb2.FieldDescriptorProto) -> None:
        self._symbols[f"{scope}{extension.name}"] = file_name
        self._extensions.setdefault(extension.extendee.lstrip("."), {})[extension.number] = file_name

    def has_source_info(self, name: str) -> bool:
        """True when the indexed file ``name`` carries comments and locations."""
        file = self._files.get(name)
        return file is not None and len(file.source_code_info.location) > 0

    def file(self, name: str) -> bytes | None:
        """The serialized FileDescriptorProto named ``name``, or None."""
        if name in self._serialized:
            return self._serialized[name]
        if self._fallback is None:
            return None
        try:
            found = self._fallback.FindFileByName(name)
        except KeyError:
            return None
        return self._copy(found)

    def _copy(self, found: Any) -> bytes:
        proto = descriptor_pb2.FileDescriptorProto()
        found.CopyToProto(proto)
        self._add(proto)
        return self._serialized[proto.name]

    def file_containing_symbol(self, symbol: str) -> str | None:
        """The name of the file defining ``symbol`` (a message, field, enum, value, service or method)."""
        if symbol in self._symbols:
            return self._symbols[symbol]
        if self._fallback is None:
            return None
        try:
            found = self._fallback.FindFileContainingSymbol(symbol)
        except KeyError:
            return None
        self._copy(found)
        return str(found.name)

    def file_containing_extension(self, containing_type: str, number: int) -> str | None:
        """The name of the file declaring extension ``number`` of ``containing_type``."""
        name = self._extensions.get(containing_type, {}).get(number)
        if name is not None or self._fallback is None:
            return name
        try:
            message = self._fallback.FindMessageTypeByName(containing_type)
            extension = self._fallback.FindExtensionByNumber(message, number)
        except KeyError:
            return None
        # FieldDescriptor.file exists at runtime; types-protobuf does not declare it.
        file = extension.file  # type: ignore[attr-defined]
        self._copy(file)
        return str(file.name)

    def extension_numbers(self, containing_type: str) -> list[int] | None:
        """Every extension number of ``containing_type``; None when the type is unknown."""
        numbers = set(self._extensions.get(containing_type, {}))
        known = containing_type in self._symbols
        if self._fallback is not None:
            try:
                message = self._fallback.FindMessageTypeByName(containing_type)
            except KeyError:
                pass
            else:
                known = True
                numbers.update(extension.number for extension in self._fallback.FindAllExtensions(message))
        return sorted(numbers) if known else None

    def with_dependencies(self, name: str) -> list[bytes]:
        """``name`` first, then every file it imports, transitively, each once (what a reflection client needs
        to build the descriptor)."""
        ordered: list[bytes] = []
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            data = self.file(current)
            if data is None:
                continue
            ordered.append(data)
            pending.extend(self._files[current].dependency)
        return ordered


@dataclass(frozen=True)
class _Messages:
    """The reflection messages of one protocol version (v1 and v1alpha are identical on the wire)."""

    request: Any
    response: Any
    file_descriptors: Any
    extension_numbers: Any
    services: Any
    service: Any
    error: Any


def _messages_of(module_or_classes: Any) -> _Messages:
    def get(name: str) -> Any:
        return module_or_classes(name) if callable(module_or_classes) else getattr(module_or_classes, name)

    return _Messages(
        request=get("ServerReflectionRequest"),
        response=get("ServerReflectionResponse"),
        file_descriptors=get("FileDescriptorResponse"),
        extension_numbers=get("ExtensionNumberResponse"),
        services=get("ListServiceResponse"),
        service=get("ServiceResponse"),
        error=get("ErrorResponse"),
    )


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``: v1alpha's file under the v1 package (the messages are the same)."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for service in proto.service:
        service.options.Clear()
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    return proto


@functools.cache
def _v1_messages() -> _Messages:
    # A private pool: the default one stays free for a real grpc.reflection.v1 module a later grpcio may ship.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1_file_descriptor())
    return _messages_of(
        lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
    )


V1ALPHA_MESSAGES = _messages_of(v1alpha_pb2)


class ReflectionServicer:
    """``ServerReflectionInfo`` of one protocol version over a :class:`ReflectionIndex`."""

    def __init__(self, index: ReflectionIndex, service_names: Sequence[str], messages: _Messages) -> None:
        self._index = index
        self._service_names = tuple(sorted(set(service_names)))
        self._messages = messages

    async def ServerReflectionInfo(
        self, requests: AsyncIterable[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Answers each request of the stream in order."""
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: Any) -> Any:
        """The response to one ServerReflectionRequest (an error_response for unknown names, never an abort)."""
        messages, index = self._messages, self._index
        kind = request.WhichOneof("message_request")
        name: str | None = None
        if kind == "file_by_filename":
            name = request.file_by_filename if index.file(request.file_by_filename) is not None else None
        elif kind == "file_containing_symbol":
            name = index.file_containing_symbol(request.file_containing_symbol)
        elif kind == "file_containing_extension":
            extension = request.file_containing_extension
            name = index.file_containing_extension(extension.containing_type, extension.extension_number)
        elif kind == "all_extension_numbers_of_type":
            numbers = index.extension_numbers(request.all_extension_numbers_of_type)
            if numbers is not None:
                return messages.response(
                    original_request=request,
                    all_extension_numbers_response=messages.extension_numbers(
                        base_type_name=request.all_extension_numbers_of_type, extension_number=numbers
                    ),
                )
        elif kind == "list_services":
            return messages.response(
                original_request=request,
                list_services_response=messages.services(
                    service=[messages.service(name=service) for service in self._service_names]
                ),
            )
        else:
            return self._error(request, grpc.StatusCode.INVALID_ARGUMENT, "no request kind set")
        if name is None:
            return self._error(request, grpc.StatusCode.NOT_FOUND, f"{kind}: not found")
        return messages.response(
            original_request=request,
            file_descriptor_response=messages.file_descriptors(file_descriptor_proto=index.with_dependencies(name)),
        )

    def _error(self, request: Any, code: grpc.StatusCode, message: str) -> Any:
        error = self._messages.error(error_code=code.value[0], error_message=message)
        return self._messages.response(original_request=request, error_response=error)


def _handler(servicer: ReflectionServicer, messages: _Messages) -> grpc.RpcMethodHandler:
    return grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=messages.request.FromString,
        response_serializer=messages.response.SerializeToString,
    )


def descriptor_set_bytes() -> bytes | None:
    """The descriptor set generated beside the ``tdev`` package, or None when this install has none."""
    try:
        return importlib.resources.files("tdev").joinpath(DESCRIPTOR_SET).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return None


@functools.cache
def default_index() -> ReflectionIndex:
    """The process's index: the generated descriptor set, v1's reflection file, the default pool as fallback."""
    data = descriptor_set_bytes()
    if data is None:
        # An old gen/ from before the descriptor set existed: reflection still works, without comments.
        log.warning("reflection_without_source_info", hint="run `make proto` to generate tdev/descriptor_set.binpb")
        files: list[descriptor_pb2.FileDescriptorProto] = []
    else:
        files = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
    return ReflectionIndex([*files, v1_file_descriptor()], descriptor_pool.Default())


def enable_reflection(
    server: grpc.aio.Server, service_names: Sequence[str], index: ReflectionIndex | None = None
) -> None:
    """Serves reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    index = index or default_index()
    names = [*service_names, *SERVICE_NAMES]
    handlers = []
    for service, messages in ((V1_SERVICE, _v1_messages()), (V1ALPHA_SERVICE, V1ALPHA_MESSAGES)):
        servicer = ReflectionServicer(index, names, messages)
        handlers.append(grpc.method_handlers_generic_handler(service, {_METHOD: _handler(servicer, messages)}))
    server.add_generic_rpc_handlers(handlers)
