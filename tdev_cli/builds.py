"""``tdev build`` and ``tdev builds``: build services from requirements and follow them live (typed client)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tdev.builder.v1 import build_pb2

from tdev_cli import session
from tdev_cli.session import JsonOption, emit, emit_line, out
from tdev_client import BuilderClient

STAGES = [name for name, value in build_pb2.Stage.items() if value]
STATES = {name.removeprefix("STATE_").lower(): name for name, value in build_pb2.Build.State.items() if value}
COMPARISONS = set(build_pb2.Comparison.keys())
END_EVENTS = ("TYPE_BUILD_SUCCEEDED", "TYPE_BUILD_FAILED", "TYPE_BUILD_CANCELLED")
STAGE_STYLE = {"pending": "dim", "running": "yellow", "succeeded": "green", "failed": "red"}
ADDRESS_HELP = "Builder service address (else the profile's, else TDEV_BUILDER_ADDRESS, else 127.0.0.1:50053)."

builds_app = typer.Typer(help="Show, list, watch and cancel builds.", no_args_is_help=True)


def stage_name(stage: str) -> str:
    """``STAGE_SELECT_OR_CREATE`` -> ``select or create``."""
    return str(stage).removeprefix("STAGE_").lower().replace("_", " ")


def _lower(state: str) -> str:
    return str(state).removeprefix("STATE_").lower()


def _run(address: str, work: Any) -> Any:
    """Runs ``work(mesh.builds)``; a failed call prints its status and exits 1."""
    return session.call(lambda mesh: work(mesh.builds), builder=address)


def _tokens(usage: dict[str, Any]) -> int:
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


# -- live progress ------------------------------------------------------------------------------------------
class Progress:
    """Per-stage state folded from build events, rendered as a live table."""

    def __init__(self, build_id: str) -> None:
        self.build_id = build_id
        self.rows: dict[str, dict[str, Any]] = {
            stage: {"state": "pending", "attempt": 0, "ms": None, "tokens": 0, "cost": 0.0, "summary": ""}
            for stage in STAGES
        }
        self.last_message = ""
        self.last_sequence = 0
        self.end: dict[str, Any] | None = None
        self.started = time.monotonic()

    def apply(self, event: dict[str, Any]) -> None:
        """Folds one event in."""
        self.last_sequence = int(event.get("sequence", 0))
        self.last_message = str(event.get("message", ""))
        kind = event.get("type", "")
        if kind in END_EVENTS:
            self.end = event
            return
        row = self.rows.get(str(event.get("stage", "")))
        if row is None:
            return
        attempt = int((event.get("details") or {}).get("attempt", 0) or 0)
        if kind == "TYPE_STAGE_STARTED":
            row.update(state="running", attempt=attempt, ms=None, summary="")
        elif kind in ("TYPE_STAGE_SUCCEEDED", "TYPE_STAGE_FAILED"):
            row.update(state="succeeded" if kind == "TYPE_STAGE_SUCCEEDED" else "failed",
                       ms=event.get("duration_ms", 0.0), summary=self.last_message)
            usage = event.get("usage", {})
            row["tokens"] += _tokens(usage)
            row["cost"] += float(usage.get("cost_usd", 0.0))
        elif kind == "TYPE_STAGE_PROGRESS":
            row["summary"] = self.last_message

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


def _watched(builds: BuilderClient, build_id: str, after: int = 0) -> Any:
    """WatchBuild (resumed by the client when the stream drops); Ctrl-C says how to watch again."""
    session.watching("the build", f"tdev builds watch {build_id}")
    return builds.watch_build(build_id, after_sequence=after)


async def follow(builds: BuilderClient, build_id: str, *, as_json: bool = False) -> int:
    """Live stage progress until the build ends, then its result (--json: one event per line, then nothing
    else); returns the exit status."""
    progress = Progress(build_id)
    if as_json:
        async for event in _watched(builds, build_id):
            emit_line(event)
    else:
        with session.live(progress.render()) as update:
            async for event in _watched(builds, build_id):
                progress.apply(event)
                update(progress.render())
    build = await builds.get_build(build_id)
    if not as_json:
        print_result(build)
    return 0 if build["state"] == "STATE_SUCCEEDED" else 1


def print_result(build: Mapping[str, Any]) -> None:
    """The package (agents, validation, usage) or the error."""
    usage = build.get("usage", {})
    line = (f"{usage.get('calls', 0)} LLM calls, {_tokens(usage)} tokens, ${usage.get('cost_usd', 0.0):.6f}, "
            f"{build.get('elapsed_seconds', 0.0):.2f}s; models: {', '.join(usage.get('models', [])) or 'none'}")
    if build["state"] != "STATE_SUCCEEDED":
        state = _lower(build["state"])
        colour = "red" if state in ("failed", "cancelled") else "yellow"
        error = build.get("error", {})
        out.print(f"[{colour}]{state}[/{colour}] {escape(error.get('code', ''))}: {escape(error.get('message', ''))}"
                  if error.get("code") else f"[{colour}]{state}[/{colour}]")
        for agent in build.get("registered_agents", []):
            out.print(f"  registered by this build: {agent['agent_id']} {agent['version']} ({agent['node_id']})")
        out.print(line, markup=False)
        return
    package = build.get("package", {})
    out.print(f"[green]succeeded[/green] service [bold]{package.get('service_id', '')}[/bold]: workflow "
              f"[bold]{package.get('workflow_id', '')}[/bold] version {package.get('workflow_version', '')}")
    table = Table("node", "agent_id", "version", "origin", "fixes")
    for agent in package.get("agents", []):
        table.add_row(agent["node_id"], agent["agent_id"], agent["version"],
                      "reused" if agent.get("reused") else "generated", str(agent.get("fix_attempts", 0)))
    out.print(table)
    report = package.get("validation_report", [])
    out.print(f"validation: {sum(1 for case in report if case.get('passed'))}/{len(report)} cases passed")
    if build.get("state_detail"):
        colour = "yellow" if package.get("derived_examples_only") else "green"
        out.print(f"[{colour}]{escape(build['state_detail'])}[/{colour}]")
    out.print(line, markup=False)
    out.print(f"README: tdev builds show {build['build_id']} --readme")


# -- commands -----------------------------------------------------------------------------------------------
def _acceptance_cases(raws: list[str]) -> list[dict[str, Any]]:
    """``--case`` values: a JSON case, or @file holding a case, a list of them or {"acceptance_cases": [...]}."""
    found: list[dict[str, Any]] = []
    for raw in raws:
        text = session.read_text(Path(raw[1:])) if raw.startswith("@") else raw
        try:
            value = json.loads(text)
        except ValueError as error:
            session.fail(f"--case must be JSON or @file: {error}")
        if isinstance(value, dict) and "acceptance_cases" in value:
            value = value["acceptance_cases"]
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict) or not isinstance(item.get("expected"), dict):
                session.fail('--case needs {"inputs": {...}, "expected": {...}[, "comparison": "exact|json_subset|'
                             'numeric_tolerance|key_names_equivalent", "tolerance": x]}')
            comparison = "COMPARISON_" + str(item.get("comparison") or "exact").upper()
            if comparison not in COMPARISONS:
                session.fail(f"--case: unknown comparison {item.get('comparison')!r}")
            found.append({"name": str(item.get("name", "")), "inputs": item.get("inputs") or {},
                          "expected": item["expected"], "comparison": comparison,
                          "tolerance": float(item.get("tolerance") or 0.0)})
    return found


def _constraints(max_cost: float, max_tokens: int, max_time: float, max_fix_attempts: int, no_reuse: bool,
                 samples: list[str], cases: list[str] | None = None) -> dict[str, Any]:
    values = []
    for raw in samples:
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise typer.BadParameter(f"--sample must be a JSON object: {error}") from None
        if not isinstance(value, dict):
            raise typer.BadParameter("--sample must be a JSON object")
        values.append(value)
    return {"max_cost_usd": max_cost, "max_tokens": max_tokens, "max_duration_seconds": max_time,
            "max_fix_attempts": max_fix_attempts, "disable_reuse": no_reuse, "sample_inputs": values,
            "acceptance_cases": _acceptance_cases(cases or [])}


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
    as_json: JsonOption = False,
) -> None:
    """Build a validated service from plain-language requirements (--json: the build, or with --follow one
    event per line)."""
    text = session.read_text(Path(requirements[1:])) if requirements.startswith("@") else requirements
    constraints = _constraints(max_cost, max_tokens, max_time, max_fix_attempts, no_reuse, samples or [], cases)

    async def work(builds: BuilderClient) -> int:
        build = await builds.start_build(text, constraints=constraints, request_id=request_id)
        build_id = build["build_id"]
        if not follow_build:
            if as_json:
                emit(build)
            else:
                out.print(f"build [bold]{build_id}[/bold] accepted")
                out.print(f"follow it: tdev builds watch {build_id}")
            return 0
        session.say(as_json, f"build [bold]{build_id}[/bold] accepted")
        return await follow(builds, build_id, as_json=as_json)

    raise typer.Exit(_run(address, work))


@builds_app.command("show")
def show(
    build_id: str,
    readme: Annotated[bool, typer.Option("--readme", help="Print the generated README.")] = False,
    as_json: JsonOption = False,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Show a build: its stages with durations and usage, and its package or error."""
    build = _run(address, lambda builds: builds.get_build(build_id))
    if as_json:
        emit(build)
        return
    if readme:
        if not build.get("package", {}).get("readme"):
            session.err.print("[yellow]no README: the build has not succeeded[/yellow]")
            raise typer.Exit(1)
        # Prose reads best at 100 columns, also when piped (headings are centred across the width).
        out.print(Markdown(build["package"]["readme"]), width=min(out.width, 100))
        return
    out.print(f"build [bold]{build['build_id']}[/bold] {_lower(build['state'])}: {escape(build['requirements'][:200])}")
    table = Table("stage", "try", "state", "ms", "tokens", "cost $", "summary")
    for stage in build.get("stages", []):
        stage_state = _lower(stage["state"])
        usage = stage.get("usage", {})
        table.add_row(stage_name(stage["stage"]), str(stage.get("attempt", 0)),
                      Text(stage_state, style=STAGE_STYLE.get(stage_state, "")), f"{stage.get('duration_ms', 0):.0f}",
                      str(_tokens(usage)), f"{usage.get('cost_usd', 0.0):.6f}", Text(stage.get("summary", "")))
    out.print(table)
    print_result(build)


@builds_app.command("list")
def list_builds(
    state: Annotated[str, typer.Option("--state", help=f"Only this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Most builds shown.")] = 50,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """List builds, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"--state must be one of {', '.join(STATES)}")

    async def work(builds: BuilderClient) -> list[dict[str, Any]]:
        found: list[Any] = []
        token = ""
        while len(found) < limit:
            page = await builds.list_builds(page_size=min(limit - len(found), 500), page_token=token,
                                            state=STATES.get(state))
            found.extend(page.items)
            token = page.next_page_token
            if not token:
                break
        return found

    found = _run(address, work)
    if as_json:
        emit({"builds": found})
        return
    table = Table("build_id", "state", "created", "service", "requirements")
    for build in found:
        name = _lower(build["state"])
        table.add_row(build["build_id"], Text(name, style={"succeeded": "green", "failed": "red"}.get(name, "yellow")),
                      (build.get("create_time") or "")[:19].replace("T", " "),
                      build.get("package", {}).get("service_id", ""), Text(build["requirements"][:60]))
    out.print(table)


@builds_app.command("watch")
def watch(
    build_id: str,
    after: Annotated[int, typer.Option("--after", help="Only events after this sequence number.")] = 0,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Follow a build live (resumes by itself if the stream drops); with --after, print the raw events."""

    async def work(builds: BuilderClient) -> int:
        if not after:
            return await follow(builds, build_id, as_json=as_json)
        async for event in _watched(builds, build_id, after):
            if as_json:
                emit_line(event)
                continue
            stage = f" [{stage_name(event['stage'])}]" if event.get("stage") not in (None, "", "STAGE_UNSPECIFIED") \
                else ""
            out.print(f"{event['sequence']:>5} {str(event['type']).removeprefix('TYPE_').lower()}{stage} "
                      f"{event.get('message', '')}", markup=False)
        return 0

    raise typer.Exit(_run(address, work))


@builds_app.command("cancel")
def cancel(
    build_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept on the build.")] = "",
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Cancel a pending or running build."""
    build = _run(address, lambda builds: builds.cancel_build(build_id, reason=reason))
    if as_json:
        emit(build)
    else:
        out.print(f"build [bold]{build['build_id']}[/bold] cancelled: "
                  f"{escape(build.get('error', {}).get('message', ''))}")
