"""What every service's ``main()`` does around its composition root: logging, tracing, stop on signal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from pydantic import SecretStr

from tdev_common import completion
from tdev_common.auth import AuthConfigError, TokenTable
from tdev_common.config import CommonSettings
from tdev_common.grpc_client import ClientSecurity
from tdev_common.grpc_server import RunningServer, ServerSecurity, install_stop_signals
from tdev_common.secrets import SecretStore
from tdev_common.telemetry import configure_logging, configure_tracing, shutdown_tracing
from tdev_common.tls import load_tls

log = structlog.get_logger(__name__)

# A write whose caller left takes milliseconds; this bounds a stop behind a stuck one.
_DRAIN_SECONDS = 5.0


@dataclass
class ServiceHandle:
    """A started service: its server plus the resources to release after the server has drained."""

    running: RunningServer
    resources: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def port(self) -> int:
        """The bound port."""
        return self.running.port

    async def close(self, grace: float = 5.0) -> None:
        """Stops the server gracefully, lets the writes of callers that left finish (tdev_common.completion),
        then releases resources in reverse order of creation."""
        await self.running.stop(grace)
        await completion.drain(_DRAIN_SECONDS)
        await self.resources.aclose()


def on_close(stack: contextlib.AsyncExitStack, closer: Callable[[], Awaitable[object]]) -> None:
    """Releases a resource when ``stack`` closes; a failing release is logged and the others still run."""

    async def release() -> None:
        try:
            await closer()
        except Exception:
            log.exception("close_failed", closer=getattr(closer, "__qualname__", repr(closer)))

    stack.push_async_callback(release)


@dataclass(frozen=True)
class MeshSecurity:
    """A service's own server security and what its channels to the other services present."""

    server: ServerSecurity
    client: ClientSecurity


async def load_security(common: CommonSettings) -> MeshSecurity:
    """Tokens, service token and TLS files from the settings (Secrets Manager read off the event loop).

    Raises:
        AuthConfigError: in production mode without bearer tokens (the mesh refuses to run open).
    """
    return await asyncio.to_thread(_load_security, common)


def _load_security(common: CommonSettings) -> MeshSecurity:
    token = _secret_value(common.service_token, common, "auth/service-token")
    return MeshSecurity(load_server_security(common), client_security(common, token))


def client_security(common: CommonSettings, service_token: str | None) -> ClientSecurity:
    """What this process's channels present: the token, the CA to trust and the client certificate.

    Raises:
        TlsConfigError: the TLS settings are incomplete (tdev_common.tls.load_tls).
    """
    tls = load_tls(common)
    return ClientSecurity(service_token, tls.ca, tls_cert=tls.client_cert, tls_key=tls.client_key)


def setup_process(service: str, common: CommonSettings) -> None:
    """Configures logging and tracing for a service process (security goes to each server and channel).

    Raises:
        AuthConfigError: in production mode without bearer tokens (the mesh refuses to run open), checked
        here too so a misconfigured process fails before it opens anything.
    """
    configure_logging(service, common.log_level, common.log_json)
    configure_tracing(f"tdev-{service}", common.otel_exporter, otlp_endpoint=common.otlp_endpoint,
                      sample_ratio=common.otel_sample_ratio)
    load_server_security(common)


def _secret_value(value: SecretStr | None, common: CommonSettings, name: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if not common.secrets_prefix:
        return None
    store = SecretStore(prefix=common.secrets_prefix, region=common.aws_region, endpoint_url=common.aws_endpoint_url)
    found = store.fetch_blocking(common.secrets_prefix + name)
    return found


def load_server_security(common: CommonSettings, *, mtls_authenticates: bool = False) -> ServerSecurity:
    """Tokens (env, else Secrets Manager) and TLS material; production mode without tokens is refused.

    ``mtls_authenticates`` is for servers whose only callers are the mesh's services (the sandbox tier): there
    a verified client certificate is the authentication, and production demands that instead of tokens.

    Raises:
        AuthConfigError: in production mode without bearer tokens (or, with ``mtls_authenticates``, without
        required client certificates).
        TlsConfigError: TLS settings incomplete or weaker than the mode demands (tdev_common.tls.load_tls).
    """
    if mtls_authenticates:
        tls = load_tls(common)
        if common.mode == "production" and not (tls.cert and tls.client_ca and tls.require_client_auth):
            raise AuthConfigError(
                "refusing to start in production mode without mutual TLS: a sandbox worker authenticates its "
                "callers by their client certificates; set TDEV_TLS_PEM (or the TDEV_TLS_* files) with a client CA")
        return ServerSecurity(tls_cert=tls.cert, tls_key=tls.key, tls_client_ca=tls.client_ca,
                              require_client_auth=tls.require_client_auth)
    document = _secret_value(common.auth_tokens, common, "auth/tokens")
    tokens = TokenTable.from_json(document) if document else None
    if common.mode == "production" and not tokens:
        raise AuthConfigError(
            "refusing to start in production mode without auth: set TDEV_AUTH_TOKENS or the Secrets Manager "
            f"secret {common.secrets_prefix or '<TDEV_SECRETS_PREFIX>'}auth/tokens"
        )
    if tokens:
        log.info("auth_enabled", principals=len(tokens))
    elif common.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("auth_disabled_on_non_loopback", host=common.host)
    tls = load_tls(common)
    if tls.cert is None and common.mode == "production":
        log.warning("tls_disabled_in_production", detail="gRPC inside the VPC, tokens included, is plaintext")
    return ServerSecurity(tokens=tokens, tls_cert=tls.cert, tls_key=tls.key, tls_client_ca=tls.client_ca,
                          require_client_auth=tls.require_client_auth)


async def serve_until_stopped(handle: ServiceHandle, grace: float) -> None:
    """Serves until SIGTERM/SIGINT or server termination, then drains for ``grace`` seconds and closes."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    terminated = asyncio.create_task(handle.running.wait_for_termination())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({terminated, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("service_stopping", grace_seconds=grace)
        await handle.close(grace)
        for task in (terminated, stopping):
            task.cancel()
        shutdown_tracing()
