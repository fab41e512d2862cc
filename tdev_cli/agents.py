"""``tdev agents``: register, list, show, search, label and trace agents in the registry (typed client)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.markup import escape
from rich.table import Table

from tdev_cli import session
from tdev_cli.agent_files import NAME_HELP, NEW_VERSION_OF_HELP, RegistrationRefused, registration_name
from tdev_cli.session import JsonOption, emit, out
from tdev_client import Mesh

STATES = {"pending": "STATE_PENDING", "running": "STATE_RUNNING", "succeeded": "STATE_SUCCEEDED",
          "failed": "STATE_FAILED"}
ORDERS = {"updated": "ORDER_BY_UNSPECIFIED", "quality": "ORDER_BY_QUALITY", "executions": "ORDER_BY_EXECUTIONS",
          "recent": "ORDER_BY_RECENT"}
PENDING = ("STATE_PENDING", "STATE_RUNNING")

agents_app = typer.Typer(help="Register, list, show, search and label agents.", no_args_is_help=True)


@agents_app.callback()
def _options(
    ctx: typer.Context,
    address: Annotated[str, typer.Option("--address", help="Registry address (else the profile's, else "
                                         "TDEV_REGISTRY_ADDRESS, else 127.0.0.1:50051).")] = "",
) -> None:
    """Agents in the registry."""
    ctx.obj = address


def _call(ctx: typer.Context, work: Any) -> Any:
    """Runs ``work(mesh.registry)``; a failed call prints its status and exits 1."""
    return session.call(lambda mesh: work(mesh.registry), registry=ctx.obj or "")


def _state(analysis: dict[str, Any]) -> str:
    name = str(analysis.get("state", "STATE_UNSPECIFIED")).removeprefix("STATE_").lower()
    colour = {"succeeded": "green", "failed": "red"}.get(name, "yellow")
    return f"[{colour}]{name}[/{colour}]"


def _quality(analysis: dict[str, Any]) -> str:
    return f"{analysis.get('quality_score', 0.0):.2f}" if analysis.get("state") == "STATE_SUCCEEDED" else "-"


def _when(timestamp: str | None) -> str:
    """``2026-01-02T03:04:05.678Z`` -> ``2026-01-02 03:04:05``."""
    return (timestamp or "")[:19].replace("T", " ") or "-"


def _ref(ref: dict[str, Any]) -> str:
    return f"{ref.get('agent_id', '')}@{ref.get('version', '')}"


def _agents_table(agents: list[dict[str, Any]], *, title: str = "") -> Table:
    table = Table("name", "agent_id", "version", "analysis", "quality", "runs", "success", title=title or None)
    for agent in agents:
        metrics, analysis = agent.get("metrics", {}), agent.get("analysis", {})
        runs = int(metrics.get("execution_count", 0))
        table.add_row(agent["name"], agent["agent_id"], agent["version"], _state(analysis), _quality(analysis),
                      str(runs), f"{metrics.get('success_rate', 0.0):.0%}" if runs else "-")
    return table


def _show(agent: dict[str, Any], *, code: bool = False) -> None:
    out.print(f"[bold]{escape(agent['name'])}[/bold] {agent['version']}  ({agent['agent_id']}, class "
              f"{agent['class_name']}, {'async' if agent.get('execute_is_async') else 'sync'} execute, "
              f"{agent.get('code_size_bytes', 0)} bytes)")
    if agent.get("description"):
        out.print(f"  {escape(agent['description'])}")
    if agent.get("parents"):
        out.print("  parents: " + ", ".join(_ref(p) for p in agent["parents"]))
    if agent.get("labels"):
        out.print("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(agent["labels"].items())), markup=False)
    analysis = agent.get("analysis", {})
    out.print(f"  analysis: {_state(analysis)}  quality {_quality(analysis)}  "
              f"models {escape(', '.join(analysis.get('models_used', [])) or '-')}")
    if analysis.get("error"):
        out.print(f"  [red]{escape(analysis['error'])}[/red]")
    summary = (analysis.get("capabilities") or {}).get("summary")
    if summary:
        out.print(f"  summary: {summary}", markup=False)
    metrics = agent.get("metrics", {})
    out.print(f"  runs {metrics.get('execution_count', 0)} (ok {metrics.get('success_count', 0)}, failed "
              f"{metrics.get('failure_count', 0)}), avg {metrics.get('average_duration_ms', 0.0):.1f} ms, p95 "
              f"{metrics.get('p95_duration_ms', 0.0):.1f} ms, tokens {metrics.get('total_tokens', 0)}, cost "
              f"${metrics.get('total_cost_usd', 0.0):.4f}")
    declared = agent.get("declared_capabilities") or {}
    if declared:
        out.print("  declared capabilities: " + json.dumps(declared, sort_keys=True)[:400], markup=False)
    if code and agent.get("code"):
        out.print(agent["code"], markup=False, highlight=False)


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
    as_json: JsonOption = False,
) -> None:
    """Validate, load in the sandbox and store an agent (the same code again returns the same version).

    The name defaults to the agent's own (see --name), never the file's stem: files called agent.py are not
    one agent. A name already taken by an agent of another class is refused (exit 1, FAILED_PRECONDITION)
    unless --new-version-of names it.
    """
    if name and new_version_of:
        session.fail("--name and --new-version-of exclude each other")
    code = session.read_text(file)
    parents = []
    for text in parent or []:
        agent_id, _, parent_version = text.partition("@")
        parents.append({"agent_id": agent_id, "version": parent_version})
    labels = dict(item.partition("=")[::2] for item in label or [])

    async def work(mesh: Mesh) -> tuple[dict[str, Any], bool]:
        registry = mesh.registry
        target = await registration_name(registry, file, code, name=name, new_version_of=new_version_of)
        answer = await registry.register_agent(target, code, description=description, version=version,
                                               parents=parents, labels=labels)
        agent: dict[str, Any] = dict(answer["agent"])
        verb = "registered" if answer["created"] else "already registered as"
        session.say(as_json, f"{verb} {escape(agent['name'])} {agent['version']} ({agent['agent_id']})")
        deadline = time.monotonic() + timeout
        while wait and agent.get("analysis", {}).get("state") in PENDING and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            agent = dict(await registry.get_agent(agent["agent_id"], version=agent["version"], exclude_code=True))
        return agent, bool(answer["created"])

    try:
        agent, created = session.call(work, registry=ctx.obj or "")
    except RegistrationRefused as refused:
        session.fail(f"FAILED_PRECONDITION: {refused}", 1)
    if as_json:
        emit({"agent": agent, "created": created})
    elif wait:
        _show(agent)
    if wait and agent.get("analysis", {}).get("state") != "STATE_SUCCEEDED":
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
    as_json: JsonOption = False,
) -> None:
    """List agents (latest version of each)."""
    if (state and state not in STATES) or order not in ORDERS:
        session.fail(f"--state is one of {', '.join(STATES)}; --order one of {', '.join(ORDERS)}")

    async def work(registry: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while len(found) < limit:
            page = await registry.list_agents(
                page_size=min(limit, 500), page_token=token, name_contains=name, capability=capability,
                analysis_state=STATES.get(state), min_quality_score=min_quality, order_by=ORDERS[order])
            found += page.items
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    agents = _call(ctx, work)
    if as_json:
        emit({"agents": agents})
    else:
        out.print(_agents_table(agents))


@agents_app.command()
def show(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    version: Annotated[str, typer.Option("--version", help="A version (default: the latest).")] = "",
    code: Annotated[bool, typer.Option("--code", help="Print the source too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show one agent version: analysis, metrics, capabilities."""
    found = _call(ctx, lambda registry: registry.get_agent(agent, version=version, exclude_code=not code))
    if as_json:
        emit(found)
    else:
        _show(found, code=code)


@agents_app.command()
def label(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    version: Annotated[str, typer.Option("--version", help="The exact version to change (required).")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Label to set as KEY=VALUE (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Label key to remove (repeatable).")] = None,
    request_id: Annotated[str, typer.Option("--request-id", help="Idempotency key (default: a fresh one).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Set and remove labels of one version (its code and version never change)."""
    pairs = [item.partition("=") for item in set_ or []]
    if not version or any(not sep for _, sep, _ in pairs):
        session.fail("--version is required and --set takes KEY=VALUE")

    async def work(registry: Any) -> dict[str, Any]:
        agent_id = agent
        if not agent.startswith("agent_"):
            agent_id = (await registry.get_agent(agent, version=version, exclude_code=True))["agent_id"]
        changed: dict[str, Any] = await registry.update_agent_labels(
            agent_id, version, set_labels={key: value for key, _, value in pairs}, remove_labels=remove or [],
            request_id=request_id or f"cli-{uuid.uuid4().hex}")
        return changed

    changed = _call(ctx, work)
    if as_json:
        emit(changed)
        return
    labels = ", ".join(f"{k}={v}" for k, v in sorted(changed.get("labels", {}).items())) or "(none)"
    out.print(f"labels of {changed['name']} {changed['version']} ({changed['agent_id']}): {labels}", markup=False)


@agents_app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What the agent should do, in plain language.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Most results.")] = 10,
    min_quality: Annotated[float, typer.Option("--min-quality", help="Only quality scores at least this.")] = 0.0,
    as_json: JsonOption = False,
) -> None:
    """Find agents by what they do; each result says why it matched."""
    results = _call(ctx, lambda registry: registry.search_agents(query, top_k=top_k, min_quality_score=min_quality))
    if as_json:
        emit({"results": results})
        return
    table = Table("score", "name", "version", "agent_id", "why",
                  title=f"matcher: {results[0]['matcher']}" if results else None)
    for result in results:
        found = result["agent"]
        table.add_row(f"{result['score']:.3f}", found["name"], found["version"], found["agent_id"],
                      escape("; ".join(result.get("reasons", []))))
    out.print(table if results else "no agent matches")


@agents_app.command()
def versions(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    as_json: JsonOption = False,
) -> None:
    """List every version of one agent, newest first."""

    async def work(registry: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await registry.list_agent_versions(agent, page_size=500, page_token=token)
            found += page.items
            token = page.next_page_token
            if not token:
                return found

    found = _call(ctx, work)
    if as_json:
        emit({"versions": found})
        return
    table = Table("version", "registered", "analysis", "quality", "runs", "parents", "code_hash")
    for item in found:
        analysis = item.get("analysis", {})
        table.add_row(item["version"], _when(item.get("create_time")), _state(analysis), _quality(analysis),
                      str(item.get("metrics", {}).get("execution_count", 0)),
                      ", ".join(_ref(p) for p in item.get("parents", [])) or "-", item.get("code_hash", "")[:12])
    out.print(table)


@agents_app.command()
def lineage(
    ctx: typer.Context,
    agent_id: Annotated[str, typer.Argument(help="Agent id.")],
    version: Annotated[str, typer.Option("--version", help="A version (default: the latest).")] = "",
    depth: Annotated[int, typer.Option("--depth", help="Generations to follow.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Show the ancestry of one version."""
    answer = _call(ctx, lambda registry: registry.get_agent_lineage(agent_id, version=version, max_depth=depth))
    if as_json:
        emit(answer)
        return
    names = {(a["agent_id"], a["version"]): a["name"] for a in answer.get("agents", [])}

    def label(ref: dict[str, Any]) -> str:
        agent, version = ref.get("agent_id", ""), ref.get("version", "")
        return f"{names.get((agent, version), '?')} {version} ({agent})"

    out.print(f"root: {label(answer.get('root', {}))}", markup=False)
    for edge in answer.get("edges", []):
        out.print(f"  {label(edge['child'])} <- {label(edge['parent'])}", markup=False)


async def _agent_id(registry: Any, agent: str) -> str:
    if agent.startswith("agent_"):
        return agent
    return str((await registry.get_agent(agent, exclude_code=True))["agent_id"])


cases_app = typer.Typer(help="Production cases of an agent (captured by workflows that opted in): list, label "
                             "with the expected output, delete.", no_args_is_help=True)
agents_app.add_typer(cases_app, name="cases")
CASE_FILTERS = {"all": None, "failing": "FILTER_FAILING", "succeeding": "FILTER_SUCCEEDING",
                "labelled": "FILTER_LABELLED", "unlabelled": "FILTER_UNLABELLED"}


def _json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@FILE``; anything else exits 2 naming what is wrong."""
    if text.startswith("@"):
        text = session.read_text(Path(text[1:]))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        session.fail(f"{what} is not JSON: {error.msg} at line {error.lineno} column {error.colno}")
    if not isinstance(value, dict):
        session.fail(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


@cases_app.command("list")
def list_cases(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    version: Annotated[str, typer.Option("--version", help="Only this exact version.")] = "",
    which: Annotated[str, typer.Option("--filter", help="all, failing, succeeding, labelled or unlabelled.")] = "all",
    limit: Annotated[int, typer.Option("--limit", help="Most cases shown (newest first).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List an agent's production cases, newest first."""
    if which not in CASE_FILTERS:
        session.fail(f"--filter must be one of {', '.join(CASE_FILTERS)}, not {which!r}")

    async def work(registry: Any) -> list[dict[str, Any]]:
        agent_id = await _agent_id(registry, agent)
        found: list[dict[str, Any]] = []
        async for case in registry.iter_agent_cases(agent_id, version=version, filter=CASE_FILTERS[which]):
            found.append(case)
            if len(found) >= limit:
                break
        return found

    found = _call(ctx, work)
    if as_json:
        emit({"cases": found})
        return
    table = Table("case_id", "version", "captured", "outcome", "inputs", "expected")
    for case in found:
        outcome = "ok" if case["success"] else f"{case['error_type']}: {case['error_message']}"[:60]
        table.add_row(case["case_id"], case["version"], _when(case.get("create_time")), outcome,
                      json.dumps(case.get("inputs", {}), sort_keys=True)[:60],
                      json.dumps(case["expected"], sort_keys=True)[:40] if case.get("labelled") else "-")
    out.print(table)


@cases_app.command("label")
def label_case(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument(help="The case (case_...).")],
    expected: Annotated[str, typer.Argument(help="The expected output: a JSON object, or @FILE holding one.")],
    as_json: JsonOption = False,
) -> None:
    """Label a case with the output the agent should have returned (labelling again replaces it)."""
    value = _json_object(expected, "EXPECTED")
    labelled = _call(ctx, lambda registry: registry.label_agent_case(case_id, value))
    if as_json:
        emit(labelled)
        return
    out.print(f"labelled {labelled['case_id']} of {labelled['agent_id']} {labelled['version']}", markup=False)


@cases_app.command("delete")
def delete_case(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument(help="The case (case_...).")],
    as_json: JsonOption = False,
) -> None:
    """Delete a case for good (inputs that must not be kept)."""
    _call(ctx, lambda registry: registry.delete_agent_case(case_id))
    if as_json:
        emit({"deleted": case_id})
        return
    out.print(f"deleted {case_id}", markup=False)


alias_app = typer.Typer(help="Aliases of an agent (stable, canary, any name) that workflow nodes run by.",
                        no_args_is_help=True)
agents_app.add_typer(alias_app, name="alias")
rollout_app = typer.Typer(help="A canary rollout: its numbers and what happened.", no_args_is_help=True)
agents_app.add_typer(rollout_app, name="rollout")


def _alias_view(ctx: typer.Context, agent: str) -> dict[str, Any]:
    """ListAgentAliases for an agent given by name or id."""

    async def work(registry: Any) -> dict[str, Any]:
        view: dict[str, Any] = await registry.list_agent_aliases(await _agent_id(registry, agent))
        return view

    return cast(dict[str, Any], _call(ctx, work))


@alias_app.command("set")
def set_alias(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    alias: Annotated[str, typer.Argument(help="Alias name: stable, canary or any name.")],
    version: Annotated[str, typer.Argument(help="The exact version it points at.")],
    traffic: Annotated[float, typer.Option("--traffic", help="canary: share of stable's executions, (0, 1].")] = 0.0,
    min_sample: Annotated[int, typer.Option("--min-sample", help="canary: executions of each side before "
                                            "deciding (0: 20).")] = 0,
    max_drop: Annotated[float, typer.Option("--max-drop", help="canary: largest success-rate drop still promoted "
                                            "(0: 0.05).")] = 0.0,
    max_latency_ratio: Annotated[float, typer.Option("--max-latency-ratio", help="canary: largest median "
                                                     "duration ratio still promoted (0: 1.5).")] = 0.0,
    min_increase_ms: Annotated[float, typer.Option("--min-latency-increase-ms", help="canary: a slower median "
                                                   "counts only this many ms above stable's (0: 5).")] = 0.0,
    as_json: JsonOption = False,
) -> None:
    """Point an alias at a version; a canary takes --traffic of stable's executions until it is judged."""
    rollout = None
    if alias == "canary":
        rollout = {"min_sample": min_sample, "max_success_rate_drop": max_drop, "max_latency_ratio": max_latency_ratio,
                   "min_latency_increase_ms": min_increase_ms}

    async def work(registry: Any) -> dict[str, Any]:
        stored: dict[str, Any] = await registry.set_agent_alias(
            await _agent_id(registry, agent), alias, version, traffic_fraction=traffic, rollout=rollout)
        return stored

    stored = _call(ctx, work)
    if as_json:
        emit(stored)
        return
    share = f" with {stored['traffic_fraction']:.0%} of stable's executions" if alias == "canary" else ""
    out.print(f"{stored['agent_id']}: {stored['alias']} -> {stored['version']}{share}", markup=False)


def _print_events(events: list[dict[str, Any]]) -> None:
    table = Table("time", "alias", "event", "version", "why")
    for event in events:
        table.add_row(_when(event.get("time")), event["alias"], event["kind"].removeprefix("KIND_").lower(),
                      event["version"], event.get("message", ""))
    out.print(table)


@alias_app.command("list")
def list_aliases(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    as_json: JsonOption = False,
) -> None:
    """An agent's aliases and their latest events."""

    view = _alias_view(ctx, agent)
    if as_json:
        emit(view)
        return
    table = Table("alias", "version", "traffic", "set")
    for item in view["aliases"]:
        table.add_row(item["alias"], item["version"],
                      f"{item['traffic_fraction']:.0%}" if item["alias"] == "canary" else "-",
                      _when(item.get("update_time")))
    out.print(table)
    _print_events(view["events"][:10])


@alias_app.command("delete")
def delete_alias(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    alias: Annotated[str, typer.Argument(help="The alias (deleting canary ends a rollout by hand).")],
    as_json: JsonOption = False,
) -> None:
    """Remove an alias."""

    async def work(registry: Any) -> str:
        agent_id = await _agent_id(registry, agent)
        await registry.delete_agent_alias(agent_id, alias)
        return agent_id

    agent_id = _call(ctx, work)
    if as_json:
        emit({"deleted": {"agent_id": agent_id, "alias": alias}})
        return
    out.print(f"{agent_id}: removed {alias}", markup=False)


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    as_json: JsonOption = False,
) -> None:
    """Where a canary rollout stands: both sides' numbers since it started, and what was decided."""

    view = _alias_view(ctx, agent)
    if as_json:
        emit({"rollout": view.get("rollout"), "events": view["events"]})
        return
    rollout = view.get("rollout")
    if rollout is None:
        out.print("no rollout running (no canary alias)", markup=False)
    else:
        table = Table("side", "version", "executions", "success", "median ms")
        for side in ("stable", "canary"):
            stats = rollout[side]
            table.add_row(side, stats["version"], str(stats["executions"]), f"{stats['success_rate']:.1%}",
                          f"{stats['median_duration_ms']:.1f}")
        out.print(table)
    _print_events([e for e in view["events"] if e["alias"] == "canary"][:10])
