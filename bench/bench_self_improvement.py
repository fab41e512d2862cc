"""Self-improvement loop benchmark: time from the first failing production execution to a stable fix, offline.

Starts the four services in this process on loopback ports (SQLite files in a temporary directory, the offline
provider, the real sandbox, program-transform operators only), then for each task: registers a buggy agent on
"stable", runs a capturing workflow on production inputs (some fail), sets an evolution policy (failure rate
above 20%), and keeps production traffic flowing until the policy reports the canary promoted to stable.
A last task has a fix that is slower than the rollout allows: the canary is rolled back, and the share of node
executions that ran the worse canary before the rollback is reported.

Printed: per task the seconds from the first failing execution to the fix on stable, and the exposure
fraction; bars: a fix on stable within 60 s on every task, and at most 25% of executions on a worse canary
(the canary's share is 20%, judged after 30 of its executions).
Run: ``python bench/bench_self_improvement.py`` (``--strict`` fails on a FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import report  # noqa: E402

from tdev_client import Connection, Mesh  # noqa: E402
from tdev_common.config import CommonSettings  # noqa: E402
from tests.support.inprocess_mesh import inprocess_mesh  # noqa: E402
from tests.workflow.conftest import _agent  # noqa: E402

BAR_SECONDS = 60.0
# The canary's share is 20%; its executions before the verdict are a negative-binomial draw, so with 30 of them
# the share seen lies within about 0.2 +- 0.05: the bar is the share plus that sampling noise.
EXPOSURE_SAMPLE = 30
BAR_EXPOSURE = 0.25
TASKS: dict[str, tuple[str, list[Any], list[Any]]] = {
    # name: (agent code, production inputs before the policy, traffic afterwards)
    "guard-too-strict": (_agent("Doubler", 'x = inputs["x"]\nif x > 10:\n    raise ValueError("too large")\n'
                                           'return {"y": x * 2}'), [*range(10), 11, 12, 13, 14], [3, 12, 7, 15, 1]),
    "negative-crash": (_agent("Rooter", 'x = inputs["x"]\nif x < 0:\n    raise ValueError("negative")\n'
                                        'return {"y": x + 1}'), [*range(8), -1, -2, -3], [2, -4, 5, -6, 1]),
    "missing-key": (_agent("Greeter", 'name = inputs["name"]\nif name == "":\n    raise KeyError("name")\n'
                                      'return {"greeting": "hi " + name}'), ["ann", "bo", "cy", "di", "ed", "", ""],
                    ["fay", "", "gus", "hal", ""]),
}
SLOW = _agent("Doubler", 'x = inputs["x"]\nif x > 10:\n    raise ValueError("too large")\n'
                         'total = 0\nfor step in range(300000):\n    total += 1\nreturn {"y": x * 2 + total - 300000}')
SEARCH = {"population_size": 8, "generations": 6, "islands": 1, "seed": 11, "plateau_generations": 0,
          "operators": "OPERATOR_SET_PROGRAM_TRANSFORM"}


def _inputs(value: Any) -> dict[str, Any]:
    return {"name": value} if isinstance(value, str) else {"x": value}


async def _run(mesh: Mesh, workflow_id: str, values: list[Any]) -> list[str]:
    used = []
    for value in values:
        started = await mesh.workflows.start_execution(workflow_id, _inputs(value))
        async for _ in mesh.workflows.watch_execution(started["execution_id"]):
            pass
        execution = await mesh.workflows.get_execution(started["execution_id"])
        used.append(execution["nodes"][0].get("agent_version", ""))
    return used


async def _task(mesh: Mesh, name: str, code: str, before: list[Any], after: list[Any],
                min_sample: int = 10) -> dict[str, Any]:
    agent = (await mesh.registry.register_agent(name, code))["agent"]
    agent_id = agent["agent_id"]
    await mesh.registry.set_agent_alias(agent_id, "stable", agent["version"])
    key = "name" if isinstance(before[0], str) else "x"
    workflow = await mesh.workflows.create_workflow({
        "name": name, "capture": {"enabled": True, "success_sample_rate": 1.0},
        "nodes": [{"id": "n", "agent_id": agent_id, "agent_alias": "stable",
                   "inputs": {key: {"$ref": f"inputs.{key}"}}}]})
    started = time.perf_counter()
    await _run(mesh, workflow["workflow_id"], before)
    await mesh.evolution.set_evolution_policy({
        "agent_id": agent_id, "trigger": {"failure_rate_threshold": 0.2, "min_executions": 5}, "config": SEARCH,
        "canary_traffic_fraction": 0.2, "canary_min_sample": min_sample})
    used: list[str] = []
    canary = ""
    while time.perf_counter() - started < 3 * BAR_SECONDS:
        status = (await mesh.evolution.get_evolution_policy(agent_id))["status"]
        canary = status.get("canary_version") or canary
        if status.get("last_outcome"):
            break
        if status["phase"] == "PHASE_ROLLING_OUT":
            used += await _run(mesh, workflow["workflow_id"], after)
        else:
            await asyncio.sleep(0.1)
    outcome = status.get("last_outcome", "")
    return {"task": name, "seconds": time.perf_counter() - started, "outcome": outcome,
            "promoted": " promoted to stable" in outcome, "exposure": used.count(canary) / len(used) if used else 0.0}


async def main(strict: bool) -> int:
    logging.disable(logging.WARNING)
    os.environ["TDEV_EVOLUTION_POLICY_INTERVAL_SECONDS"] = "0.2"
    os.environ["TDEV_WORKFLOW_REPORT_INTERVAL_SECONDS"] = "0.05"
    out = report.Report("self-improvement", strict=strict)
    with tempfile.TemporaryDirectory() as data:
        common = CommonSettings(data_dir=Path(data), log_level="ERROR")
        async with inprocess_mesh(common) as ports:
            connection = Connection.resolve(environ={}, profiles_file=Path(data) / "none.toml",
                                            **{name: f"127.0.0.1:{port}" for name, port in ports.items()})
            async with Mesh(connection) as mesh:
                for name, (code, before, after) in TASKS.items():
                    result = await _task(mesh, name, code, before, after)
                    if not result["promoted"]:
                        out.fail(f"{name}: first failing execution -> fix on stable", result["outcome"][:120])
                        continue
                    out.check(f"{name}: first failing execution -> fix on stable", result["seconds"], "<=",
                              BAR_SECONDS, "s", note=result["outcome"][:80])
                slow = await _task(mesh, "slower-fix", SLOW, [*range(6), 11, 12, 13], [11, 12, 13, 14, 15],
                                   min_sample=EXPOSURE_SAMPLE)
                if " rolled back" not in slow["outcome"]:
                    out.fail("slower-fix: rolled back", slow["outcome"][:120])
                out.check("slower-fix: share of executions on the worse canary before its rollback",
                          slow["exposure"], "<=", BAR_EXPOSURE, "", note="the canary's share is 20%")
    return out.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    report.add_arguments(parser)
    sys.exit(asyncio.run(main(parser.parse_args().strict)))
