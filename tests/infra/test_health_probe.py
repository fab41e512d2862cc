"""infra/health_probe.py against real gRPC health servers on loopback."""

from __future__ import annotations

import datetime
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tdev_cli.mesh import SERVICES as MESH
from tests.infra.cfn import INFRA, require_module

pytestmark = pytest.mark.mesh  # real servers or subprocesses

PROBE_PATH = INFRA / "health_probe.py"


def _load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tdev_infra_health_probe", PROBE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


probe = _load_probe()


def _server(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, health.HealthServicer, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, servicer, port


@pytest.fixture
def registry_health() -> Iterator[tuple[health.HealthServicer, int]]:
    server, servicer, port = _server()
    servicer.set("tdev.registry.v1.RegistryService", health_pb2.HealthCheckResponse.SERVING)
    yield servicer, port
    server.stop(0)


def test_probe_table_matches_the_mesh() -> None:
    assert probe.SERVICES == {s.name: (s.grpc_service, s.default_port) for s in MESH}


def test_serving_service_exits_zero(registry_health: tuple[health.HealthServicer, int],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, port = registry_health
    monkeypatch.setenv("TDEV_REGISTRY_PORT", str(port))
    monkeypatch.delenv("TDEV_TLS_CERT_FILE", raising=False)
    assert probe.main(["registry"]) == 0


def test_not_serving_service_exits_one(registry_health: tuple[health.HealthServicer, int],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    servicer, port = registry_health
    servicer.enter_graceful_shutdown()
    monkeypatch.setenv("TDEV_REGISTRY_PORT", str(port))
    assert probe.main(["registry"]) == 1


def test_wrong_service_on_the_port_is_unhealthy(registry_health: tuple[health.HealthServicer, int]) -> None:
    _, port = registry_health
    target = probe.Target("workflow", f"127.0.0.1:{port}", "tdev.workflow.v1.WorkflowService")
    assert probe.check(target) == "NOT_FOUND"


def test_nothing_listening_is_unhealthy_within_the_timeout() -> None:
    server, _, port = _server()
    server.stop(0)
    target = probe.Target("registry", f"127.0.0.1:{port}", "tdev.registry.v1.RegistryService")
    assert probe.check(target, timeout=1.0) in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_service_comes_from_pid1_command_line_then_env() -> None:
    cmdline = b"python\0-m\0evolution_svc\0"
    target = probe.resolve_target([], {"TDEV_EVOLUTION_PORT": "6000"}, cmdline)
    assert (target.name, target.address, target.grpc_service) == (
        "evolution", "127.0.0.1:6000", "tdev.evolution.v1.EvolutionService"
    )
    behind_init = probe.resolve_target([], {}, b"/sbin/docker-init\0--\0python\0-m\0workflow_svc\0")
    assert behind_init.name == "workflow"
    from_env = probe.resolve_target([], {"TDEV_HEALTH_SERVICE": "builder"}, b"/sbin/docker-init\0--\0")
    assert from_env.address == "127.0.0.1:50053"
    with pytest.raises(ValueError, match="unknown service"):
        probe.resolve_target([], {}, b"sleep\0infinity\0")
    with pytest.raises(ValueError, match="unknown service"):
        probe.resolve_target(["nope"], {}, b"")


def test_probe_script_exit_code_as_docker_runs_it(registry_health: tuple[health.HealthServicer, int],
                                                  tmp_path: Path) -> None:
    _, port = registry_health
    env = {"TDEV_REGISTRY_PORT": str(port), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(PROBE_PATH), "registry"], env=env, capture_output=True,
                          text=True, timeout=20, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("tdev.registry.v1.RegistryService: SERVING")
    bad = subprocess.run([sys.executable, str(PROBE_PATH), "nope"], env=env, capture_output=True, text=True,
                         timeout=20, cwd=tmp_path, check=False)
    assert bad.returncode == 1
    assert "unknown service" in bad.stderr


def _self_signed(name: str) -> tuple[bytes, bytes]:
    require_module("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_tls_server_is_probed_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed("registry.tdev.local")
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(cert)
    server, servicer, port = _server(grpc.ssl_server_credentials([(key, cert)]))
    try:
        servicer.set("tdev.registry.v1.RegistryService", health_pb2.HealthCheckResponse.SERVING)
        environ = {"TDEV_TLS_CERT_FILE": str(cert_file), "TDEV_REGISTRY_PORT": str(port)}
        target = probe.resolve_target(["registry"], environ, b"")
        assert target.tls_name == "registry.tdev.local"
        assert probe.check(target) == "SERVING"
        wrong_name = probe.resolve_target(["registry"], {**environ, "TDEV_HEALTH_TLS_NAME": "other.local"}, b"")
        assert probe.check(wrong_name, timeout=2.0) == "UNAVAILABLE"
    finally:
        server.stop(0)



def test_mtls_server_is_probed_with_the_processes_own_certificate_from_the_pem_document(tmp_path: Path) -> None:
    require_module("cryptography")
    subprocess.run([sys.executable, str(INFRA.parent / "scripts" / "make-certs"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    ca = (tmp_path / "ca.pem").read_bytes()
    credentials = grpc.ssl_server_credentials(
        [((tmp_path / "registry.key").read_bytes(), (tmp_path / "registry.pem").read_bytes())],
        root_certificates=ca, require_client_auth=True)
    server, servicer, port = _server(credentials)
    try:
        servicer.set("tdev.registry.v1.RegistryService", health_pb2.HealthCheckResponse.SERVING)
        # The document as ECS injects it: the service's own certificate is its client certificate too.
        environ = {"TDEV_TLS_PEM": (tmp_path / "registry.json").read_text(), "TDEV_REGISTRY_PORT": str(port)}
        target = probe.resolve_target(["registry"], environ, b"")
        assert target.tls_name == "registry.tdev.local"
        assert probe.check(target) == "SERVING"
        # Without a client certificate the mTLS server refuses the handshake ...
        anonymous = probe.Target(target.name, target.address, target.grpc_service, tls_roots=ca,
                                 tls_name=target.tls_name)
        assert probe.check(anonymous, timeout=2.0) == "UNAVAILABLE"
        # ... and the sandbox worker's certificate (serverAuth only) is no client certificate: gRPC checks the
        # purpose, so the one key the sandbox tier holds cannot call the services (docs/deploy.md section 6).
        sandbox = probe.Target(target.name, target.address, target.grpc_service, tls_roots=ca,
                               tls_name=target.tls_name, tls_cert=(tmp_path / "sandbox.pem").read_bytes(),
                               tls_key=(tmp_path / "sandbox.key").read_bytes())
        assert probe.check(sandbox, timeout=2.0) == "UNAVAILABLE"
    finally:
        server.stop(0)
