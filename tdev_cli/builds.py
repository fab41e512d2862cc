"""``tdev build`` and ``tdev builds``: build services from requirements and follow them live (over gRPC)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from google.protobuf import json_format, struct_pb2
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tdev.builder.v1 import build_pb2
from tdev.builder.v1 import builder_service_pb2 as pb2
from tdev.builder.v1 import builder_service_pb2_grpc as pb2_grpc

from tdev_cli.calls import call_service, resumable_events
from tdev_common.config import get_common_settings
from tdev_common.protojson import struct_to_dict

T = TypeVar("T")
Event = build_pb2.BuildEvent
STAGES = [value for name, value in build_pb2.Stage.items() if value]
STATES = {name.removeprefix("STATE_").lower(): value for name, value in build_pb2.Build.State.items() if value}
END_EVENTS = (Event.TYPE_BUILD_SUCCEEDED, Event.TYPE_BUILD_FAILED, Event.TYPE_BUILD_CANCELLED)
STAGE_STYLE = {"pending": "dim", "running": "yellow", "succeeded": "green", "failed": "red"}
ADDRESS_HELP = "Builder service address (default: TDEV_BUILDER_ADDRESS)."

builds_app = typer.Typer(help="Show, list, watch and cancel builds.", no_args_is_help=True)
console = Console()


def stage_name(stage: int) -> str:
    """``STAGE_SELECT_OR_CREATE`` -> ``select or create``."""
    return build_pb2.Stage.Name(stage).removeprefix("STAGE_").lower().replace("_", " ")  # type: ignore[arg-type]


def _plain(message: struct_pb2.Struct) -> Any:
    return struct_to_dict(message)


def _run(address: str, work: Callable[[pb2_grpc.BuilderServiceStub], Awaitable[T]]) -> T:
    """Runs ``work`` against the builder; a failed call prints its status and exits 1."""
    return call_service(address or get_common_settings().builder_address, pb2_grpc.BuilderServiceStub, work)


# -- live progress ------------------------------------------------------------------------------------------
class Progress:
    """Per-stage state folded from build events, rendered as a live table."""

    def __init__(self, build_id: str) -> None:
        self.build_id = build_id
        self.rows: dict[int, dict[str, Any]] = {
            stage: {"state": "pending", "attempt": 0, "ms": None, "tokens": 0, "cost": 0.0, "summary": ""}
            for stage in STAGES
        }
        self.last_message = ""
        self.last_sequence = 0
        self.end: build_pb2.BuildEvent | None = None
        self.started = time.monotonic()

    def apply(self, event: build_pb2.BuildEvent) -> None:
        """Folds one event in."""
        self.last_sequence = event.sequence
        self.last_message = event.message
        if event.type in END_EVENTS:
            self.end = event
            return
        row = self.rows.get(event.stage)
        if row is None:
            return
        attempt = int(_plain(event.details).get("attempt", 0) or 0)
        if event.type == Event.TYPE_STAGE_STARTED:
            row.update(state="running", attempt=attempt, ms=None, summary="")
        elif event.type in (Event.TYPE_STAGE_SUCCEEDED, Event.TYPE_STAGE_FAILED):
            row.update(state="succeeded" if event.type == Event.TYPE_STAGE_SUCCEEDED else "failed",
                       ms=event.duration_ms, summary=event.message)
            row["tokens"] += event.usage.input_tokens + event.usage.output_tokens
            row["cost"] += event.usage.cost_usd
        elif event.type == Event.TYPE_STAGE_PROGRESS:
            row["summary"] = event.message

    def render(self) -> Group:
        """The stage table and a status line."""
        table = Table("stage", "state", "try", "ms", "tokens", "cost $", "summary", title=f"build {self.build_id}")
        for stage, row in self.rows.items():
            table.add_row(stage_name(stage), Text(row["state"], style=STAGE_STYLE.get(row["state"], "")),
                          str(row["attempt"] or ""), f"{row['ms']:.0f}" if row["ms"] is not None else "",
                          str(row["tokens"] or ""), f"{row['cost']:.6f}" if row["cost"] else "",
                          Text(row["summary"][:100], overflow="ellipsis"))
        status = Text(f"{time.monotonic() - self.started:.1f}s, event {self.last_sequence}: {self.last_message}"[:160])
        return Group(table, status)


def events(stub: pb2_grpc.BuilderServiceStub, build_id: str, after: int) -> AsyncIterator[build_pb2.BuildEvent]:
    """WatchBuild, resumed after the last event when the stream drops (no gap, no duplicate)."""
    return resumable_events(
        lambda last: stub.WatchBuild(pb2.WatchBuildRequest(build_id=build_id, after_sequence=last)), after
    )


async def follow(stub: pb2_grpc.BuilderServiceStub, build_id: str) -> int:
    """Live stage progress until the build ends, then its result; returns the exit status."""
    progress = Progress(build_id)
    with Live(progress.render(), console=console, refresh_per_second=8, transient=False) as live:
        async for event in events(stub, build_id, 0):
            progress.apply(event)
            live.update(progress.render())
    build = (await stub.GetBuild(pb2.GetBuildRequest(build_id=build_id))).build
    print_result(build)
    return 0 if build.state == build_pb2.Build.STATE_SUCCEEDED else 1


def print_result(build: build_pb2.Build) -> None:
    """The package (agents, validation, usage) or the error."""
    usage = build.usage
    line = (f"{usage.calls} LLM calls, {usage.input_tokens + usage.output_tokens} tokens, ${usage.cost_usd:.6f}, "
            f"{build.elapsed_seconds:.2f}s; models: {', '.join(usage.models) or 'none'}")
    if build.state != build_pb2.Build.STATE_SUCCEEDED:
        state = build_pb2.Build.State.Name(build.state).removeprefix("STATE_").lower()
        colour = "red" if state in ("failed", "cancelled") else "yellow"
        console.print(f"[{colour}]{state}[/{colour}] {build.error.code}: {escape(build.error.message)}"
                      if build.error.code else f"[{colour}]{state}[/{colour}]")
        for agent in build.registered_agents:
            console.print(f"  registered by this build: {agent.agent_id} {agent.version} ({agent.node_id})")
        console.print(line)
        return
    package = build.package
    console.print(f"[green]succeeded[/green] service [bold]{package.service_id}[/bold]: workflow "
                  f"[bold]{package.workflow_id}[/bold] version {package.workflow_version}")
    table = Table("node", "agent_id", "version", "origin", "fixes")
    for agent in package.agents:
        table.add_row(agent.node_id, agent.agent_id, agent.version, "reused" if agent.reused else "generated",
                      str(agent.fix_attempts))
    console.print(table)
    passed = sum(1 for case in package.validation_report if case.passed)
    console.print(f"validation: {passed}/{len(package.validation_report)} cases passed")
    if build.state_detail:
        colour = "yellow" if package.derived_examples_only else "green"
        console.print(f"[{colour}]{escape(build.state_detail)}[/{colour}]")
    console.print(line)
    console.print(f"README: tdev builds show {build.build_id} --readme")


# -- commands -----------------------------------------------------------------------------------------------
def _acceptance_cases(raws: list[str]) -> list[build_pb2.AcceptanceCase]:
    """``--case`` values: a JSON case, or @file holding a case, a list of them or {"acceptance_cases": [...]}."""
    found: list[build_pb2.AcceptanceCase] = []
    for raw in raws:
        try:
            value = json.loads(Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw)
        except (OSError, ValueError) as error:
            raise typer.BadParameter(f"--case must be JSON or @file: {error}") from None
        if isinstance(value, dict) and "acceptance_cases" in value:
            value = value["acceptance_cases"]
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict) or not isinstance(item.get("expected"), dict):
                raise typer.BadParameter('--case needs {"inputs": {...}, "expected": {...}[, "comparison": "exact|'
                                         'json_subset|numeric_tolerance|key_names_equivalent", "tolerance": x]}')
            comparison = "COMPARISON_" + str(item.get("comparison") or "exact").upper()
            if comparison not in build_pb2.Comparison.keys():
                raise typer.BadParameter(f"--case: unknown comparison {item.get('comparison')!r}")
            inputs, expected = struct_pb2.Struct(), struct_pb2.Struct()
            inputs.update(item.get("inputs") or {})
            expected.update(item["expected"])
            found.append(build_pb2.AcceptanceCase(
                name=str(item.get("name", "")), inputs=inputs, expected=expected,
                comparison=comparison, tolerance=float(item.get("tolerance") or 0.0)))  # type: ignore[arg-type]
    return found


def _constraints(max_cost: float, max_tokens: int, max_time: float, max_fix_attempts: int, no_reuse: bool,
                 samples: list[str], cases: list[str] | None = None) -> build_pb2.BuildConstraints:
    values = []
    for raw in samples:
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise typer.BadParameter(f"--sample must be a JSON object: {error}") from None
        if not isinstance(value, dict):
            raise typer.BadParameter("--sample must be a JSON object")
        message = struct_pb2.Struct()
        message.update(value)
        values.append(message)
    return build_pb2.BuildConstraints(max_cost_usd=max_cost, max_tokens=max_tokens, max_duration_seconds=max_time,
                                      max_fix_attempts=max_fix_attempts, disable_reuse=no_reuse, sample_inputs=values,
                                      acceptance_cases=_acceptance_cases(cases or []))


def build_command(
    requirements: Annotated[str, typer.Argument(help="Plain-language requirements, or @file to read them.")],
    follow_build: Annotated[bool, typer.Option("--follow", "-f", help="Show live stage progress until it ends.")]
    = False,
    max_cost: Annotated[float, typer.Option("--max-cost", help="LLM cost budget in US$ (0: service default).")] = 0.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="LLM token budget (0: service default).")] = 0,
    max_time: Annotated[float, typer.Option("--max-time", help="Time budget in seconds (0: service default).")] = 0.0,
    max_fix_attempts: Annotated[int, typer.Option("--max-fix-attempts", help="Fix attempts per agent.")] = 0,
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="Always generate; never reuse registry agents.")]
    = False,
    samples: Annotated[list[str] | None, typer.Option("--sample", help="Extra validation input (JSON object).")]
    = None,
    request_id: Annotated[str, typer.Option("--request-id", help="Idempotency key: a retry returns the same build.")]
    = "",
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
    cases: Annotated[list[str] | None, typer.Option("--case", help=(
        "Acceptance case the service must meet: JSON {inputs, expected, comparison?, tolerance?, name?} or @file "
        "(one case, a list, or {\"acceptance_cases\": [...]}). Without any, the build is validated on derived "
        "examples only."))] = None,
) -> None:
    """Build a validated service from plain-language requirements."""
    text = Path(requirements[1:]).read_text(encoding="utf-8") if requirements.startswith("@") else requirements
    request = pb2.StartBuildRequest(
        requirements=text, request_id=request_id,
        constraints=_constraints(max_cost, max_tokens, max_time, max_fix_attempts, no_reuse, samples or [], cases))

    async def work(stub: pb2_grpc.BuilderServiceStub) -> int:
        build = (await stub.StartBuild(request)).build
        console.print(f"build [bold]{build.build_id}[/bold] accepted")
        if not follow_build:
            console.print(f"follow it: tdev builds watch {build.build_id}")
            return 0
        return await follow(stub, build.build_id)

    raise typer.Exit(_run(address, work))


@builds_app.command("show")
def show(
    build_id: str,
    readme: Annotated[bool, typer.Option("--readme", help="Print the generated README.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the build as JSON.")] = False,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Show a build: its stages with durations and usage, and its package or error."""

    async def work(stub: pb2_grpc.BuilderServiceStub) -> build_pb2.Build:
        return (await stub.GetBuild(pb2.GetBuildRequest(build_id=build_id))).build

    build = _run(address, work)
    if as_json:
        console.print_json(json_format.MessageToJson(build))
        return
    if readme:
        if not build.package.readme:
            console.print("[yellow]no README: the build has not succeeded[/yellow]")
            raise typer.Exit(1)
        console.print(Markdown(build.package.readme))
        return
    state = build_pb2.Build.State.Name(build.state).removeprefix("STATE_").lower()
    console.print(f"build [bold]{build.build_id}[/bold] {state}: {escape(build.requirements[:200])}")
    table = Table("stage", "try", "state", "ms", "tokens", "cost $", "summary")
    for stage in build.stages:
        stage_state = build_pb2.StageResult.State.Name(stage.state).removeprefix("STATE_").lower()
        table.add_row(stage_name(stage.stage), str(stage.attempt),
                      Text(stage_state, style=STAGE_STYLE.get(stage_state, "")), f"{stage.duration_ms:.0f}",
                      str(stage.usage.input_tokens + stage.usage.output_tokens), f"{stage.usage.cost_usd:.6f}",
                      Text(stage.summary))
    console.print(table)
    print_result(build)


@builds_app.command("list")
def list_builds(
    state: Annotated[str, typer.Option("--state", help=f"Only this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Most builds shown.")] = 50,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """List builds, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"--state must be one of {', '.join(STATES)}")

    async def work(stub: pb2_grpc.BuilderServiceStub) -> list[build_pb2.Build]:
        found: list[build_pb2.Build] = []
        token = ""
        while len(found) < limit:
            page = await stub.ListBuilds(pb2.ListBuildsRequest(
                page_size=min(limit - len(found), 500), page_token=token, state=STATES.get(state, 0)))  # type: ignore[arg-type]
            found.extend(page.builds)
            token = page.next_page_token
            if not token:
                break
        return found

    table = Table("build_id", "state", "created", "service", "requirements")
    for build in _run(address, work):
        name = build_pb2.Build.State.Name(build.state).removeprefix("STATE_").lower()
        table.add_row(build.build_id, Text(name, style={"succeeded": "green", "failed": "red"}.get(name, "yellow")),
                      build.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), build.package.service_id,
                      Text(build.requirements[:60]))
    console.print(table)


@builds_app.command("watch")
def watch(
    build_id: str,
    after: Annotated[int, typer.Option("--after", help="Only events after this sequence number.")] = 0,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Follow a build live (resumes by itself if the stream drops); with --after, print the raw events."""

    async def work(stub: pb2_grpc.BuilderServiceStub) -> int:
        if not after:
            return await follow(stub, build_id)
        async for event in events(stub, build_id, after):
            stage = f" [{stage_name(event.stage)}]" if event.stage else ""
            console.print(f"{event.sequence:>5} {Event.Type.Name(event.type).removeprefix('TYPE_').lower()}{stage} "
                          f"{event.message}", markup=False)
        return 0

    raise typer.Exit(_run(address, work))


@builds_app.command("cancel")
def cancel(
    build_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept on the build.")] = "",
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Cancel a pending or running build."""

    async def work(stub: pb2_grpc.BuilderServiceStub) -> build_pb2.Build:
        return (await stub.CancelBuild(pb2.CancelBuildRequest(build_id=build_id, reason=reason))).build

    build = _run(address, work)
    console.print(f"build [bold]{build.build_id}[/bold] cancelled: {escape(build.error.message)}")
