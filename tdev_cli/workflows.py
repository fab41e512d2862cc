"""``tdev workflows`` and ``tdev executions``: create and run workflows, follow executions live (over gRPC)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf import json_format, struct_pb2
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from tdev.workflow.v1 import workflow_pb2 as wf_pb2
from tdev.workflow.v1 import workflow_service_pb2 as pb2
from tdev.workflow.v1 import workflow_service_pb2_grpc as pb2_grpc

from tdev_cli.calls import call_service, resumable_events
from tdev_common.config import get_common_settings
from tdev_common.protojson import struct_to_dict

T = TypeVar("T")
Event = wf_pb2.ExecutionEvent
POLICIES: dict[str, int] = {"fail-fast": wf_pb2.FAILURE_POLICY_FAIL_FAST, "continue": wf_pb2.FAILURE_POLICY_CONTINUE}
STATES = {name.removeprefix("STATE_").lower(): value for name, value in wf_pb2.Execution.State.items() if value}
END_EVENTS = (Event.TYPE_EXECUTION_SUCCEEDED, Event.TYPE_EXECUTION_FAILED, Event.TYPE_EXECUTION_CANCELLED)
NODE_STYLE = {
    "pending": "dim", "scheduled": "cyan", "running": "yellow", "retrying": "magenta", "succeeded": "green",
    "failed": "red", "skipped": "dim", "cancelled": "red",
}

ADDRESS_HELP = "Workflow service address (default: TDEV_WORKFLOW_ADDRESS)."

workflows_app = typer.Typer(help="Create, inspect and run workflows.", no_args_is_help=True)
executions_app = typer.Typer(help="Watch, inspect and cancel executions.", no_args_is_help=True)
console = Console()


def _address_option(ctx: typer.Context, address: str) -> None:
    ctx.obj = address or get_common_settings().workflow_address


@workflows_app.callback()
def _workflow_options(
    ctx: typer.Context,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Workflows in the workflow service."""
    _address_option(ctx, address)


@executions_app.callback()
def _execution_options(
    ctx: typer.Context,
    address: Annotated[str, typer.Option("--address", help=ADDRESS_HELP)] = "",
) -> None:
    """Executions in the workflow service."""
    _address_option(ctx, address)


def _call(ctx: typer.Context, work: Callable[[pb2_grpc.WorkflowServiceStub], Awaitable[T]]) -> T:
    """Runs ``work`` against the workflow service; a failed call prints its status and exits 1."""
    return call_service(ctx.obj, pb2_grpc.WorkflowServiceStub, work, on_error=_print_error)


def _print_error(error: grpc.aio.AioRpcError) -> None:
    console.print(f"[red]error[/red] {error.code().name}: {error.details()}")
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ImportError, ValueError):
        return
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for violation in bad.field_violations:
                console.print(f"  [yellow]{violation.field}[/yellow]: {violation.description}")


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


def load_definition(path: Path) -> wf_pb2.Workflow:
    """A definition file through protobuf's JSON mapping."""
    try:
        return json_format.Parse(path.read_text(encoding="utf-8"), wf_pb2.Workflow())
    except (OSError, json_format.ParseError) as error:
        console.print(f"[red]error[/red] {path}: {error}")
        raise typer.Exit(2) from None


def _plain(message: struct_pb2.Struct) -> Any:
    return struct_to_dict(message)


def _workflow_table(workflow: wf_pb2.Workflow) -> Table:
    table = Table("node", "agent", "version", "depends on", title=f"{workflow.name} {workflow.version} "
                  f"({workflow.workflow_id or 'not stored'})")
    for node in workflow.nodes:
        table.add_row(node.id, node.agent_name or node.agent_id, node.agent_version, ", ".join(node.depends_on))
    return table


def _print_plan(workflow: wf_pb2.Workflow) -> None:
    for index, generation in enumerate(workflow.plan.generations):
        console.print(f"  generation {index}: {', '.join(generation.node_ids)}")
    console.print(f"  critical path: {' -> '.join(workflow.plan.critical_path)}")


# -- workflows ----------------------------------------------------------------------------------------------
@workflows_app.command("create")
def create(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Definition file (JSON, protobuf JSON mapping).")],
    validate_only: Annotated[bool, typer.Option("--validate-only", help="Check it; store nothing.")] = False,
) -> None:
    """Validate a definition (every problem at once) and store it; prints the workflow id."""
    definition = load_definition(file)
    answer = _call(ctx, lambda stub: stub.CreateWorkflow(
        pb2.CreateWorkflowRequest(workflow=definition, validate_only=validate_only)))
    console.print(_workflow_table(answer.workflow))
    _print_plan(answer.workflow)
    if answer.workflow.workflow_id:
        console.print(f"workflow_id: [bold]{answer.workflow.workflow_id}[/bold]")


@workflows_app.command("get")
def get(ctx: typer.Context, workflow_id: str) -> None:
    """Show a workflow and its plan."""
    answer = _call(ctx, lambda stub: stub.GetWorkflow(pb2.GetWorkflowRequest(workflow_id=workflow_id)))
    console.print(_workflow_table(answer.workflow))
    _print_plan(answer.workflow)


@workflows_app.command("list")
def list_workflows(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Only names containing this text.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Most workflows shown.")] = 50,
) -> None:
    """List workflows, newest first."""
    answer = _call(ctx, lambda stub: stub.ListWorkflows(pb2.ListWorkflowsRequest(page_size=limit, name_contains=name)))
    table = Table("workflow_id", "name", "version", "nodes")
    for workflow in answer.workflows:
        table.add_row(workflow.workflow_id, workflow.name, workflow.version, str(len(workflow.nodes)))
    console.print(table)


@workflows_app.command("run")
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A definition file (created first) or a workflow id.")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="Workflow input key=value (repeatable).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show live per-node progress until it ends.")] = False,
    failure_policy: Annotated[str, typer.Option("--failure-policy", help="fail-fast or continue.")] = "",
) -> None:
    """Start an execution; with --follow, show live progress and the outputs."""
    values = parse_inputs(inputs or [])
    if failure_policy and failure_policy not in POLICIES:
        raise typer.BadParameter(f"--failure-policy must be one of {', '.join(POLICIES)}")
    path = Path(target)
    definition = load_definition(path) if path.suffix == ".json" or path.exists() else None

    async def work(stub: pb2_grpc.WorkflowServiceStub) -> int:
        workflow_id = target
        if definition is not None:
            created = await stub.CreateWorkflow(pb2.CreateWorkflowRequest(workflow=definition))
            workflow_id = created.workflow.workflow_id
            console.print(f"created workflow [bold]{workflow_id}[/bold]")
        workflow = (await stub.GetWorkflow(pb2.GetWorkflowRequest(workflow_id=workflow_id))).workflow
        inputs_struct = struct_pb2.Struct()
        inputs_struct.update(values)
        started = await stub.StartExecution(pb2.StartExecutionRequest(
            workflow_id=workflow_id, inputs=inputs_struct,
            failure_policy=POLICIES.get(failure_policy, 0)))  # type: ignore[arg-type]
        execution_id = started.execution.execution_id
        console.print(f"execution [bold]{execution_id}[/bold]")
        if not follow:
            return 0
        return await follow_execution(stub, execution_id, [node.id for node in workflow.nodes])

    raise typer.Exit(_call(ctx, work))


# -- executions ---------------------------------------------------------------------------------------------
class Progress:
    """Per-node state folded from events, rendered as a live table."""

    def __init__(self, node_ids: list[str]) -> None:
        self.nodes: dict[str, dict[str, Any]] = {
            node_id: {"state": "pending", "attempt": 0, "ms": None, "note": ""} for node_id in node_ids
        }
        self.last_sequence = 0
        self.end: Event | None = None
        self.started = time.monotonic()

    def apply(self, event: Event) -> None:
        """Folds one event in."""
        self.last_sequence = event.sequence
        if event.type in END_EVENTS:
            self.end = event
            return
        if not event.node_id:
            return
        row = self.nodes.setdefault(event.node_id, {"state": "pending", "attempt": 0, "ms": None, "note": ""})
        kind = Event.Type.Name(event.type).removeprefix("TYPE_NODE_").lower()
        row["state"] = {"started": "running"}.get(kind, kind)
        row["attempt"] = max(row["attempt"], event.attempt)
        if event.duration_ms:
            row["ms"] = event.duration_ms
        if event.type == Event.TYPE_NODE_RETRYING:
            row["note"] = f"{event.error.type}: retry in {event.backoff_seconds:.2f}s"
        elif event.type == Event.TYPE_NODE_FAILED:
            row["note"] = f"{event.error.type}: {event.error.message}"[:80]
        elif event.type in (Event.TYPE_NODE_SKIPPED, Event.TYPE_NODE_CANCELLED):
            row["note"] = event.message[:80]
        else:
            row["note"] = ""

    def render(self) -> Group:
        """The table and a summary line."""
        table = Table("node", "state", "attempt", "ms", "note")
        for node_id, row in self.nodes.items():
            style = NODE_STYLE.get(row["state"], "")
            table.add_row(node_id, Text(row["state"], style=style), str(row["attempt"] or ""),
                          f"{row['ms']:.1f}" if row["ms"] is not None else "", row["note"])
        done = sum(1 for row in self.nodes.values() if row["state"] in ("succeeded", "failed", "skipped", "cancelled"))
        summary = Text(f"{done}/{len(self.nodes)} nodes done, {time.monotonic() - self.started:.1f}s, "
                       f"event {self.last_sequence}")
        return Group(table, summary)


def _events(stub: pb2_grpc.WorkflowServiceStub, execution_id: str, after: int) -> AsyncIterator[Event]:
    """WatchExecution, resumed from the last event when the stream drops (no gap, no duplicate)."""
    return resumable_events(
        lambda last: stub.WatchExecution(pb2.WatchExecutionRequest(execution_id=execution_id, after_sequence=last)),
        after,
    )


async def follow_execution(stub: pb2_grpc.WorkflowServiceStub, execution_id: str, node_ids: list[str]) -> int:
    """Live progress until the end; prints the outputs or the error; returns the exit status."""
    progress = Progress(node_ids)
    with Live(progress.render(), console=console, refresh_per_second=8, transient=False) as live:
        async for event in _events(stub, execution_id, 0):
            progress.apply(event)
            live.update(progress.render())
    end = progress.end
    if end is None:
        return 1
    if end.type == Event.TYPE_EXECUTION_SUCCEEDED:
        if end.output_ref:
            execution = (await stub.GetExecution(pb2.GetExecutionRequest(execution_id=execution_id))).execution
            outputs = _plain(execution.outputs)
        else:
            outputs = _plain(end.output)
        console.print("[green]succeeded[/green] outputs:")
        console.print_json(json.dumps(outputs))
        return 0
    label = "failed" if end.type == Event.TYPE_EXECUTION_FAILED else "cancelled"
    console.print(f"[red]{label}[/red] {end.error.type}: {end.error.message}")
    return 1


@executions_app.command("watch")
def watch(
    ctx: typer.Context,
    execution_id: str,
    after: Annotated[int, typer.Option("--after", help="Only events after this sequence number.")] = 0,
) -> None:
    """Follow an execution live (resumes by itself if the stream drops)."""

    async def work(stub: pb2_grpc.WorkflowServiceStub) -> int:
        execution = (await stub.GetExecution(pb2.GetExecutionRequest(execution_id=execution_id))).execution
        if after:
            async for event in _events(stub, execution_id, after):
                node = f" {event.node_id}" if event.node_id else ""
                console.print(f"{event.sequence:>6} {Event.Type.Name(event.type).removeprefix('TYPE_')}{node} "
                              f"{event.message}")
            return 0
        return await follow_execution(stub, execution_id, [node.node_id for node in execution.nodes])

    raise typer.Exit(_call(ctx, work))


@executions_app.command("get")
def get_execution(ctx: typer.Context, execution_id: str) -> None:
    """Show an execution with per-node state and its outputs."""
    answer = _call(ctx, lambda stub: stub.GetExecution(pb2.GetExecutionRequest(execution_id=execution_id)))
    execution = answer.execution
    state = wf_pb2.Execution.State.Name(execution.state).removeprefix("STATE_").lower()
    console.print(f"{execution.execution_id} ({execution.workflow_id}): [bold]{state}[/bold]")
    table = Table("node", "state", "attempt", "ms")
    for node in execution.nodes:
        table.add_row(node.node_id, wf_pb2.NodeRun.State.Name(node.state).removeprefix("STATE_").lower(),
                      str(node.attempt), f"{node.duration_ms:.1f}")
    console.print(table)
    if execution.HasField("outputs"):
        console.print_json(json.dumps(_plain(execution.outputs)))
    if execution.error.type:
        console.print(f"[red]{execution.error.type}[/red]: {execution.error.message}")


@executions_app.command("list")
def list_executions(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Option("--workflow", help="Only executions of this workflow.")] = "",
    state: Annotated[str, typer.Option("--state", help=f"Only this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Most executions shown.")] = 50,
) -> None:
    """List executions, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"--state must be one of {', '.join(STATES)}")
    answer = _call(ctx, lambda stub: stub.ListExecutions(pb2.ListExecutionsRequest(
        workflow_id=workflow_id, state=STATES.get(state, 0), page_size=limit)))  # type: ignore[arg-type]
    table = Table("execution_id", "workflow_id", "state", "events")
    for execution in answer.executions:
        table.add_row(execution.execution_id, execution.workflow_id,
                      wf_pb2.Execution.State.Name(execution.state).removeprefix("STATE_").lower(),
                      str(execution.last_sequence))
    console.print(table)


@executions_app.command("cancel")
def cancel(
    ctx: typer.Context,
    execution_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept on the execution.")] = "",
) -> None:
    """Cancel a running execution (its running sandboxes stop within a second)."""
    answer = _call(ctx, lambda stub: stub.CancelExecution(
        pb2.CancelExecutionRequest(execution_id=execution_id, reason=reason)))
    state = wf_pb2.Execution.State.Name(answer.execution.state).removeprefix("STATE_").lower()
    console.print(f"{execution_id}: {state}")
