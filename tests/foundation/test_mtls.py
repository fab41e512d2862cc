"""mTLS: every service refuses clients without a certificate of the mesh CA, and the services call each other
with theirs; certificates come from scripts/make-certs and reach the services through the settings."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from tdev_cli.mesh import SERVICES, MeshService, check_health
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle, load_security
from tdev_common.tls import TlsConfigError, load_tls
from tests.infra.cfn import ROOT

pytestmark = pytest.mark.mesh

MAKE_CERTS = ROOT / "scripts" / "make-certs"


@dataclass(frozen=True)
class Pki:
    """One directory written by scripts/make-certs."""

    directory: Path

    def file(self, name: str) -> Path:
        return self.directory / name

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def server_settings(self, common: CommonSettings, service: str) -> CommonSettings:
        return common.model_copy(update={
            "tls_cert_file": self.file(f"{service}.pem"), "tls_key_file": self.file(f"{service}.key"),
            "tls_ca_file": self.file("ca.pem"), "tls_client_ca_file": self.file("ca.pem"),
        })


def make_certs(directory: Path) -> Pki:
    subprocess.run([sys.executable, str(MAKE_CERTS), "--out", str(directory)], check=True, capture_output=True)
    return Pki(directory)


@pytest.fixture(scope="module")
def mesh_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_certs(tmp_path_factory.mktemp("mesh-pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA with the same names: certificates that look right and must still be refused."""
    return make_certs(tmp_path_factory.mktemp("other-pki"))


async def start(service: MeshService, common: CommonSettings, **settings: object) -> ServiceHandle:
    server = importlib.import_module(f"{service.module}.server")
    config = importlib.import_module(f"{service.module}.config")
    settings_cls = getattr(config, f"{service.name.capitalize()}Settings")
    handle: ServiceHandle = await server.create_server(settings_cls(**settings), common, port=0)
    return handle


async def health(port: int, grpc_service: str, credentials: grpc.ChannelCredentials) -> str:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=grpc_service), timeout=5)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def test_make_certs_issues_names_usages_and_private_keys(mesh_pki: Pki) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    registry = x509.load_pem_x509_certificate(mesh_pki.read("registry.pem"))
    names = registry.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"registry.tdev.local", "registry", "localhost"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    usages = registry.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sandbox = x509.load_pem_x509_certificate(mesh_pki.read("sandbox.pem"))
    assert list(sandbox.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    for name in ("ca.key", "registry.key", "client.key", "registry.json"):
        assert mesh_pki.file(name).stat().st_mode & 0o077 == 0, name
    document = json.loads(mesh_pki.read("registry.json"))
    assert set(document) == {"cert", "key", "ca", "client_ca"}


def test_make_certs_keeps_the_ca_when_run_again(tmp_path: Path) -> None:
    first = make_certs(tmp_path).read("ca.pem")
    leaf = make_certs(tmp_path).read("registry.pem")
    assert make_certs(tmp_path).read("ca.pem") == first
    assert make_certs(tmp_path).read("registry.pem") != leaf


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
async def test_service_with_mtls_answers_only_clients_with_a_mesh_certificate(
    service: MeshService, common_settings: CommonSettings, mesh_pki: Pki, other_pki: Pki
) -> None:
    handle = await start(service, mesh_pki.server_settings(common_settings, service.name))
    try:
        ca = mesh_pki.read("ca.pem")
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        foreign = grpc.ssl_channel_credentials(root_certificates=ca, private_key=other_pki.read("client.key"),
                                               certificate_chain=other_pki.read("client.pem"))
        member = grpc.ssl_channel_credentials(root_certificates=ca, private_key=mesh_pki.read("client.key"),
                                              certificate_chain=mesh_pki.read("client.pem"))
        assert await health(handle.port, service.grpc_service, anonymous) == "UNAVAILABLE"
        assert await health(handle.port, service.grpc_service, foreign) == "UNAVAILABLE"
        assert await health(handle.port, service.grpc_service, member) == "SERVING"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.close(grace=1)


async def test_client_that_does_not_trust_the_server_ca_is_refused(
    common_settings: CommonSettings, mesh_pki: Pki, other_pki: Pki
) -> None:
    registry = SERVICES[0]
    handle = await start(registry, mesh_pki.server_settings(common_settings, "registry"))
    try:
        wrong_roots = grpc.ssl_channel_credentials(root_certificates=other_pki.read("ca.pem"),
                                                   private_key=mesh_pki.read("client.key"),
                                                   certificate_chain=mesh_pki.read("client.pem"))
        assert await health(handle.port, registry.grpc_service, wrong_roots) == "UNAVAILABLE"
    finally:
        await handle.close(grace=1)


async def test_workflow_calls_the_registry_over_mtls_with_its_own_certificate(
    common_settings: CommonSettings, mesh_pki: Pki, other_pki: Pki
) -> None:
    from tdev.workflow.v1 import workflow_pb2, workflow_service_pb2, workflow_service_pb2_grpc

    registry_service, workflow_service = SERVICES[0], SERVICES[1]
    registry = await start(registry_service, mesh_pki.server_settings(common_settings, "registry"))
    address = {"registry_address": f"127.0.0.1:{registry.port}"}
    good = mesh_pki.server_settings(common_settings, "workflow").model_copy(update=address)
    # Its server side is fine; the certificate it presents to the registry is another CA's.
    impostor = good.model_copy(update={"tls_client_cert_file": other_pki.file("workflow.pem"),
                                       "tls_client_key_file": other_pki.file("workflow.key")})
    member = grpc.ssl_channel_credentials(root_certificates=mesh_pki.read("ca.pem"),
                                          private_key=mesh_pki.read("client.key"),
                                          certificate_chain=mesh_pki.read("client.pem"))
    request = workflow_service_pb2.CreateWorkflowRequest(workflow=workflow_pb2.Workflow(
        name="mtls", version="1.0.0", nodes=[workflow_pb2.Node(id="a", agent_id="no_such_agent")]))
    answers: list[tuple[grpc.StatusCode, str]] = []
    try:
        for common in (good, impostor):
            workflow = await start(workflow_service, common, registry_deadline_seconds=2.0)
            try:
                async with grpc.aio.secure_channel(f"127.0.0.1:{workflow.port}", member) as channel:
                    stub = workflow_service_pb2_grpc.WorkflowServiceStub(channel)
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub.CreateWorkflow(request, timeout=10)
                    answers.append((caught.value.code(), caught.value.details() or ""))
            finally:
                await workflow.close(grace=1)
    finally:
        await registry.close(grace=1)
    # The registry answered "no such agent": the workflow's call got through the handshake.
    assert answers[0][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert 'unknown agent "no_such_agent"' in answers[0][1]
    # With a certificate of another CA the registry refuses the handshake: the dependency is unavailable.
    assert answers[1][0] == grpc.StatusCode.UNAVAILABLE
    assert "registry GetAgent" in answers[1][1]


async def test_tls_document_gives_the_same_material_as_files(
    common_settings: CommonSettings, mesh_pki: Pki
) -> None:
    from_files = load_tls(mesh_pki.server_settings(common_settings, "registry"))
    from_document = load_tls(common_settings.model_copy(update={
        "tls_pem": SecretStr(mesh_pki.read("registry.json").decode())}))
    assert from_document == from_files
    assert from_files.mutual and from_files.client_cert == mesh_pki.read("registry.pem")
    security = await load_security(mesh_pki.server_settings(common_settings, "registry"))
    assert security.server.tls_client_ca == mesh_pki.read("ca.pem")
    assert security.server.require_client_auth is True
    assert security.client.tls_cert == mesh_pki.read("registry.pem")


@pytest.mark.parametrize(("update", "message"), [
    ({"mode": "production", "tls_client_ca_file": None}, "production mode serves TLS"),
    ({"mode": "production", "tls_require_client_auth": False}, "production mode serves TLS"),
    ({"tls_required": True, "tls_cert_file": None, "tls_key_file": None, "tls_client_ca_file": None},
     "TDEV_TLS_REQUIRED is set"),
    ({"tls_key_file": None}, "cert and key go together"),
    ({"tls_cert_file": None, "tls_key_file": None}, "a client CA \\(mTLS\\) needs the server's own certificate"),
    ({"tls_pem": SecretStr("not json")}, "TDEV_TLS_PEM must be a JSON object"),
    ({"tls_pem": SecretStr('{"certificate": "x"}')}, "unknown keys \\['certificate'\\]"),
])
def test_incomplete_or_weaker_tls_is_refused(
    common_settings: CommonSettings, mesh_pki: Pki, update: dict[str, object], message: str
) -> None:
    settings = mesh_pki.server_settings(common_settings, "registry").model_copy(update=update)
    with pytest.raises(TlsConfigError, match=message):
        load_tls(settings)


def test_full_mtls_in_production_and_plaintext_in_embedded_mode_are_accepted(
    common_settings: CommonSettings, mesh_pki: Pki
) -> None:
    production = mesh_pki.server_settings(common_settings, "registry").model_copy(update={"mode": "production",
                                                                                           "tls_required": True})
    assert load_tls(production).mutual
    assert load_tls(common_settings).cert is None


async def test_cli_health_check_reaches_an_mtls_service_with_the_client_certificate(
    common_settings: CommonSettings, mesh_pki: Pki
) -> None:
    from tdev_client import Connection
    from tdev_common.grpc_client import ClientSecurity

    def security(connection: Connection) -> ClientSecurity:  # what the CLI's Mesh presents
        ca, cert, key = connection.pem()
        return ClientSecurity(None, ca, tls_cert=cert, tls_key=key)

    registry = SERVICES[0]
    handle = await start(registry, mesh_pki.server_settings(common_settings, "registry"))
    try:
        address = f"127.0.0.1:{handle.port}"
        without = security(Connection(ca_file=mesh_pki.file("ca.pem")))
        assert await check_health(address, registry.grpc_service, security=without) == "UNREACHABLE"
        with_cert = security(Connection(ca_file=mesh_pki.file("ca.pem"), cert_file=mesh_pki.file("client.pem"),
                                        key_file=mesh_pki.file("client.key")))
        assert await check_health(address, registry.grpc_service, security=with_cert) == "SERVING"
    finally:
        await handle.close(grace=1)


def test_a_sandbox_worker_in_production_is_authenticated_by_mtls_not_tokens(
    common_settings: CommonSettings, mesh_pki: Pki
) -> None:
    from tdev_common.auth import AuthConfigError
    from tdev_common.runtime import load_server_security

    production = common_settings.model_copy(update={"mode": "production"})
    worker = mesh_pki.server_settings(production, "sandbox").model_copy(update={"tls_required": True})
    security = load_server_security(worker, mtls_authenticates=True)
    assert security.tokens is None and security.require_client_auth and security.tls_client_ca
    with pytest.raises(AuthConfigError, match="without mutual TLS"):
        load_server_security(production, mtls_authenticates=True)
    with pytest.raises(AuthConfigError, match="without auth"):
        load_server_security(worker)  # a service, by contrast, needs its bearer tokens too
