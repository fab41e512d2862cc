"""``tdev evolve AGENT --suite FILE --generations N --follow`` and ``tdev evolution show RUN --plot out.png``
against the real services (the CLI runs in a worker thread with its own event loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
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
