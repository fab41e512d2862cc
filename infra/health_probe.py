"""Container health probe: exit 0 when the local service answers SERVING on grpc.health.v1.Health, else 1.

Usage: ``python health_probe.py [registry|workflow|builder|evolution]``. Without an argument the service is
the one PID 1 runs (``python -m <name>_svc``), else ``TDEV_HEALTH_SERVICE``. The port is the service's own
``TDEV_<NAME>_PORT`` or its default. When the service serves TLS (``TDEV_TLS_CERT_FILE``, or ``cert`` in the
``TDEV_TLS_PEM`` document) the probe speaks TLS too, trusting ``TDEV_TLS_CA_FILE`` / ``ca`` (else the
certificate itself), checking the name ``TDEV_HEALTH_TLS_NAME`` (default ``<name>.tdev.local``) and presenting
the process's client certificate (``TDEV_TLS_CLIENT_CERT_FILE`` / ``client_cert``, else the server's own),
since an mTLS server refuses a probe without one. Health checks need no token (tdev_common.auth).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Name -> (gRPC service name, default port); tests/infra checks this against tdev_cli.mesh.SERVICES.
SERVICES: dict[str, tuple[str, int]] = {
    "registry": ("tdev.registry.v1.RegistryService", 50051),
    "workflow": ("tdev.workflow.v1.WorkflowService", 50052),
    "builder": ("tdev.builder.v1.BuilderService", 50053),
    "evolution": ("tdev.evolution.v1.EvolutionService", 50054),
}
TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Target:
    """What to ask: where, which gRPC service, and TLS material when the server speaks TLS."""

    name: str
    address: str
    grpc_service: str
    tls_roots: bytes | None = None
    tls_name: str | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None


def service_from_cmdline(raw: bytes) -> str | None:
    """The service a ``python -m <name>_svc`` command line runs, or None."""
    for part in raw.split(b"\0"):
        word = part.decode(errors="replace")
        if word.endswith("_svc") and word[: -len("_svc")] in SERVICES:
            return word[: -len("_svc")]
    return None


def resolve_target(argv: Sequence[str], environ: Mapping[str, str], pid1_cmdline: bytes) -> Target:
    """Works out which service to probe and how.

    Raises:
        ValueError: when no known service can be determined.
    """
    name = argv[0] if argv else service_from_cmdline(pid1_cmdline) or environ.get("TDEV_HEALTH_SERVICE")
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    grpc_service, default_port = SERVICES[name]
    port = int(environ.get(f"TDEV_{name.upper()}_PORT") or default_port)
    try:
        document = json.loads(environ.get("TDEV_TLS_PEM") or "{}")
    except ValueError:
        raise ValueError("TDEV_TLS_PEM is not JSON") from None

    def pem(setting: str, key: str) -> bytes | None:
        # The same precedence as tdev_common.tls: a file setting wins over the document's entry.
        path = environ.get(setting)
        if path:
            return Path(path).read_bytes()
        value = document.get(key) if isinstance(document, dict) else None
        return value.encode() if isinstance(value, str) and value.strip() else None

    cert = pem("TDEV_TLS_CERT_FILE", "cert")
    if cert is None:
        return Target(name, f"127.0.0.1:{port}", grpc_service)
    key = pem("TDEV_TLS_KEY_FILE", "key")
    roots = pem("TDEV_TLS_CA_FILE", "ca") or cert
    client_cert = pem("TDEV_TLS_CLIENT_CERT_FILE", "client_cert")
    client_key = pem("TDEV_TLS_CLIENT_KEY_FILE", "client_key")
    if client_cert is None:
        client_cert, client_key = cert, key
    if client_cert is None or client_key is None:
        # gRPC aborts the process on a certificate without its key: present nothing instead.
        client_cert = client_key = None
    tls_name = environ.get("TDEV_HEALTH_TLS_NAME") or f"{name}.tdev.local"
    return Target(name, f"127.0.0.1:{port}", grpc_service, tls_roots=roots, tls_name=tls_name,
                  tls_cert=client_cert, tls_key=client_key)


def check(target: Target, timeout: float = TIMEOUT_SECONDS) -> str:
    """The health status name the server gives, or the gRPC status code name when the call fails."""
    import grpc  # imported here so argument errors answer without paying for grpc's import
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if target.tls_roots is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=target.tls_roots, private_key=target.tls_key, certificate_chain=target.tls_cert
        )
        options = [("grpc.ssl_target_name_override", target.tls_name or target.name)]
        channel = grpc.secure_channel(target.address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target.address)
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=target.grpc_service), timeout=timeout
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def main(argv: Sequence[str] | None = None) -> int:
    """Probes once and prints one line; 0 when SERVING, else 1 (Docker reserves exit code 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cmdline = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    try:
        target = resolve_target(args, os.environ, cmdline)
    except (ValueError, OSError) as error:
        print(f"health probe: {error}", file=sys.stderr)
        return 1
    status = check(target)
    print(f"{target.name} {target.address} {target.grpc_service}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
