"""``--json`` on every ``tdev`` command: the command tree is walked, so a new command without the option (or not
exercised here) fails; each command's stdout parses as one JSON document, or one JSON object per line for
streams and ``--follow``, against the real services."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tdev_cli.main import app
from tdev_common.config import CommonSettings
from tests.cli.support import clean_env, server_logs_on_stderr, tdev, tdev_process
from tests.support.inprocess_mesh import inprocess_mesh
from tests.support.ports import free_port
from tests.workflow.conftest import AGENTS

pytestmark = pytest.mark.mesh

SCALER = '''
class Scaler:
    """Scales x by a factor."""

    def get_capabilities(self):
        return {"name": "scaler", "description": "scales a number"}

    def execute(self, inputs):
        return {"y": inputs["x"] * 2}
'''
SUITE = {"cases": [{"name": f"x{x}", "inputs": {"x": x}, "expected": {"y": 3 * x}} for x in range(1, 5)]}


def leaf_commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every runnable command of ``tdev`` with its path (``("agents", "list")``)."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), ())


def test_every_command_has_a_json_option() -> None:
    missing = [" ".join(path) for path, command in leaf_commands()
               if not any("--json" in param.opts for param in command.params)]
    assert missing == [], f"commands without --json: {missing}"


class Json:
    """Runs commands with --json against one mesh and remembers which commands it ran."""

    def __init__(self, env: dict[str, str | None]) -> None:
        self.env = env
        self.covered: set[tuple[str, ...]] = set()

    async def doc(self, command: tuple[str, ...], *args: str, code: int = 0) -> Any:
        """One JSON document and nothing else on stdout."""
        ran = await tdev(self.env, *command, *args, "--json")
        assert ran.code == code, (command, ran)
        self.covered.add(command)
        return json.loads(ran.stdout)

    async def lines(self, command: tuple[str, ...], *args: str, code: int = 0) -> list[Any]:
        """One JSON object per line and nothing else on stdout."""
        ran = await tdev(self.env, *command, *args, "--json")
        assert ran.code == code, (command, ran)
        self.covered.add(command)
        events = [json.loads(line) for line in ran.stdout.splitlines()]
        assert events and all(isinstance(event, dict) for event in events), ran.stdout
        return events


@pytest.fixture
async def mesh_json(tmp_path: Path) -> AsyncIterator[Json]:
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    with server_logs_on_stderr():
        async with inprocess_mesh(common) as ports:
            yield Json(clean_env(tmp_path, **{f"TDEV_{name.upper()}_ADDRESS": f"127.0.0.1:{port}"
                                              for name, port in ports.items()}))


async def test_every_command_prints_json_with_json(mesh_json: Json, tmp_path: Path) -> None:
    j = mesh_json
    status = await j.doc(("status",))
    assert {s["health"] for s in status["services"].values()} == {"SERVING"}

    for name in ("wf_echo", "wf_sleep"):
        (tmp_path / f"{name}.py").write_text(AGENTS[name])
    (tmp_path / "scaler.py").write_text(SCALER)
    echo = (await j.doc(("agents", "register"), str(tmp_path / "wf_echo.py")))["agent"]
    sleep = (await j.doc(("agents", "register"), str(tmp_path / "wf_sleep.py"), "--wait"))["agent"]
    assert sleep["analysis"]["state"] == "STATE_SUCCEEDED"
    assert [a["agent_id"] for a in (await j.doc(("agents", "list")))["agents"]] == [sleep["agent_id"],
                                                                                    echo["agent_id"]]
    assert (await j.doc(("agents", "show"), echo["agent_id"]))["name"] == echo["name"]
    labelled = await j.doc(("agents", "label"), echo["agent_id"], "--version", "1.0.0", "--set", "tier=gold")
    assert labelled["labels"] == {"tier": "gold"}
    assert isinstance((await j.doc(("agents", "search"), "echo a value"))["results"], list)
    assert [v["version"] for v in (await j.doc(("agents", "versions"), echo["agent_id"]))["versions"]] == ["1.0.0"]
    assert (await j.doc(("agents", "lineage"), echo["agent_id"]))["root"]["agent_id"] == echo["agent_id"]

    definition = tmp_path / "echo.json"
    definition.write_text(json.dumps({"name": "cli-echo", "nodes": [
        {"id": "a", "agent_id": echo["agent_id"], "inputs": {"value": {"$ref": "inputs.n"}}}]}))
    workflow = await j.doc(("workflows", "create"), str(definition))
    workflow_id = workflow["workflow_id"]
    assert (await j.doc(("workflows", "get"), workflow_id))["name"] == "cli-echo"
    assert [w["workflow_id"] for w in (await j.doc(("workflows", "list")))["workflows"]] == [workflow_id]
    started = await j.doc(("workflows", "run"), workflow_id, "--input", "n=3")
    followed = await j.lines(("workflows", "run"), workflow_id, "--input", "n=4", "--follow")
    assert followed[-1]["type"] == "TYPE_EXECUTION_SUCCEEDED" and followed[-1]["output"] == {"a": {"value": 4}}
    watched = await j.lines(("executions", "watch"), started["execution_id"])
    assert [e["sequence"] for e in watched] == list(range(1, len(watched) + 1))
    outcomes = await j.lines(("executions", "watch"), started["execution_id"], "--type", "node_succeeded")
    assert [e["type"] for e in outcomes] == ["TYPE_NODE_SUCCEEDED", "TYPE_EXECUTION_SUCCEEDED"]
    assert (await j.doc(("executions", "get"), started["execution_id"]))["state"] == "STATE_SUCCEEDED"
    assert len((await j.doc(("executions", "list"), "--workflow", workflow_id))["executions"]) == 2
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({"name": "cli-slow", "nodes": [
        {"id": "nap", "agent_id": sleep["agent_id"], "inputs": {"seconds": 30}}]}))
    captured = tmp_path / "captured.json"
    captured.write_text(json.dumps({"name": "cli-capture", "capture": {"enabled": True, "success_sample_rate": 1},
                                    "nodes": [{"id": "a", "agent_id": echo["agent_id"], "inputs": {"value": 5}}]}))
    await j.lines(("workflows", "run"), (await j.doc(("workflows", "create"), str(captured)))["workflow_id"],
                  "--follow")
    for _ in range(100):  # the outbox reaches the registry within its report interval
        cases = (await j.doc(("agents", "cases", "list"), echo["name"], "--filter", "succeeding"))["cases"]
        if cases:
            break
        await asyncio.sleep(0.1)
    assert [c["output"] for c in cases] == [{"value": 5}]
    labelled = await j.doc(("agents", "cases", "label"), cases[0]["case_id"], '{"value": 6}')
    assert (labelled["labelled"], labelled["expected"]) == (True, {"value": 6})
    policy = await j.doc(("evolution", "policy", "set"), echo["name"], "--labelled-failures", "100",
                         "--population", "8", "--generations", "2")
    assert (policy["agent_id"], policy["trigger"]["labelled_failures"]) == (echo["agent_id"], 100)
    triggered = await j.doc(("evolution", "policy", "trigger"), echo["agent_id"], "--reason", "cli test")
    assert triggered["run"]["automatic"] and triggered["run"]["start_reason"].startswith("cli test; suite from")
    assert (await j.doc(("evolution", "policy", "show"), echo["agent_id"]))["status"]["runs_started"] == 1
    assert [p["agent_id"] for p in (await j.doc(("evolution", "policy", "list")))["policies"]] == [echo["agent_id"]]
    assert (await j.doc(("evolution", "policy", "delete"), echo["agent_id"]))["deleted"]
    assert await j.doc(("agents", "cases", "delete"), cases[0]["case_id"]) == {"deleted": cases[0]["case_id"]}
    aliased = await j.doc(("agents", "alias", "set"), echo["name"], "stable", "1.0.0")
    assert (aliased["alias"], aliased["version"]) == ("stable", "1.0.0")
    canary = await j.doc(("agents", "alias", "set"), echo["agent_id"], "canary", "1.0.0", "--traffic", "0.2",
                         "--min-sample", "5")
    assert (canary["traffic_fraction"], canary["rollout"]["min_sample"]) == (0.2, 5)
    listed = await j.doc(("agents", "alias", "list"), echo["name"])
    assert [a["alias"] for a in listed["aliases"]] == ["canary", "stable"]
    status = await j.doc(("agents", "rollout", "status"), echo["name"])
    assert status["rollout"]["canary"]["version"] == "1.0.0" and status["events"][0]["kind"] == "KIND_SET"
    assert (await j.doc(("agents", "alias", "delete"), echo["name"], "canary"))["deleted"]["alias"] == "canary"
    running = await j.doc(("workflows", "run"), str(slow))
    cancelled = await j.doc(("executions", "cancel"), running["execution_id"], "--reason", "enough")
    assert cancelled["execution_id"] == running["execution_id"]

    build = await j.doc(("build",), "Sort the numbers in ascending order")
    events = await j.lines(("build",), "Reverse the text", "--follow")
    assert events[-1]["type"] == "TYPE_BUILD_SUCCEEDED", events[-1]
    watched = await j.lines(("builds", "watch"), build["build_id"])
    assert watched[-1]["type"].startswith("TYPE_BUILD_")
    assert (await j.doc(("builds", "show"), build["build_id"]))["build_id"] == build["build_id"]
    assert {b["build_id"] for b in (await j.doc(("builds", "list")))["builds"]} >= {build["build_id"]}
    pending = await j.doc(("build",), "Count the words of the text")
    assert (await j.doc(("builds", "cancel"), pending["build_id"]))["build_id"] == pending["build_id"]

    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(SUITE))
    small = ["--suite", str(suite), "--population", "8", "--generations", "2", "--seed", "7", "--plateau", "0",
             "--no-promote"]
    run = await j.doc(("evolve",), str(tmp_path / "scaler.py"), *small)
    events = await j.lines(("evolve",), run["agent_id"], *small, "--follow")
    assert events[-1]["type"] in ("TYPE_RUN_SUCCEEDED", "TYPE_RUN_FAILED")
    watched = await j.lines(("evolution", "watch"), run["run_id"], )
    assert watched[-1]["type"] == "TYPE_RUN_SUCCEEDED"
    shown = await j.doc(("evolution", "show"), run["run_id"], "--plot", str(tmp_path / "fitness.png"))
    assert shown["run_id"] == run["run_id"] and (tmp_path / "fitness.png").stat().st_size > 0
    assert run["run_id"] in {r["run_id"] for r in (await j.doc(("evolution", "list")))["runs"]}
    listed = (await j.doc(("evolution", "candidates"), run["run_id"], "--code"))["candidates"]
    assert listed[0]["generation"] == 0 and listed[0]["operator"] == "seed" and listed[0]["code"] == SCALER
    assert len(listed) == 1 + sum(report["evaluations"] for report in shown["generations"])
    first_two = (await j.doc(("evolution", "candidates"), run["run_id"], "--limit", "2"))["candidates"]
    assert [c["code_hash"] for c in first_two] == [c["code_hash"] for c in listed[:2]]
    assert {c["code"] for c in first_two} == {""}
    long = await j.doc(("evolve",), run["agent_id"], "--suite", str(suite), "--population", "8", "--generations",
                       "500", "--plateau", "0")
    assert (await j.doc(("evolution", "cancel"), long["run_id"]))["state"] == "STATE_CANCELLED"

    # `up` and `console` below, as real children
    assert j.covered | {("up",), ("console",)} == {path for path, _ in leaf_commands()}


async def test_up_with_json_prints_the_addresses_as_one_json_line(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("registry", "workflow", "builder", "evolution")}
    env = clean_env(tmp_path, TDEV_DATA_DIR=str(tmp_path / "data"),
                    **{f"TDEV_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    process = await tdev_process(env, "up", "--json")
    assert process.stdout is not None and process.stderr is not None
    try:
        line = await process.stdout.readline()
        assert line, (await process.stderr.read()).decode()
        assert json.loads(line)["services"] == {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        process.terminate()
        rest, _ = await process.communicate()
    assert rest == b""  # nothing else on stdout, even while stopping


async def test_console_with_json_prints_its_address_as_one_json_line(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, TDEV_CONSOLE_PORT=str(port))
    process = await tdev_process(env, "console", "--json")
    assert process.stdout is not None and process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, (await process.stderr.read()).decode()
        assert json.loads(line) == {"console": f"http://127.0.0.1:{port}/"}
    finally:
        process.terminate()
        rest, _ = await process.communicate()
    assert rest == b""
