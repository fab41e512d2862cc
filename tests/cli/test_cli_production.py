"""``tdev`` against services in production mode: bearer tokens (``--token``, ``TDEV_TOKEN``, a profile), TLS
(``--ca``) and mTLS (``--cert/--key``), errors without tracebacks, the hint when the mesh is down, clean piped
output and Ctrl-C on a watch."""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tdev_cli.mesh import SERVICES
from tdev_common.config import CommonSettings
from tdev_common.runtime import ServiceHandle
from tests.cli.support import Ran, clean_env, server_logs_on_stderr, tdev, tdev_piped, tdev_process
from tests.infra.cfn import ROOT
from tests.support.inprocess_mesh import inprocess_mesh
from tests.support.ports import free_port
from tests.workflow.conftest import AGENTS

pytestmark = pytest.mark.mesh

TOKEN = "ops-token-0123456789abcdef"
TOKENS = json.dumps({"tokens": [{"name": "ops", "token": TOKEN, "permissions": ["*"]}]})
UNAUTHENTICATED = ("error UNAUTHENTICATED: missing or invalid bearer token: send metadata 'authorization: Bearer "
                   "<token>'")
TOKEN_HINT = "hint: this mesh wants a bearer token: pass --token, set TDEV_TOKEN, or use a --profile with token_env"
HINT = "hint: is the mesh running? start it with `make run` (or `tdev up`), or point --profile/--address at yours"


@dataclass(frozen=True)
class Prod:
    """A production-mode mesh in this process, and an environment for a ``tdev`` that knows only its addresses."""

    ports: dict[str, int]
    tmp_path: Path

    def env(self, **extra: str) -> dict[str, str | None]:
        addresses = {f"TDEV_{name.upper()}_ADDRESS": f"127.0.0.1:{port}" for name, port in self.ports.items()}
        return clean_env(self.tmp_path, **addresses, **extra)


@pytest.fixture
async def prod(tmp_path: Path) -> AsyncIterator[Prod]:
    common = CommonSettings(mode="production", data_dir=tmp_path / "data", log_json=True, log_level="WARNING",
                            auth_tokens=TOKENS, service_token=TOKEN)
    with server_logs_on_stderr():
        async with inprocess_mesh(common) as ports:
            yield Prod(ports, tmp_path)


def assert_clean_failure(ran: Ran, code: int, first_line: str) -> None:
    """Exit ``code``, nothing on stdout, stderr starting with ``first_line`` and no traceback."""
    assert (ran.code, ran.stdout) == (code, ""), ran
    assert ran.stderr.splitlines()[0] == first_line, ran.stderr
    assert "Traceback" not in ran.stderr


async def test_without_a_token_the_cli_says_unauthenticated_and_exits_1(prod: Prod) -> None:
    ran = await tdev(prod.env(), "agents", "list")
    assert_clean_failure(ran, 1, UNAUTHENTICATED)
    wrong = await tdev(prod.env(), "--token", "not-a-token-of-this-mesh", "agents", "list")
    assert (wrong.code, wrong.stdout) == (1, "") and wrong.stderr.startswith("error UNAUTHENTICATED: ")
    assert ran.stderr.splitlines()[-1] == TOKEN_HINT
    assert HINT not in ran.stderr + wrong.stderr  # the mesh is up: no advice to start it


async def test_token_from_the_option_the_environment_or_a_profile_works(prod: Prod) -> None:
    agent = prod.tmp_path / "echo.py"
    agent.write_text(AGENTS["wf_echo"])
    ran = await tdev(prod.env(), "--token", TOKEN, "agents", "register", str(agent))
    assert ran.code == 0 and ran.stdout.startswith("registered Echo 1.0.0 (agent_"), ran
    ran = await tdev(prod.env(TDEV_TOKEN=TOKEN), "agents", "list", "--json")
    assert ran.code == 0, ran
    assert [a["name"] for a in json.loads(ran.stdout)["agents"]] == ["Echo"]

    # A profile names the whole mesh and where its token is; nothing else in the environment.
    lines = ["[prod]", *(f'{name} = "127.0.0.1:{port}"' for name, port in prod.ports.items()),
             'token_env = "PROD_TOKEN"']
    (prod.tmp_path / "profiles.toml").write_text("\n".join(lines) + "\n")
    bare = clean_env(prod.tmp_path, PROD_TOKEN=TOKEN)
    ran = await tdev(bare, "--profile", "prod", "agents", "show", "Echo", "--json")
    assert ran.code == 0 and json.loads(ran.stdout)["name"] == "Echo", ran
    ran = await tdev({**bare, "TDEV_PROFILE": "prod"}, "status", "--json")
    assert ran.code == 0, ran
    assert {s["health"] for s in json.loads(ran.stdout)["services"].values()} == {"SERVING"}
    unset = await tdev(clean_env(prod.tmp_path), "--profile", "prod", "agents", "list")
    assert_clean_failure(unset, 2, "error profile 'prod' takes its token from $PROD_TOKEN, which is not set")
    unknown = await tdev(bare, "--profile", "staging", "agents", "list")
    assert_clean_failure(unknown, 2, f"error no profile 'staging' in {prod.tmp_path / 'profiles.toml'}; it has: prod")


async def test_a_refusal_prints_code_field_violations_and_request_id(prod: Prod) -> None:
    ran = await tdev(prod.env(TDEV_TOKEN=TOKEN), "evolution", "show", "evo_000000000000")
    assert_clean_failure(ran, 1, 'error NOT_FOUND: unknown evolution run "evo_000000000000"')
    assert ran.stderr.splitlines()[-1].startswith("request id ")
    bad = prod.tmp_path / "bad.json"
    bad.write_text('{"name": "x", "nodes": [{"node_id": "a"}]}')
    ran = await tdev(prod.env(TDEV_TOKEN=TOKEN), "workflows", "create", str(bad))
    assert (ran.code, ran.stdout) == (2, "") and ran.stderr.startswith(f"error {bad}: ") and "node_id" in ran.stderr
    missing = await tdev(prod.env(TDEV_TOKEN=TOKEN), "workflows", "create", str(prod.tmp_path / "nothing.json"))
    assert (missing.code, missing.stdout) == (2, "") and "No such file" in missing.stderr
    assert "Traceback" not in ran.stderr + missing.stderr


async def test_mesh_down_gives_the_hint_and_exits_1(tmp_path: Path) -> None:
    down = clean_env(tmp_path, **{f"TDEV_{s.name.upper()}_ADDRESS": f"127.0.0.1:{free_port()}" for s in SERVICES})
    for command in (["agents", "list"], ["workflows", "list", "--json"], ["builds", "show", "build_000000000000"],
                    ["evolution", "list"]):
        ran = await tdev(down, *command)
        assert (ran.code, ran.stdout) == (1, ""), (command, ran)
        assert ran.stderr.startswith("error UNAVAILABLE: ") and ran.stderr.splitlines()[-1] == HINT, ran.stderr
    status = await tdev(down, "status")
    assert status.code == 1 and "UNREACHABLE" in status.stdout and status.stderr.strip() == HINT


async def test_piped_output_has_no_ansi_and_keeps_long_lines(prod: Prod) -> None:
    agent = prod.tmp_path / "echo.py"
    agent.write_text(AGENTS["wf_echo"])
    description = "Echoes its value back " + "and keeps going " * 20
    env = prod.env(TDEV_TOKEN=TOKEN, TERM="xterm-256color", COLUMNS="")
    env.pop("COLUMNS")
    ran = await tdev_piped(env, "agents", "register", str(agent), "--description", description.strip(), "--wait")
    assert ran.code == 0, ran
    assert "\x1b[" not in ran.stdout + ran.stderr
    assert f"  {description.strip()}\n" in ran.stdout  # one line, however long: no wrapping
    listed = await tdev_piped(env, "agents", "list")
    assert listed.code == 0 and "\x1b[" not in listed.stdout and "Echo" in listed.stdout
    agent_id = ran.stdout.split("(agent_")[1][:12]
    definition = prod.tmp_path / "echo.json"
    definition.write_text(json.dumps({"name": "piped", "nodes": [
        {"id": "node_" + "x" * 59, "agent_id": f"agent_{agent_id}",
         "inputs": {"value": {"$ref": "inputs.n"}}}]}))
    ran = await tdev_piped(env, "workflows", "run", str(definition), "-i", "n=5", "--follow")
    assert ran.code == 0 and "\x1b[" not in ran.stdout, ran
    lines = ran.stdout.splitlines()
    row = next(line for line in lines if line.startswith("│ node_" + "x" * 59 + " │ succeeded"))
    assert len(row) > 80  # wider than rich's default off a terminal, and not wrapped
    assert "1/1 nodes done" in ran.stdout and "succeeded outputs:" in lines  # the last frame ends its line
    down = await tdev_piped({**env, "TDEV_REGISTRY_ADDRESS": f"127.0.0.1:{free_port()}"}, "agents", "list")
    assert down.code == 1 and "\x1b[" not in down.stderr and down.stderr.splitlines()[-1] == HINT


async def _running_execution(prod: Prod) -> str:
    sleep = prod.tmp_path / "sleep.py"
    sleep.write_text(AGENTS["wf_sleep"])
    env = prod.env(TDEV_TOKEN=TOKEN)
    registered = await tdev(env, "agents", "register", str(sleep), "--json")
    assert registered.code == 0, registered
    agent = json.loads(registered.stdout)["agent"]
    definition = prod.tmp_path / "slow.json"
    definition.write_text(json.dumps({"name": "slow", "nodes": [
        {"id": "nap", "agent_id": agent["agent_id"], "inputs": {"seconds": 30}}]}))
    ran = await tdev(env, "workflows", "run", str(definition), "--json")
    assert ran.code == 0, ran
    return str(json.loads(ran.stdout)["execution_id"])


@pytest.mark.parametrize("as_json", [True, False])
async def test_ctrl_c_on_a_watch_says_how_to_watch_again_and_exits_130(prod: Prod, as_json: bool) -> None:
    execution_id = await _running_execution(prod)
    args = ["executions", "watch", execution_id, *(["--json"] if as_json else [])]
    process = await tdev_process(prod.env(TDEV_TOKEN=TOKEN), *args)
    assert process.stdout is not None and process.stderr is not None
    if as_json:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, (await process.stderr.read()).decode()
        first = json.loads(line)  # watching for real
        assert first["execution_id"] == execution_id and first["sequence"] == 1
    else:
        await asyncio.sleep(3)  # the watch is open (no output off a terminal until it ends)
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == (
        f"stopped watching; the execution goes on. watch again: tdev executions watch {execution_id}")
    assert "Traceback" not in stderr.decode()
    if as_json:
        assert all(json.loads(line) for line in stdout.decode().splitlines())
    still = await tdev(prod.env(TDEV_TOKEN=TOKEN), "executions", "get", execution_id, "--json")
    assert json.loads(still.stdout)["state"] == "STATE_RUNNING"  # the interrupt stopped only the watch


# -- TLS ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli-pki")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-certs"), "--out", str(directory)], check=True,
                   capture_output=True)
    return directory


async def _registry(common: CommonSettings) -> ServiceHandle:
    server = importlib.import_module("registry_svc.server")
    config = importlib.import_module("registry_svc.config")
    handle: ServiceHandle = await server.create_server(config.RegistrySettings(), common, port=0)
    return handle


async def test_tls_with_ca_and_mtls_with_client_certificate_work(tmp_path: Path, pki: Path) -> None:
    server_tls: dict[str, Any] = {"tls_cert_file": pki / "registry.pem", "tls_key_file": pki / "registry.key"}
    with server_logs_on_stderr():
        tls_only = await _registry(CommonSettings(data_dir=tmp_path / "tls", log_level="WARNING", **server_tls))
        mutual = await _registry(CommonSettings(
            mode="production", data_dir=tmp_path / "mtls", log_level="WARNING", auth_tokens=TOKENS,
            tls_ca_file=pki / "ca.pem", tls_client_ca_file=pki / "ca.pem", **server_tls))
        try:
            env = clean_env(tmp_path, TDEV_REGISTRY_ADDRESS=f"127.0.0.1:{tls_only.port}")
            ran = await tdev(env, "--ca", str(pki / "ca.pem"), "agents", "list", "--json")
            assert (ran.code, json.loads(ran.stdout or "null")) == (0, {"agents": []}), ran
            plaintext = await tdev(env, "agents", "list")
            assert (plaintext.code, plaintext.stdout) == (1, "") and "UNAVAILABLE" in plaintext.stderr

            env = clean_env(tmp_path, TDEV_REGISTRY_ADDRESS=f"127.0.0.1:{mutual.port}", TDEV_TOKEN=TOKEN)
            tls = ["--ca", str(pki / "ca.pem")]
            client = ["--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")]
            ran = await tdev(env, *tls, *client, "agents", "list", "--json")
            assert (ran.code, json.loads(ran.stdout or "null")) == (0, {"agents": []}), ran
            no_cert = await tdev(env, *tls, "agents", "list")
            assert (no_cert.code, no_cert.stdout) == (1, "") and no_cert.stderr.startswith("error UNAVAILABLE: ")
            assert "Traceback" not in no_cert.stderr
            no_token = await tdev({**env, "TDEV_TOKEN": None}, *tls, *client, "agents", "list")
            assert_clean_failure(no_token, 1, UNAUTHENTICATED)
            by_env = await tdev({**env, "TDEV_TLS_CA_FILE": str(pki / "ca.pem"),
                                 "TDEV_TLS_CLIENT_CERT_FILE": str(pki / "client.pem"),
                                 "TDEV_TLS_CLIENT_KEY_FILE": str(pki / "client.key")}, "agents", "list", "--json")
            assert by_env.code == 0, by_env
            half = await tdev(env, *tls, "--cert", str(pki / "client.pem"), "agents", "list")
            assert_clean_failure(half, 2, "error a client certificate needs its key and the key its certificate "
                                 "(--cert with --key, TDEV_TLS_CLIENT_CERT_FILE with TDEV_TLS_CLIENT_KEY_FILE)")
        finally:
            await tls_only.close(grace=0)
            await mutual.close(grace=0)


async def test_bad_files_and_settings_exit_2_with_one_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello\n")
    binary = tmp_path / "agent.py"
    binary.write_bytes(b"\xff\xfe")
    (tmp_path / "broken.toml").write_text("not toml [\n")
    cases = [
        (["--ca", str(not_pem), "agents", "list"], f"error {not_pem} is not a PEM CA certificate"),
        (["agents", "register", str(binary)], f"error {binary} is not UTF-8 text: invalid start byte at byte 0"),
        (["build", f"@{tmp_path / 'missing.txt'}"], f"error cannot read {tmp_path / 'missing.txt'}: No such file or "
                                                    "directory"),
    ]
    for args, line in cases:
        ran = await tdev(env, *args)
        assert_clean_failure(ran, 2, line)
    broken = await tdev({**env, "TDEV_PROFILES_FILE": str(tmp_path / "broken.toml")}, "agents", "list")
    assert (broken.code, broken.stdout) == (2, "") and broken.stderr.startswith(
        f"error profiles file {tmp_path / 'broken.toml'} is unreadable: ")
