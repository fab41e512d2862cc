"""Bearer-token authentication with per-method permissions (on in production mode, off when embedded).

Tokens come from the ``TDEV_AUTH_TOKENS`` environment variable or the Secrets Manager secret
``{prefix}auth/tokens``, both holding JSON such as::

    {"tokens": [{"name": "ci", "token": "s3cr3t...", "permissions": ["registry:read", "workflow:*"]}]}

A permission is ``<service>:read`` (Get/List/Search/Watch methods), ``<service>:write`` (everything else),
``<service>:*`` or ``*``. Health checks are always allowed (load balancers probe them); reflection needs
any valid token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from tdev_common.handler_layers import Layer, rewrap
from tdev_common.redaction import register_secret

log = structlog.get_logger(__name__)

READ_PREFIXES = ("Get", "List", "Search", "Watch", "Check")
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
REFLECTION = "/grpc.reflection."


class AuthConfigError(ValueError):
    """The token configuration is missing or malformed (the message never contains a token)."""


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to and what it may do."""

    name: str
    permissions: frozenset[str]

    def may(self, permission: str) -> bool:
        """True when one of the principal's permissions covers ``permission``."""
        service = permission.split(":", 1)[0]
        return bool({"*", f"{service}:*", permission} & self.permissions)


def required_permission(method: str) -> str | None:
    """``registry:read`` for ``/tdev.registry.v1.RegistryService/GetAgent``; None for open methods."""
    if method.startswith(OPEN_SERVICES):
        return None
    if method.startswith(REFLECTION):
        return "reflection:read"
    try:
        package, rpc = method.lstrip("/").split("/", 1)
        service = package.split(".")[1]
    except (ValueError, IndexError):
        return "*"
    return f"{service}:{'read' if rpc.startswith(READ_PREFIXES) else 'write'}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Token digests -> principals; tokens themselves are not kept, only their sha256."""

    def __init__(self, principals: dict[bytes, Principal]) -> None:
        self._principals = principals

    def __len__(self) -> int:
        return len(self._principals)

    @classmethod
    def from_json(cls, document: str) -> TokenTable:
        """Parses the token document; raises AuthConfigError on any problem."""
        try:
            entries = json.loads(document)["tokens"]
        except (ValueError, KeyError, TypeError) as error:
            raise AuthConfigError('auth tokens must be JSON like {"tokens": [{"name", "token", "permissions"}]}') \
                from error
        principals: dict[bytes, Principal] = {}
        for index, entry in enumerate(entries):
            token, name = entry.get("token", ""), entry.get("name", f"token-{index}")
            if len(token) < 16:
                raise AuthConfigError(f"tokens[{index}] ({name}): a token needs at least 16 characters")
            register_secret(token)
            principals[_digest(token)] = Principal(name, frozenset(entry.get("permissions", [])))
        return cls(principals)

    def lookup(self, token: str) -> Principal | None:
        """The principal of a presented token, compared in constant time."""
        presented = _digest(token)
        for digest, principal in self._principals.items():
            if hmac.compare_digest(digest, presented):
                return principal
        return None


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return None


def auth_layer(tokens: TokenTable) -> Layer:
    """A handler layer that rejects calls without a valid bearer token (UNAUTHENTICATED) or permission
    (PERMISSION_DENIED). Health checks pass untouched; reflection needs any valid token."""

    def layer(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        needed = required_permission(method)
        if needed is None:
            return handler

        def refusal(context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
            token = _bearer(context.invocation_metadata())
            principal = tokens.lookup(token) if token else None
            if principal is None:
                return (grpc.StatusCode.UNAUTHENTICATED,
                        "missing or invalid bearer token: send metadata 'authorization: Bearer <token>'")
            if needed != "reflection:read" and not principal.may(needed):
                log.info("permission_denied", principal=principal.name, method=method, needed=needed)
                return grpc.StatusCode.PERMISSION_DENIED, f"token {principal.name!r} lacks permission {needed!r}"
            return None

        def wrap(behaviour: Callable[..., Any], response_streaming: bool) -> Callable[..., Any]:
            if response_streaming:
                async def stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
                    denied = refusal(context)
                    if denied is not None:
                        await context.abort(*denied)
                    async for item in behaviour(request, context):
                        yield item

                return stream

            async def unary(request: object, context: grpc.aio.ServicerContext) -> object:
                denied = refusal(context)
                if denied is not None:
                    await context.abort(*denied)
                return await behaviour(request, context)

            return unary

        return rewrap(handler, wrap)

    return layer
