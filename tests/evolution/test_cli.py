"""``tdev evolve AGENT --suite FILE --generations N --follow`` and ``tdev evolution show RUN --plot out.png``
against the real services (the CLI runs in a worker thread with its own event loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from typer.testing import CliRunner

from tdev_cli.main import app
from tests.evolution.conftest import EXAMPLES, Mesh

pytestmark = pytest.mark.mesh  # real servers or subprocesses


async def invoke(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


async def test_evolve_follow_then_show_with_a_plot(mesh: Mesh, tmp_path: Path) -> None:
    address = f"127.0.0.1:{mesh.evolution_handle.port}"
    registry = f"127.0.0.1:{mesh.registry_handle.port}"
    code, output = await invoke(
        "evolve",
        str(EXAMPLES / "dispatcher" / "agent.py"),
        "--suite",
        str(EXAMPLES / "dispatcher" / "suite.json"),
        "--generations",
        "3",
        "--population",
        "12",
        "--seed",
        "3",
        "--operators",
        "program_transform",
        "--follow",
        "--address",
        address,
        "--registry-address",
        registry,
    )
    assert code == 0, output
    run_id = output.split("run ", 1)[1].split(":", 1)[0].strip()
    assert run_id.startswith("evo_")
    assert "gen" in output and "best" in output and "vs seed" in output
    assert "run_succeeded: 3 generations finished" in output
    chart = tmp_path / "fitness.png"
    code, output = await invoke("evolution", "show", run_id, "--plot", str(chart), "--address", address)
    assert code == 0, output
    assert f"chart written to {chart}" in output and "3 generations finished" in output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    code, output = await invoke("evolution", "list", "--address", address)
    assert code == 0 and run_id in output
    code, output = await invoke("evolution", "cancel", run_id, "--address", address)
    assert code == 1 and "FAILED_PRECONDITION" in output


async def test_evolve_files_each_agent_py_under_its_own_agent(mesh: Mesh) -> None:
    """The three examples are all ``agent.py``: each is its own agent, and a file of another class is refused
    under a taken name unless ``--new-version-of`` asks for it."""
    address = f"127.0.0.1:{mesh.evolution_handle.port}"
    registry = f"127.0.0.1:{mesh.registry_handle.port}"
    common = ("--generations", "1", "--population", "6", "--islands", "1", "--seed", "1", "--operators",
              "program_transform", "--no-promote", "--address", address, "--registry-address", registry)
    ids = {}
    for example in ("dispatcher", "slugify"):
        code, output = await invoke("evolve", str(EXAMPLES / example / "agent.py"), "--suite",
                                    str(EXAMPLES / example / "suite.json"), *common)
        assert code == 0, output
        agent = (await mesh.registry.GetAgent(registry_pb2.GetAgentRequest(name=example, exclude_code=True))).agent
        assert (agent.version, agent.class_name) == ("1.0.0", example.capitalize())
        assert f": {agent.agent_id} 1.0.0, population 6" in output
        ids[example] = agent.agent_id
    slugify = EXAMPLES / "slugify" / "agent.py"
    code, output = await invoke("evolve", str(slugify), "--name", "dispatcher", "--suite",
                                str(EXAMPLES / "slugify" / "suite.json"), *common)
    # Compared without whitespace: the console wraps long lines, inside the path too, at its own width.
    expected = (f"error FAILED_PRECONDITION: {slugify} is not a version of agent dispatcher: dispatcher 1.0.0 is "
                "class Dispatcher, the file defines class Slugify.")
    # ``in``, not startswith: log lines of the in-process services may precede the CLI's own output.
    assert code == 1 and "".join(expected.split()) in "".join(output.split()), output
    code, output = await invoke("evolve", str(slugify), "--new-version-of", "dispatcher", "--suite",
                                str(EXAMPLES / "slugify" / "suite.json"), *common)
    assert code == 0 and f": {ids['dispatcher']} 1.1.0, population 6" in output, output
