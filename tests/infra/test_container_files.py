"""The Dockerfile, its ignore list and the compose file: what they build and run matches the project."""

from __future__ import annotations

import fnmatch
import shlex
import tomllib
from typing import Any

import pytest
import yaml

from tdev_common.config import CommonSettings
from tests.infra.cfn import INFRA, PORTS, ROOT, SERVICES, Instruction, known_setting_names, parse_dockerfile

pytestmark = pytest.mark.unit  # no I/O

DOCKERFILE = INFRA / "Dockerfile"
IGNORE_FILE = INFRA / "Dockerfile.dockerignore"
COMPOSE_FILE = INFRA / "compose.yaml"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                name, _, value = word.partition("=")
                values[name] = value
    return values


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a directory match covers its files."""
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, body) or fnmatch.fnmatchcase(prefix, body.replace("**/", ""))
               for prefix in prefixes):
            result = not negated
    return result


def test_dockerfile_runtime_runs_as_non_root_user(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit()  # numeric, so orchestrators can verify runAsNonRoot
    useradd = " ".join(i.arguments for i in runtime if i.keyword == "RUN")
    assert f"--uid {user}" in useradd
    assert [i.keyword for i in runtime].index("USER") < [i.keyword for i in runtime].index("ENTRYPOINT")


def test_dockerfile_entrypoint_command_and_base(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    (entrypoint,) = [i for i in runtime if i.keyword == "ENTRYPOINT"]
    (command,) = [i for i in runtime if i.keyword == "CMD"]
    assert entrypoint.exec_form() == ["python", "-m"]
    assert command.exec_form() == ["registry_svc"]
    args = {i.arguments.split("=")[0]: i.arguments.split("=")[1] for i in instructions if i.keyword == "ARG"}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert {i.arguments.split()[0] for i in instructions if i.keyword == "FROM"} == {"${PYTHON_IMAGE}"}
    exposed = {int(p) for i in runtime if i.keyword == "EXPOSE" for p in i.arguments.split()}
    assert exposed == set(PORTS.values())


def test_dockerfile_installs_the_project_with_its_generated_code(instructions: list[Instruction]) -> None:
    build = [i for i in instructions if i.stage != max(i.stage for i in instructions)]
    keywords = [(i.keyword, i.arguments) for i in build]
    (install,) = [n for n, (keyword, arguments) in enumerate(keywords)
                  if keyword == "RUN" and "pip install --no-deps ." in arguments]
    copied_before = {arguments.split()[0] for keyword, arguments in keywords[:install] if keyword == "COPY"}
    # The wheel build generates the tdev package from these (setup.py -> scripts/protogen.py).
    assert {"protos", "scripts/protogen.py", "setup.py"} <= copied_before
    assert "descriptor_set_bytes()" in keywords[install][1]  # the image build fails without the descriptor set
    runtime = final_stage(instructions)
    assert "PYTHONPATH" not in env_values(runtime)  # the generated code is inside the venv, like any package
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    assert env_values(runtime)["TDEV_HOST"] == "0.0.0.0"


def test_dockerfile_healthcheck_runs_the_copied_probe(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    (check,) = [i for i in runtime if i.keyword == "HEALTHCHECK"]
    assert check.exec_form() == ["python", "/opt/tdev/health_probe.py"]
    copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert "infra/health_probe.py /opt/tdev/health_probe.py" in copies


def test_dockerfile_copies_every_package_and_the_context_allows_it(instructions: list[Instruction]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    sources = [
        i.arguments.split()[0] for i in instructions if i.keyword == "COPY" and not i.arguments.startswith("--from")
    ]
    assert packages <= set(sources), packages - set(sources)
    patterns = [line.strip() for line in IGNORE_FILE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not ignored(source, patterns), f"COPY {source} is excluded from the build context"
    assert ignored(".venv/bin/python", patterns)
    assert ignored("gen/tdev/registry/v1/agent_pb2.py", patterns)
    assert ignored("tdev_common/__pycache__/config.cpython-311.pyc", patterns)


def test_compose_runs_six_containers_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *SERVICES}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    for name, service in services.items():
        assert "healthcheck" in service, name
    for name in SERVICES:
        service = services[name]
        assert service["command"] == [f"{name}_svc"]
        assert service["healthcheck"]["test"] == ["CMD", "python", "/opt/tdev/health_probe.py", name]
        assert service["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}
        assert service["ports"] == [f"127.0.0.1:{PORTS[name]}:{PORTS[name]}"]
        conditions = {dep: spec["condition"] for dep, spec in service["depends_on"].items()}
        assert conditions["postgres"] == conditions["redis"] == "service_healthy"
        assert set(conditions.values()) == {"service_healthy"}


def test_compose_addresses_point_at_compose_service_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVICES:
        environment = services[name]["environment"]
        for other, port in PORTS.items():
            host, _, address_port = environment[f"TDEV_{other.upper()}_ADDRESS"].rpartition(":")
            assert host == other and host in services
            assert int(address_port) == port
        assert environment["TDEV_DATABASE_URL"].startswith("postgresql://tdev:tdev@postgres:5432/")
        assert environment["TDEV_REDIS_URL"] == "redis://redis:6379/0"
        assert environment["TDEV_HOST"] == "0.0.0.0"


def test_compose_environment_is_valid_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    environment = compose["services"]["registry"]["environment"]
    known, pending = known_setting_names()
    assert set(environment) - known <= pending
    for name, value in environment.items():
        # ${VAR:-default} is what compose substitutes when VAR is unset.
        text = str(value)
        if text.startswith("${") and ":-" in text:
            text = text.split(":-", 1)[1].rstrip("}")
        monkeypatch.setenv(name, text)
    monkeypatch.delenv("TDEV_PARAMETER_STORE_PREFIX", raising=False)
    settings = CommonSettings()
    assert settings.mode == "embedded"
    assert settings.auth_tokens is None or not settings.auth_tokens.get_secret_value()
    assert settings.grace_seconds < int(compose["services"]["registry"]["stop_grace_period"].rstrip("s"))
