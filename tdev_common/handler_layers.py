"""Cross-cutting server behaviour (tracing, auth, error mapping) applied to each method handler once.

grpc.aio's server interceptors run per call: every call pays for an interceptor pipeline, and the
OpenTelemetry one also rebuilds the method handler each time. Measured on GetAgent, the interceptor path
cost about as much as the servicer's own work. Layers wrap a method's behaviour when the method is
registered, so a call runs plain nested coroutines and the server keeps grpc's no-interceptor path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from tdev_common.completion import completes

# A layer turns a method's handler into one that does something around it; ``method`` is the full name,
# "/tdev.registry.v1.RegistryService/GetAgent". Layers run when a method is registered, never per call.
Layer = Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]

# (the behaviour, whether it answers with a stream) -> the wrapped behaviour
BehaviourWrapper = Callable[[Callable[..., Any], bool], Callable[..., Any]]

_BEHAVIOUR_FIELDS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


def rewrap(
    handler: grpc.RpcMethodHandler,
    wrap: BehaviourWrapper,
    request_deserializer: Callable[[bytes], object] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by ``wrap(behaviour, response_streaming)``.

    Args:
        handler: a handler from ``grpc.*_rpc_method_handler``.
        wrap: builds the new behaviour; called once.
        request_deserializer: replaces the handler's deserializer when given.
    """
    field = _BEHAVIOUR_FIELDS[(bool(handler.request_streaming), bool(handler.response_streaming))]
    changes: dict[str, Any] = {field: wrap(getattr(handler, field), bool(handler.response_streaming))}
    if request_deserializer is not None:
        changes["request_deserializer"] = request_deserializer
    return handler._replace(**changes)  # type: ignore[attr-defined,no-any-return]


def apply_layers(handler: grpc.RpcMethodHandler, method: str, layers: Sequence[Layer]) -> grpc.RpcMethodHandler:
    """The handler inside every layer; the first layer is the outermost (it sees the call first)."""
    for layer in reversed(layers):
        handler = layer(handler, method)
    return handler


class _LayeredGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose answers come wrapped in the layers, each method's built once."""

    def __init__(self, inner: grpc.GenericRpcHandler, layers: Sequence[Layer]) -> None:
        self._inner = inner
        self._layers = layers
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = apply_layers(handler, method, self._layers)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class LayeredServer:
    """Stands in for a grpc.aio server while services register: every handler they add gets the layers.

    Generated ``add_..._to_server`` functions, the health servicer and reflection all register through
    the two methods below, so nothing reaches the real server unwrapped.
    """

    def __init__(self, server: grpc.aio.Server, layers: Sequence[Layer]) -> None:
        self._server = server
        self._layers = tuple(layers)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Registers generic handlers, wrapped."""
        self._server.add_generic_rpc_handlers(
            [_LayeredGenericHandler(handler, self._layers) for handler in generic_rpc_handlers]
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Registers a service's method handlers, wrapped."""
        self._server.add_registered_method_handlers(
            service_name,
            {name: apply_layers(handler, f"/{service_name}/{name}", self._layers)
             for name, handler in method_handlers.items()},
        )


# AIP standard and custom methods that only read: a cancelled read holds no write lock, and GetAgent's latency
# (issue 17) should not pay for a task per call.
_READ_PREFIXES = ("Get", "List", "Search", "Watch")


def completion_layer(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The platform's unary methods that may write run to completion (see tdev_common.completion). Reads,
    other services (health, reflection) and streaming methods are left as they are: a caller that leaves a
    stream ends it, and a stream's first write uses ``completion.complete`` itself."""
    name = method.rsplit("/", 1)[-1]
    if (handler.request_streaming or handler.response_streaming or not method.startswith("/tdev.")
            or name.startswith(_READ_PREFIXES)):
        return handler

    return rewrap(handler, lambda behaviour, _streaming: completes(behaviour))
