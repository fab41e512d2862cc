"""``tdev workflows`` and ``tdev executions``: create and run workflows, follow executions live (typed client)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tdev.workflow.v1 import workflow_pb2 as wf_pb2

from tdev_cli import session
from tdev_cli.session import JsonOption, emit, emit_line, out
from tdev_client import InvalidArgument, WorkflowClient
from tdev_client.convert import from_dict

POLICIES = {"fail-fast": "FAILURE_POLICY_FAIL_FAST", "continue": "FAILURE_POLICY_CONTINUE"}
STATES = {name.removeprefix("STATE_").lower(): name for name, value in wf_pb2.Execution.State.items() if value}
END_EVENTS = ("TYPE_EXECUTION_SUCCEEDED", "TYPE_EXECUTION_FAILED", "TYPE_EXECUTION_CANCELLED")
NODE_STYLE = {
    "pending": "dim", "scheduled": "cyan", "running": "yellow", "retrying": "magenta", "succeeded": "green",
    "failed": "red", "skipped": "dim", "cancelled": "red",
}

ADDRESS_HELP = "Workflow service address (else the profile's, else TDEV_WORKFLOW_ADDRESS, else 127.0.0.1:50052)."

workflows_app = typer.Typer(help="Create, inspect and run workflows.", no_args_is_help=True)
executions_app = typer.Typer(help="Watch, inspect and cancel executions.", no_args_is_help=True)


@workflows_app.callback()
def _workflow_options(
    ctx: typer.Context,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Workflows in the workflow service."""
    ctx.obj = address


@executions_app.callback()
def _execution_options(
    ctx: typer.Context,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Executions in the workflow service."""
    ctx.obj = address


def _call(ctx: typer.Context, work: Any) -> Any:
    """Runs ``work(mesh.workflows)``; a failed call prints its status and exits 1."""
    return session.call(lambda mesh: work(mesh.workflows), workflow=ctx.obj or "")


def _lower(state: str, prefix: str = "STATE_") -> str:
    return str(state).removeprefix(prefix).lower()


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; values that parse as JSON are typed (numbers, lists, objects), others stay strings."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--input expects key=value, got {pair!r}")
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


def load_definition(path: Path) -> dict[str, Any]:
    """A definition file (protobuf JSON mapping of ``Workflow``); a file that is not one exits 2 naming why."""
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(definition, dict):
            raise ValueError("a workflow definition is a JSON object")
        from_dict(definition, wf_pb2.Workflow)  # every field name and type checked before anything is sent
    except (OSError, ValueError) as error:
        session.fail(f"{path}: {error}")
    except InvalidArgument as error:
        session.fail(f"{path}: {error.message}")
    return definition


def _workflow_table(workflow: dict[str, Any]) -> Table:
    table = Table("node", "agent", "version", "depends on", title=f"{workflow['name']} {workflow['version']} "
                  f"({workflow.get('workflow_id') or 'not stored'})")
    for node in workflow.get("nodes", []):
        table.add_row(node["id"], node.get("agent_name") or node.get("agent_id", ""), node.get("agent_version", ""),
                      ", ".join(node.get("depends_on", [])))
    return table


def _print_workflow(workflow: dict[str, Any]) -> None:
    out.print(_workflow_table(workflow))
    plan = workflow.get("plan", {})
    for index, generation in enumerate(plan.get("generations", [])):
        out.print(f"  generation {index}: {', '.join(generation.get('node_ids', []))}")
    out.print(f"  critical path: {' -> '.join(plan.get('critical_path', []))}")


# -- workflows ----------------------------------------------------------------------------------------------
@workflows_app.command("create")
def create(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Definition file (JSON, protobuf JSON mapping).")],
    validate_only: Annotated[bool, typer.Option("--validate-only", help="Check it; store nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate a definition (every problem at once) and store it; prints the workflow id."""
    definition = load_definition(file)
    workflow = _call(ctx, lambda workflows: workflows.create_workflow(definition, validate_only=validate_only))
    if as_json:
        emit(workflow)
        return
    _print_workflow(workflow)
    if workflow.get("workflow_id"):
        out.print(f"workflow_id: [bold]{workflow['workflow_id']}[/bold]")


@workflows_app.command("get")
def get(ctx: typer.Context, workflow_id: str, as_json: JsonOption = False) -> None:
    """Show a workflow and its plan."""
    workflow = _call(ctx, lambda workflows: workflows.get_workflow(workflow_id))
    if as_json:
        emit(workflow)
    else:
        _print_workflow(workflow)


@workflows_app.command("list")
def list_workflows(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Only names containing this text.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Most workflows shown.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List workflows, newest first."""
    page = _call(ctx, lambda workflows: workflows.list_workflows(page_size=limit, name_contains=name))
    if as_json:
        emit({"workflows": page.items})
        return
    table = Table("workflow_id", "name", "version", "nodes")
    for workflow in page.items:
        table.add_row(workflow["workflow_id"], workflow["name"], workflow["version"],
                      str(len(workflow.get("nodes", []))))
    out.print(table)


@workflows_app.command("run")
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A definition file (created first) or a workflow id.")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="Workflow input key=value (repeatable).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show live per-node progress until it ends.")] = False,
    failure_policy: Annotated[str, typer.Option("--failure-policy", help="fail-fast or continue.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Start an execution; with --follow, show live progress and the outputs (--json: one event per line)."""
    values = parse_inputs(inputs or [])
    if failure_policy and failure_policy not in POLICIES:
        raise typer.BadParameter(f"--failure-policy must be one of {', '.join(POLICIES)}")
    path = Path(target)
    definition = load_definition(path) if path.suffix == ".json" or path.exists() else None

    async def work(workflows: WorkflowClient) -> int:
        workflow_id = target
        if definition is not None:
            workflow_id = (await workflows.create_workflow(definition))["workflow_id"]
            session.say(as_json, f"created workflow [bold]{workflow_id}[/bold]")
        workflow = await workflows.get_workflow(workflow_id)
        execution = await workflows.start_execution(workflow_id, values,
                                                    failure_policy=POLICIES.get(failure_policy))
        execution_id = execution["execution_id"]
        if not follow:
            if as_json:
                emit(execution)
            else:
                out.print(f"execution [bold]{execution_id}[/bold]")
            return 0
        session.say(as_json, f"execution [bold]{execution_id}[/bold]")
        return await follow_execution(workflows, execution_id, [node["id"] for node in workflow.get("nodes", [])],
                                      as_json=as_json)

    raise typer.Exit(_call(ctx, work))


# -- executions ---------------------------------------------------------------------------------------------
class Progress:
    """Per-node state folded from events, rendered as a live table."""

    def __init__(self, node_ids: list[str]) -> None:
        self.nodes: dict[str, dict[str, Any]] = {
            node_id: {"state": "pending", "attempt": 0, "ms": None, "note": ""} for node_id in node_ids
        }
        self.last_sequence = 0
        self.end: dict[str, Any] | None = None
        self.started = time.monotonic()

    def apply(self, event: dict[str, Any]) -> None:
        """Folds one event in."""
        self.last_sequence = int(event.get("sequence", 0))
        kind = str(event.get("type", ""))
        if kind in END_EVENTS:
            self.end = event
            return
        if not event.get("node_id"):
            return
        row = self.nodes.setdefault(event["node_id"], {"state": "pending", "attempt": 0, "ms": None, "note": ""})
        state = kind.removeprefix("TYPE_NODE_").lower()
        row["state"] = {"started": "running"}.get(state, state)
        row["attempt"] = max(row["attempt"], int(event.get("attempt", 0)))
        if event.get("duration_ms"):
            row["ms"] = event["duration_ms"]
        error = event.get("error", {})
        if kind == "TYPE_NODE_RETRYING":
            row["note"] = f"{error.get('type', '')}: retry in {event.get('backoff_seconds', 0.0):.2f}s"
        elif kind == "TYPE_NODE_FAILED":
            row["note"] = f"{error.get('type', '')}: {error.get('message', '')}"[:80]
        elif kind in ("TYPE_NODE_SKIPPED", "TYPE_NODE_CANCELLED"):
            row["note"] = str(event.get("message", ""))[:80]
        else:
            row["note"] = ""

    def render(self) -> Group:
        """The table and a summary line."""
        table = Table("node", "state", "attempt", "ms", "note")
        for node_id, row in self.nodes.items():
            style = NODE_STYLE.get(row["state"], "")
            table.add_row(node_id, Text(row["state"], style=style), str(row["attempt"] or ""),
                          f"{row['ms']:.1f}" if row["ms"] is not None else "", Text(row["note"]))
        done = sum(1 for row in self.nodes.values() if row["state"] in ("succeeded", "failed", "skipped", "cancelled"))
        summary = Text(f"{done}/{len(self.nodes)} nodes done, {time.monotonic() - self.started:.1f}s, "
                       f"event {self.last_sequence}")
        return Group(table, summary)


def _watched(workflows: WorkflowClient, execution_id: str, after: int = 0,
             event_types: Sequence[str] = ()) -> AsyncIterator[Any]:
    """WatchExecution (resumed by the client when the stream drops); Ctrl-C says how to watch again."""
    session.watching("the execution", f"tdev executions watch {execution_id}")
    return workflows.watch_execution(execution_id, after_sequence=after, event_types=event_types)


def _event_type(name: str) -> str:
    """``node_failed``, ``NODE_FAILED`` or ``TYPE_NODE_FAILED`` -> ``TYPE_NODE_FAILED`` (the service checks it)."""
    return "TYPE_" + name.strip().upper().removeprefix("TYPE_")


async def follow_execution(workflows: WorkflowClient, execution_id: str, node_ids: list[str], *,
                           as_json: bool = False) -> int:
    """Live progress until the end (or one JSON event per line); prints the outputs or the error; the exit
    status."""
    progress = Progress(node_ids)
    if as_json:
        async for event in _watched(workflows, execution_id):
            progress.apply(event)
            emit_line(event)
    else:
        with session.live(progress.render()) as update:
            async for event in _watched(workflows, execution_id):
                progress.apply(event)
                update(progress.render())
    end = progress.end
    if end is None:
        return 1
    if end["type"] == "TYPE_EXECUTION_SUCCEEDED":
        if not as_json:
            outputs = end.get("output", {})
            if end.get("output_ref"):
                outputs = (await workflows.get_execution(execution_id)).get("outputs", {})
            out.print("[green]succeeded[/green] outputs:")
            out.print_json(json.dumps(outputs))
        return 0
    if not as_json:
        label = "failed" if end["type"] == "TYPE_EXECUTION_FAILED" else "cancelled"
        error = end.get("error", {})
        out.print(f"[red]{label}[/red] {escape(error.get('type', ''))}: {escape(error.get('message', ''))}")
    return 1


@executions_app.command("watch")
def watch(
    ctx: typer.Context,
    execution_id: str,
    after: Annotated[int, typer.Option("--after", help="Only events after this sequence number.")] = 0,
    types: Annotated[list[str] | None, typer.Option(
        "--type", help="Only events of this type, e.g. node_failed (repeatable); the ending event always comes.",
    )] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow an execution live (resumes by itself if the stream drops); --json: one event per line."""
    event_types = [_event_type(name) for name in types or []]

    async def work(workflows: WorkflowClient) -> int:
        execution = await workflows.get_execution(execution_id)
        if after or as_json or event_types:
            async for event in _watched(workflows, execution_id, after, event_types):
                if as_json:
                    emit_line(event)
                    continue
                node = f" {event['node_id']}" if event.get("node_id") else ""
                out.print(f"{event['sequence']:>6} {str(event['type']).removeprefix('TYPE_')}{node} "
                          f"{event.get('message', '')}", markup=False)
            return 0
        return await follow_execution(workflows, execution_id, [node["node_id"] for node in execution.get("nodes", [])])

    raise typer.Exit(_call(ctx, work))


@executions_app.command("get")
def get_execution(ctx: typer.Context, execution_id: str, as_json: JsonOption = False) -> None:
    """Show an execution with per-node state and its outputs."""
    execution = _call(ctx, lambda workflows: workflows.get_execution(execution_id))
    if as_json:
        emit(execution)
        return
    out.print(f"{execution['execution_id']} ({execution['workflow_id']}): [bold]{_lower(execution['state'])}[/bold]")
    table = Table("node", "state", "attempt", "ms")
    for node in execution.get("nodes", []):
        table.add_row(node["node_id"], _lower(node["state"]), str(node.get("attempt", 0)),
                      f"{node.get('duration_ms', 0.0):.1f}")
    out.print(table)
    if "outputs" in execution:
        out.print_json(json.dumps(execution["outputs"]))
    error = execution.get("error", {})
    if error.get("type"):
        out.print(f"[red]{escape(error['type'])}[/red]: {escape(error.get('message', ''))}")


@executions_app.command("list")
def list_executions(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Option("--workflow", help="Only executions of this workflow.")] = "",
    state: Annotated[str, typer.Option("--state", help=f"Only this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Most executions shown.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List executions, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"--state must be one of {', '.join(STATES)}")
    page = _call(ctx, lambda workflows: workflows.list_executions(
        workflow_id=workflow_id, state=STATES.get(state), page_size=limit))
    if as_json:
        emit({"executions": page.items})
        return
    table = Table("execution_id", "workflow_id", "state", "events")
    for execution in page.items:
        table.add_row(execution["execution_id"], execution["workflow_id"], _lower(execution["state"]),
                      str(execution.get("last_sequence", 0)))
    out.print(table)


@executions_app.command("cancel")
def cancel(
    ctx: typer.Context,
    execution_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept on the execution.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Cancel a running execution (its running sandboxes stop within a second)."""
    execution = _call(ctx, lambda workflows: workflows.cancel_execution(execution_id, reason=reason))
    if as_json:
        emit(execution)
    else:
        out.print(f"{execution_id}: {_lower(execution['state'])}")
