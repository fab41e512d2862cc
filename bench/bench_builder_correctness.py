"""Builder correctness benchmark: are offline builds right on inputs they never saw, with and without acceptance cases?

Starts the registry, workflow and builder services in this process on loopback ports (SQLite files, the offline
provider, the real sandbox: what ``make run`` gives a user with no key). For every text of the public corpus
(``examples/requirements/<name>.txt`` with ``<name>.cases.json``) it builds twice, with the file's acceptance
cases and without any (reuse disabled, so the two builds are independent), then runs each packaged workflow
through the workflow service on the file's ``fresh`` cases, held out from the build, and compares the outputs
with ``tdev_common.llm.acceptance`` under each case's own comparison. A build that ended FAILED counts as not
correct. It also re-runs every succeeded build's acceptance cases against its packaged workflow: a build marked
succeeded that fails one of its own cases is a false success.

Printed: per text, the result of both builds and their times; the fraction correct with and without cases, the
median build times, the false successes. Targets: at least 80 % correct with acceptance cases, no false success.
Without cases the service's input and output names are the builder's own, so a caller's names (``average`` for
the mean, ``temperatures`` for the numbers) are part of what is judged there.
Run: ``python bench/bench_builder_correctness.py`` (``--strict``: exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import grpc  # noqa: E402
import report  # noqa: E402
from google.protobuf import json_format, struct_pb2  # noqa: E402
from tdev.builder.v1 import build_pb2  # noqa: E402
from tdev.builder.v1 import builder_service_pb2 as pb2  # noqa: E402
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc  # noqa: E402
from tdev.workflow.v1 import workflow_pb2 as wf_pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2 as wf_service_pb2  # noqa: E402
from tdev.workflow.v1 import workflow_service_pb2_grpc as wf_service_pb2_grpc  # noqa: E402

from builder_svc.config import BuilderSettings  # noqa: E402
from builder_svc.server import create_server as create_builder  # noqa: E402
from registry_svc.config import RegistrySettings  # noqa: E402
from registry_svc.server import create_server as create_registry  # noqa: E402
from tdev_common.config import CommonSettings  # noqa: E402
from tdev_common.llm import LLMSettings, build_llm  # noqa: E402
from tdev_common.llm.acceptance import mismatch  # noqa: E402
from tdev_common.telemetry import configure_logging  # noqa: E402
from workflow_svc.config import WorkflowSettings  # noqa: E402
from workflow_svc.server import create_server as create_workflow  # noqa: E402

REQUIREMENTS = ROOT / "examples" / "requirements"
TARGET_WITH_CASES = 0.8
Event = build_pb2.BuildEvent


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _case(value: dict[str, Any]) -> build_pb2.AcceptanceCase:
    return build_pb2.AcceptanceCase(
        name=value.get("name", ""), inputs=_struct(value["inputs"]), expected=_struct(value["expected"]),
        comparison=build_pb2.Comparison.Value("COMPARISON_" + value.get("comparison", "exact").upper()),
        tolerance=value.get("tolerance", 0.0))


async def _build(stub: pb2_grpc.BuilderServiceStub, text: str,
                 cases: list[dict[str, Any]]) -> tuple[float, build_pb2.Build]:
    started = time.perf_counter()
    constraints = build_pb2.BuildConstraints(disable_reuse=True, acceptance_cases=[_case(c) for c in cases])
    last = None
    async for response in stub.BuildService(pb2.BuildServiceRequest(requirements=text, constraints=constraints)):
        last = response.event
    seconds = time.perf_counter() - started
    assert last is not None
    return seconds, (await stub.GetBuild(pb2.GetBuildRequest(build_id=last.build_id))).build


async def _outputs(workflows: wf_service_pb2_grpc.WorkflowServiceStub, workflow_id: str,
                   inputs: dict[str, Any]) -> dict[str, Any] | None:
    call = workflows.ExecuteWorkflow(wf_service_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id,
                                                                           inputs=_struct(inputs)))
    try:
        events = [response.event async for response in call]
    except grpc.aio.AioRpcError:
        return None  # e.g. the inputs do not have the names the service reads: not the service asked for
    last = events[-1]
    if last.type != wf_pb2.ExecutionEvent.TYPE_EXECUTION_SUCCEEDED:
        return None
    return dict(json_format.MessageToDict(last.output))


async def _wrong(workflows: wf_service_pb2_grpc.WorkflowServiceStub, build: build_pb2.Build,
                 cases: list[dict[str, Any]]) -> list[str]:
    """Why the build's service is not right on the cases ([] when it is)."""
    if build.state != build_pb2.Build.STATE_SUCCEEDED:
        return [f"build {build_pb2.Build.State.Name(build.state)}: {build.error.message[:100]}"]
    problems = []
    for case in cases:
        outputs = await _outputs(workflows, build.package.workflow_id, case["inputs"])
        problem = "execution failed" if outputs is None else mismatch(
            case["expected"], outputs, case.get("comparison", "exact"), case.get("tolerance", 0.0))
        if problem:
            problems.append(f"{json.dumps(case['inputs'])[:60]}: {problem[:100]}")
    return problems


async def main(strict: bool) -> int:
    out = report.Report("builder_correctness", strict=strict)
    configure_logging("bench", "ERROR", True)
    logging.getLogger().setLevel(logging.ERROR)
    names = sorted(path.name.removesuffix(".cases.json") for path in REQUIREMENTS.glob("*.cases.json"))
    with tempfile.TemporaryDirectory(prefix="tdev-bench-correct-") as tmp:
        data = Path(tmp)
        common = CommonSettings(data_dir=data, log_level="WARNING")
        registry = await create_registry(RegistrySettings(database_url=f"sqlite+aiosqlite:///{data / 'r.sqlite'}"),
                                         common, port=0)
        mesh = CommonSettings(data_dir=data, log_level="WARNING", registry_address=f"127.0.0.1:{registry.port}")
        workflow = await create_workflow(WorkflowSettings(database_url=f"sqlite+aiosqlite:///{data / 'w.sqlite'}"),
                                         mesh, port=0)
        mesh = CommonSettings(data_dir=data, log_level="WARNING", registry_address=f"127.0.0.1:{registry.port}",
                              workflow_address=f"127.0.0.1:{workflow.port}")
        llm = await build_llm(LLMSettings(openai_enabled=False, anthropic_enabled=False), common=mesh)
        builder = await create_builder(BuilderSettings(database_url=f"sqlite+aiosqlite:///{data / 'b.sqlite'}"),
                                       mesh, port=0, llm=llm)
        builder_channel = grpc.aio.insecure_channel(f"127.0.0.1:{builder.port}")
        workflow_channel = grpc.aio.insecure_channel(f"127.0.0.1:{workflow.port}")
        stub = pb2_grpc.BuilderServiceStub(builder_channel)
        workflows = wf_service_pb2_grpc.WorkflowServiceStub(workflow_channel)
        correct = {"with": 0, "without": 0}
        times: dict[str, list[float]] = {"with": [], "without": []}
        false_successes = 0
        print(f"{'requirement':<26} {'with cases':<12} {'s':>6}  {'without':<12} {'s':>6}  why (first problem)")
        try:
            for name in names:
                text = (REQUIREMENTS / f"{name}.txt").read_text(encoding="utf-8").strip()
                body = json.loads((REQUIREMENTS / f"{name}.cases.json").read_text(encoding="utf-8"))
                row = []
                reasons = []
                for mode, cases in (("with", body["acceptance_cases"]), ("without", [])):
                    seconds, build = await _build(stub, text, cases)
                    times[mode].append(seconds)
                    problems = await _wrong(workflows, build, body["fresh"])
                    correct[mode] += not problems
                    if mode == "with" and build.state == build_pb2.Build.STATE_SUCCEEDED and \
                            await _wrong(workflows, build, body["acceptance_cases"]):
                        false_successes += 1
                        problems.insert(0, "FALSE SUCCESS: fails its own acceptance cases")
                    row.append(("correct" if not problems else "wrong", seconds))
                    if problems:
                        reasons.append(f"{mode}: {problems[0]}")
                print(f"{name:<26} {row[0][0]:<12} {row[0][1]:>6.2f}  {row[1][0]:<12} {row[1][1]:>6.2f}  "
                      f"{'; '.join(reasons)[:150]}")
        finally:
            await builder_channel.close()
            await workflow_channel.close()
            for handle in (builder, workflow, registry):
                await handle.close(grace=0.5)
            await llm.close()
    total = len(names)
    with_rate = correct["with"] / total
    print()
    print(f"texts: {total}")
    print(f"correct on fresh inputs with acceptance cases:    {correct['with']}/{total} = {with_rate:.0%} "
          f"(median build {statistics.median(times['with']):.2f} s)")
    print(f"correct on fresh inputs without acceptance cases: {correct['without']}/{total} = "
          f"{correct['without'] / total:.0%} (median build {statistics.median(times['without']):.2f} s)")
    out.check("correct on fresh inputs with acceptance cases", with_rate, ">=", TARGET_WITH_CASES, "")
    out.check("builds marked succeeded that fail their own acceptance cases", false_successes, "<=", 0, "")
    out.info("correct on fresh inputs without acceptance cases", f"{correct['without'] / total:.2f}")
    return out.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    report.add_arguments(parser)
    raise SystemExit(asyncio.run(main(parser.parse_args().strict)))
