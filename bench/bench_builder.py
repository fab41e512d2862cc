"""Builder benchmark: time from a build request to a validated, packaged service, offline, per example requirement.

Starts the registry, workflow and builder services in this process on loopback ports, on SQLite files in a
temporary directory with the offline LLM provider and the real sandbox (what ``make run`` gives a user with no
key), then sends each text of ``examples/requirements/*.txt`` to BuildService (with the acceptance cases of its
``.cases.json``) and times the stream from the request to the BUILD_SUCCEEDED event: analysis, planning, code
generation, registration, sandbox tests, workflow creation and validation executions included.

Bars: ours is a whole validated service in under 10 s (median); the seed plan's is one agent created within
5 minutes. Printed: per-requirement times, the median, PASS/FAIL against 10 s and the ratio to the 5-minute bar.
Run: ``python bench/bench_builder.py`` (``--repeat N`` runs every requirement N times; ``--strict``: exit 1 on FAIL).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

import grpc  # noqa: E402
import report  # noqa: E402
from tdev.builder.v1 import build_pb2  # noqa: E402
from tdev.builder.v1 import builder_service_pb2 as pb2  # noqa: E402
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc  # noqa: E402

from builder_svc.config import BuilderSettings  # noqa: E402
from builder_svc.server import create_server as create_builder  # noqa: E402
from registry_svc.config import RegistrySettings  # noqa: E402
from registry_svc.server import create_server as create_registry  # noqa: E402
from tdev_common.config import CommonSettings  # noqa: E402
from tdev_common.llm import LLMSettings, build_llm  # noqa: E402
from tdev_common.telemetry import configure_logging  # noqa: E402
from workflow_svc.config import WorkflowSettings  # noqa: E402
from workflow_svc.server import create_server as create_workflow  # noqa: E402

REQUIREMENTS = ROOT / "examples" / "requirements"
TARGET_SECONDS = 10.0
SEED_BAR_SECONDS = 300.0
Event = build_pb2.BuildEvent


def acceptance_cases(path: Path) -> list[build_pb2.AcceptanceCase]:
    """The acceptance cases of ``<name>.cases.json`` next to a requirement text (none when there is no file)."""
    cases_file = path.with_name(f"{path.stem}.cases.json")
    if not cases_file.exists():
        return []
    found = []
    for case in json.loads(cases_file.read_text(encoding="utf-8"))["acceptance_cases"]:
        message = build_pb2.AcceptanceCase(name=case.get("name", ""), tolerance=case.get("tolerance", 0.0),
                                           comparison=build_pb2.Comparison.Value(
                                               "COMPARISON_" + case.get("comparison", "exact").upper()))
        message.inputs.update(case["inputs"])
        message.expected.update(case["expected"])
        found.append(message)
    return found


async def one_build(stub: pb2_grpc.BuilderServiceStub, text: str,
                    cases: list[build_pb2.AcceptanceCase] | None = None) -> tuple[float, build_pb2.BuildEvent, int]:
    """Seconds from the request to the last event, the last event, and how many events were streamed."""
    started = time.perf_counter()
    last = None
    count = 0
    request = pb2.BuildServiceRequest(requirements=text,
                                      constraints=build_pb2.BuildConstraints(acceptance_cases=cases or []))
    async for response in stub.BuildService(request):
        last = response.event
        count += 1
    assert last is not None
    return time.perf_counter() - started, last, count


async def main(repeat: int, strict: bool) -> int:
    out = report.Report("builder", strict=strict)
    configure_logging("bench", "WARNING", True)
    logging.getLogger().setLevel(logging.WARNING)
    texts = sorted(REQUIREMENTS.glob("*.txt"))
    with tempfile.TemporaryDirectory(prefix="tdev-bench-builder-") as tmp:
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
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{builder.port}")
        stub = pb2_grpc.BuilderServiceStub(channel)
        times: list[float] = []
        failures = 0
        print(f"{'requirement':<28} {'seconds':>8} {'agents':>6} {'reused':>6} {'events':>6}  result")
        try:
            for round_number in range(repeat):
                for path in texts:
                    seconds, last, count = await one_build(stub, path.read_text().strip(), acceptance_cases(path))
                    build = (await stub.GetBuild(pb2.GetBuildRequest(build_id=last.build_id))).build
                    ok = last.type == Event.TYPE_BUILD_SUCCEEDED
                    failures += 0 if ok else 1
                    times.append(seconds)
                    agents = build.package.agents
                    label = path.stem if repeat == 1 else f"{path.stem} #{round_number + 1}"
                    result = "validated" if ok else f"FAILED {last.error.code}: {last.error.message[:60]}"
                    print(f"{label:<28} {seconds:>8.3f} {len(agents):>6} {sum(a.reused for a in agents):>6} "
                          f"{count:>6}  {result}")
        finally:
            await channel.close()
            for handle in (builder, workflow, registry):
                await handle.close(grace=0.5)
            await llm.close()
    median = statistics.median(times)
    print()
    print(f"builds: {len(times)}, failed: {failures}; median {median:.3f} s, mean {statistics.fmean(times):.3f} s, "
          f"max {max(times):.3f} s")
    out.check("median time to a validated service", median, "<", TARGET_SECONDS, "s")
    out.check("failed builds", failures, "<=", 0, "")
    out.info("against the seed plan's bar (one agent within 5 minutes)",
             f"the median whole service takes {median / SEED_BAR_SECONDS:.4f}x that")
    return out.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="Runs of every requirement (default 1).")
    report.add_arguments(parser)
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(main(arguments.repeat, arguments.strict)))
