"""``tdev agents``: register, list, show, search, label and trace agents in the registry (over gRPC)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from google.protobuf import json_format
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tdev.registry.v1 import agent_pb2
from tdev.registry.v1 import registry_service_pb2 as pb2
from tdev.registry.v1 import registry_service_pb2_grpc as pb2_grpc

from tdev_cli.agent_files import NAME_HELP, NEW_VERSION_OF_HELP, RegistrationRefused, registration_name
from tdev_cli.calls import call_service
from tdev_common.config import get_common_settings

T = TypeVar("T")
AGENT_ID = re.compile(r"^agent_[0-9a-f]{12}$")
STATES = {"pending": agent_pb2.AgentAnalysis.STATE_PENDING, "running": agent_pb2.AgentAnalysis.STATE_RUNNING,
          "succeeded": agent_pb2.AgentAnalysis.STATE_SUCCEEDED, "failed": agent_pb2.AgentAnalysis.STATE_FAILED}
ORDERS = {"updated": pb2.ListAgentsRequest.ORDER_BY_UNSPECIFIED, "quality": pb2.ListAgentsRequest.ORDER_BY_QUALITY,
          "executions": pb2.ListAgentsRequest.ORDER_BY_EXECUTIONS, "recent": pb2.ListAgentsRequest.ORDER_BY_RECENT}

agents_app = typer.Typer(help="Register, list, show, search and label agents.", no_args_is_help=True)
console = Console()


@agents_app.callback()
def _options(
    ctx: typer.Context,
    address: Annotated[str, typer.Option("--address", help="Registry address (default: TDEV_REGISTRY_ADDRESS).")] = "",
) -> None:
    """Agents in the registry."""
    ctx.obj = address or get_common_settings().registry_address


def _call(ctx: typer.Context, work: Callable[[pb2_grpc.RegistryServiceStub], Awaitable[T]]) -> T:
    """Runs ``work`` against the registry; a failed call prints its status and exits 1."""
    return call_service(ctx.obj, pb2_grpc.RegistryServiceStub, work)


def _selector(agent: str) -> dict[str, str]:
    return {"agent_id": agent} if AGENT_ID.match(agent) else {"name": agent}


def _state(analysis: agent_pb2.AgentAnalysis) -> str:
    name = agent_pb2.AgentAnalysis.State.Name(analysis.state).removeprefix("STATE_").lower()
    colour = {"succeeded": "green", "failed": "red"}.get(name, "yellow")
    return f"[{colour}]{name}[/{colour}]"


def _quality(analysis: agent_pb2.AgentAnalysis) -> str:
    return f"{analysis.quality_score:.2f}" if analysis.state == agent_pb2.AgentAnalysis.STATE_SUCCEEDED else "-"


def _agents_table(agents: list[agent_pb2.Agent], *, title: str = "") -> Table:
    table = Table("name", "agent_id", "version", "analysis", "quality", "runs", "success", title=title or None)
    for agent in agents:
        metrics = agent.metrics
        table.add_row(agent.name, agent.agent_id, agent.version, _state(agent.analysis), _quality(agent.analysis),
                      str(metrics.execution_count),
                      f"{metrics.success_rate:.0%}" if metrics.execution_count else "-")
    return table


def _show(agent: agent_pb2.Agent, *, code: bool = False) -> None:
    console.print(f"[bold]{agent.name}[/bold] {agent.version}  ({agent.agent_id}, class {agent.class_name}, "
                  f"{'async' if agent.execute_is_async else 'sync'} execute, {agent.code_size_bytes} bytes)")
    if agent.description:
        console.print(f"  {agent.description}")
    if agent.parents:
        console.print("  parents: " + ", ".join(f"{p.agent_id}@{p.version}" for p in agent.parents))
    if agent.labels:
        console.print("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(agent.labels.items())))
    analysis = agent.analysis
    console.print(f"  analysis: {_state(analysis)}  quality {_quality(analysis)}  "
                  f"models {', '.join(analysis.models_used) or '-'}")
    if analysis.error:
        console.print(f"  [red]{analysis.error}[/red]")
    summary = json_format.MessageToDict(analysis.capabilities).get("summary")
    if summary:
        console.print(f"  summary: {summary}")
    metrics = agent.metrics
    console.print(f"  runs {metrics.execution_count} (ok {metrics.success_count}, failed {metrics.failure_count}), "
                  f"avg {metrics.average_duration_ms:.1f} ms, p95 {metrics.p95_duration_ms:.1f} ms, "
                  f"tokens {metrics.total_tokens}, cost ${metrics.total_cost_usd:.4f}")
    declared = json_format.MessageToDict(agent.declared_capabilities)
    if declared:
        console.print("  declared capabilities: " + json.dumps(declared, sort_keys=True)[:400])
    if code and agent.code:
        console.print(agent.code, markup=False, highlight=False)


@agents_app.command()
def register(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Python file of the agent.")],
    name: Annotated[str, typer.Option("--name", help=NAME_HELP)] = "",
    new_version_of: Annotated[str, typer.Option("--new-version-of", help=NEW_VERSION_OF_HELP)] = "",
    description: Annotated[str, typer.Option("--description", "-d", help="What the agent is for.")] = "",
    version: Annotated[str, typer.Option("--version", help="Explicit semver (default: next minor version).")] = "",
    parent: Annotated[list[str] | None, typer.Option("--parent", help="Parent AGENT_ID@VERSION (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Label as KEY=VALUE (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the analysis to finish and show it.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits at most.")] = 60.0,
) -> None:
    """Validate, load in the sandbox and store an agent (the same code again returns the same version).

    The name defaults to the agent's own (see --name), never the file's stem: files called agent.py are not
    one agent. A name already taken by an agent of another class is refused (exit 1, FAILED_PRECONDITION)
    unless --new-version-of names it.
    """
    if name and new_version_of:
        console.print("[red]error[/red] --name and --new-version-of exclude each other")
        raise typer.Exit(2)
    code = file.read_text()
    parents = []
    for text in parent or []:
        agent_id, _, parent_version = text.partition("@")
        parents.append(agent_pb2.AgentVersionRef(agent_id=agent_id, version=parent_version))
    labels = dict(item.partition("=")[::2] for item in label or [])

    async def work(stub: pb2_grpc.RegistryServiceStub) -> agent_pb2.Agent:
        target = await registration_name(stub, file, code, name=name, new_version_of=new_version_of)
        answer = await stub.RegisterAgent(pb2.RegisterAgentRequest(
            name=target, code=code, description=description, version=version, parents=parents, labels=labels))
        verb = "registered" if answer.created else "already registered as"
        console.print(f"{verb} {answer.agent.name} {answer.agent.version} ({answer.agent.agent_id})")
        agent = answer.agent
        deadline = time.monotonic() + timeout
        pending = (agent_pb2.AgentAnalysis.STATE_PENDING, agent_pb2.AgentAnalysis.STATE_RUNNING)
        while wait and agent.analysis.state in pending and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            agent = (await stub.GetAgent(pb2.GetAgentRequest(
                agent_id=agent.agent_id, version=agent.version, exclude_code=True))).agent
        return agent

    try:
        agent = _call(ctx, work)
    except RegistrationRefused as refused:
        console.print(f"[red]error[/red] FAILED_PRECONDITION: {escape(str(refused))}")
        raise typer.Exit(1) from None
    if wait:
        _show(agent)
        if agent.analysis.state != agent_pb2.AgentAnalysis.STATE_SUCCEEDED:
            raise typer.Exit(1)


@agents_app.command("list")
def list_agents(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Only names containing this text.")] = "",
    capability: Annotated[str, typer.Option("--capability", help="Only capabilities mentioning this word.")] = "",
    state: Annotated[str, typer.Option("--state", help="Only this analysis state: " + ", ".join(STATES))] = "",
    min_quality: Annotated[float, typer.Option("--min-quality", help="Only quality scores at least this.")] = 0.0,
    order: Annotated[str, typer.Option("--order", help="updated, quality, executions or recent.")] = "updated",
    limit: Annotated[int, typer.Option("--limit", help="Most agents to show.")] = 50,
) -> None:
    """List agents (latest version of each)."""
    if (state and state not in STATES) or order not in ORDERS:
        console.print(f"[red]error[/red] --state is one of {', '.join(STATES)}; --order one of {', '.join(ORDERS)}")
        raise typer.Exit(2)

    async def work(stub: pb2_grpc.RegistryServiceStub) -> list[agent_pb2.Agent]:
        request = pb2.ListAgentsRequest(
            page_size=min(limit, 500), name_contains=name, capability=capability,
            analysis_state=STATES.get(state, agent_pb2.AgentAnalysis.STATE_UNSPECIFIED),
            min_quality_score=min_quality, order_by=ORDERS[order], exclude_code=True)
        found: list[agent_pb2.Agent] = []
        while len(found) < limit:
            page = await stub.ListAgents(request)
            found += page.agents
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        return found[:limit]

    console.print(_agents_table(_call(ctx, work)))


@agents_app.command()
def show(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    version: Annotated[str, typer.Option("--version", help="A version (default: the latest).")] = "",
    code: Annotated[bool, typer.Option("--code", help="Print the source too.")] = False,
) -> None:
    """Show one agent version: analysis, metrics, capabilities."""

    async def work(stub: pb2_grpc.RegistryServiceStub) -> agent_pb2.Agent:
        answer = await stub.GetAgent(pb2.GetAgentRequest(version=version, exclude_code=not code, **_selector(agent)))
        return answer.agent

    _show(_call(ctx, work), code=code)


@agents_app.command()
def label(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    version: Annotated[str, typer.Option("--version", help="The exact version to change (required).")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Label to set as KEY=VALUE (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Label key to remove (repeatable).")] = None,
    request_id: Annotated[str, typer.Option("--request-id", help="Idempotency key (default: a fresh one).")] = "",
) -> None:
    """Set and remove labels of one version (its code and version never change)."""
    pairs = [item.partition("=") for item in set_ or []]
    if not version or any(not sep for _, sep, _ in pairs):
        console.print("[red]error[/red] --version is required and --set takes KEY=VALUE")
        raise typer.Exit(2)

    async def work(stub: pb2_grpc.RegistryServiceStub) -> agent_pb2.Agent:
        agent_id = agent
        if not AGENT_ID.match(agent):
            agent_id = (await stub.GetAgent(pb2.GetAgentRequest(name=agent, version=version,
                                                                exclude_code=True))).agent.agent_id
        answer = await stub.UpdateAgentLabels(pb2.UpdateAgentLabelsRequest(
            agent_id=agent_id, version=version, set_labels={key: value for key, _, value in pairs},
            remove_labels=remove or [], request_id=request_id or f"cli-{uuid.uuid4().hex}"))
        return answer.agent

    changed = _call(ctx, work)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(changed.labels.items())) or "(none)"
    console.print(f"labels of {changed.name} {changed.version} ({changed.agent_id}): {labels}", markup=False)


@agents_app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What the agent should do, in plain language.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Most results.")] = 10,
    min_quality: Annotated[float, typer.Option("--min-quality", help="Only quality scores at least this.")] = 0.0,
) -> None:
    """Find agents by what they do; each result says why it matched."""

    async def work(stub: pb2_grpc.RegistryServiceStub) -> pb2.SearchAgentsResponse:
        answer: pb2.SearchAgentsResponse = await stub.SearchAgents(
            pb2.SearchAgentsRequest(query=query, top_k=top_k, min_quality_score=min_quality))
        return answer

    answer = _call(ctx, work)
    table = Table("score", "name", "version", "agent_id", "why", title=f"matcher: {answer.results[0].matcher}"
                  if answer.results else None)
    for result in answer.results:
        table.add_row(f"{result.score:.3f}", result.agent.name, result.agent.version, result.agent.agent_id,
                      "; ".join(result.reasons))
    console.print(table if answer.results else "no agent matches")


@agents_app.command()
def versions(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
) -> None:
    """List every version of one agent, newest first."""

    async def work(stub: pb2_grpc.RegistryServiceStub) -> list[agent_pb2.Agent]:
        request = pb2.ListAgentVersionsRequest(page_size=500, **_selector(agent))
        found: list[agent_pb2.Agent] = []
        while True:
            page = await stub.ListAgentVersions(request)
            found += page.versions
            if not page.next_page_token:
                return found
            request.page_token = page.next_page_token

    found = _call(ctx, work)
    table = Table("version", "registered", "analysis", "quality", "runs", "parents", "code_hash")
    for item in found:
        table.add_row(item.version, item.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), _state(item.analysis),
                      _quality(item.analysis), str(item.metrics.execution_count),
                      ", ".join(f"{p.agent_id}@{p.version}" for p in item.parents) or "-", item.code_hash[:12])
    console.print(table)


@agents_app.command()
def lineage(
    ctx: typer.Context,
    agent_id: Annotated[str, typer.Argument(help="Agent id.")],
    version: Annotated[str, typer.Option("--version", help="A version (default: the latest).")] = "",
    depth: Annotated[int, typer.Option("--depth", help="Generations to follow.")] = 10,
) -> None:
    """Show the ancestry of one version."""

    async def work(stub: pb2_grpc.RegistryServiceStub) -> pb2.GetAgentLineageResponse:
        answer: pb2.GetAgentLineageResponse = await stub.GetAgentLineage(
            pb2.GetAgentLineageRequest(agent_id=agent_id, version=version, max_depth=depth))
        return answer

    answer = _call(ctx, work)
    names = {(a.agent_id, a.version): a.name for a in answer.agents}

    def label(ref: Any) -> str:
        return f"{names.get((ref.agent_id, ref.version), '?')} {ref.version} ({ref.agent_id})"

    console.print(f"root: {label(answer.root)}")
    for edge in answer.edges:
        console.print(f"  {label(edge.child)} <- {label(edge.parent)}")
