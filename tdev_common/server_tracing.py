"""A SERVER span around every call, continuing the caller's trace (a handler layer).

It records what OpenTelemetry's gRPC instrumentation records (the rpc.* attributes, the status code, the
peer, an uncaught exception) but only builds them when the span is sampled: without an exporter no span
is recorded, and the call pays for little more than trace ids, which logs still carry and calls onward
still propagate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode, TraceFlags

from tdev_common.handler_layers import Layer, rewrap
from tdev_common.telemetry import spans_exported

_SERVER = trace.SpanKind.SERVER


def tracing_layer(provider: trace.TracerProvider) -> Layer:
    """The layer that starts each call's SERVER span, named by the full method, child of the caller's."""
    tracer = provider.get_tracer("tdev_common.server_tracing")
    ids = getattr(provider, "id_generator", None) or RandomIdGenerator()

    def layer(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def start(context: grpc.aio.ServicerContext) -> tuple[Span, object]:
            parent = _remote_context(context)
            if spans_exported():
                span = tracer.start_span(method, context=parent, kind=_SERVER, attributes=attributes)
                if span.is_recording():
                    _describe_caller(span, context)
            else:
                span = _unexported_span(parent, ids)
            return span, otel_context.attach(trace.set_span_in_context(span, parent))

        def wrap(behaviour: Callable[..., Any], response_streaming: bool) -> Callable[..., Any]:
            if response_streaming:
                async def stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
                    span, token = start(context)
                    try:
                        async for item in behaviour(request, context):
                            yield item
                    except BaseException as error:
                        _record_failure(span, error, context)
                        raise
                    else:
                        _record_outcome(span, context)
                    finally:
                        otel_context.detach(token)  # type: ignore[arg-type]
                        span.end()

                return stream

            async def unary(request: object, context: grpc.aio.ServicerContext) -> object:
                span, token = start(context)
                try:
                    response = await behaviour(request, context)
                except BaseException as error:
                    _record_failure(span, error, context)
                    raise
                else:
                    _record_outcome(span, context)
                    return response
                finally:
                    otel_context.detach(token)  # type: ignore[arg-type]
                    span.end()

            return unary

        return rewrap(handler, wrap)

    return layer


def _unexported_span(parent: otel_context.Context | None, ids: IdGenerator) -> Span:
    """A span with trace ids only: what the SDK would build, at a third of its cost, when nothing exports.

    It continues the caller's trace (same trace id and flags, so a sampled trace stays sampled onward) or
    starts one; logs carry its ids and outgoing calls propagate them.
    """
    caller = trace.get_current_span(parent).get_span_context() if parent is not None else None
    if caller is not None and caller.is_valid:
        trace_id, flags = caller.trace_id, caller.trace_flags
    else:
        trace_id, flags = ids.generate_trace_id(), TraceFlags(TraceFlags.DEFAULT)
    return NonRecordingSpan(SpanContext(trace_id, ids.generate_span_id(), is_remote=False, trace_flags=flags))


def _remote_context(context: grpc.aio.ServicerContext) -> otel_context.Context | None:
    """The caller's trace context from the call's metadata, or None (a new trace) when it sent none."""
    propagator = propagate.get_global_textmap()
    fields = _fields(propagator)
    carrier = {key: value for key, value in context.invocation_metadata() or () if key in fields}
    return propagator.extract(carrier) if carrier else None


_FIELDS: tuple[object, frozenset[str]] = (None, frozenset())


def _fields(propagator: Any) -> frozenset[str]:
    """The metadata keys the propagator reads; a composite one builds the set anew on every ask."""
    global _FIELDS
    if _FIELDS[0] is not propagator:
        _FIELDS = (propagator, frozenset(propagator.fields))
    return _FIELDS[1]


def _describe_caller(span: Span, context: grpc.aio.ServicerContext) -> None:
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent":
            span.set_attribute("rpc.user_agent", value)
    peer = context.peer() or ""
    if peer.startswith(("ipv4:", "ipv6:")):
        # "ipv4:127.0.0.1:57284", "ipv6:[::1]:57284", possibly several comma-separated
        host, _, port = peer.split(",")[0].split(":", 1)[1].rpartition(":")
        span.set_attribute("net.peer.ip", unquote(host))
        span.set_attribute("net.peer.port", port)


def _code_value(code: object) -> int:
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code) if isinstance(code, int) else 0


def _record_outcome(span: Span, context: grpc.aio.ServicerContext) -> None:
    if not span.is_recording():
        return
    # A servicer may set a status without raising; an unset one is OK.
    code = _code_value(context.code())
    span.set_attribute("rpc.grpc.status_code", code)
    if code:
        span.set_status(Status(StatusCode.ERROR, str(context.details() or "")))


def _record_failure(span: Span, error: BaseException, context: grpc.aio.ServicerContext) -> None:
    if not span.is_recording():
        return
    if isinstance(error, asyncio.CancelledError):  # the caller went away or its deadline passed
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.CANCELLED.value[0])
        return
    if isinstance(error, grpc.aio.AbortError):
        # The call was answered with a status (the error layer's, or the servicer's own abort).
        _record_outcome(span, context)
        return
    code = _code_value(context.code()) or grpc.StatusCode.UNKNOWN.value[0]
    span.set_attribute("rpc.grpc.status_code", code)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
