"""``tdev evolution policy``: when the evolution service evolves an agent on its own from production cases."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tdev_cli import session
from tdev_cli.session import JsonOption, emit, out

ADDRESS_HELP = "Evolution service address (else the profile's, else TDEV_EVOLUTION_ADDRESS, else 127.0.0.1:50054)."
policy_app = typer.Typer(help="Evolution policies: triggers, daily budgets and the canary hand-off of automatic "
                              "runs.", no_args_is_help=True)


def _run(address: str, work: Any) -> Any:
    return session.call(lambda mesh: work(mesh.evolution), evolution=address)


def _print(policy: dict[str, Any]) -> None:
    status = policy.get("status", {})
    trigger = policy.get("trigger", {})
    table = Table(show_header=False)
    table.add_row("agent", policy["agent_id"] + ("  (disabled)" if policy.get("disabled") else ""))
    table.add_row("phase", str(status.get("phase", "")).removeprefix("PHASE_").lower())
    table.add_row("now", status.get("message", ""))
    triggers = [f"failure rate > {trigger['failure_rate_threshold']:.0%}" if trigger.get("failure_rate_threshold")
                else "", f"{trigger['labelled_failures']} labelled failures" if trigger.get("labelled_failures")
                else "", f"every {trigger['schedule_interval_seconds']:g} s"
                if trigger.get("schedule_interval_seconds") else ""]
    table.add_row("triggers", ", ".join(part for part in triggers if part))
    table.add_row("runs started", str(status.get("runs_started", 0)))
    for key, label in (("active_run_id", "run"), ("canary_version", "canary"),
                       ("last_trigger_reason", "last trigger"), ("last_outcome", "last outcome")):
        if status.get(key):
            table.add_row(label, str(status[key]))
    table.add_row("used today", f"{status.get('evaluations_used_today', 0)} evaluations, "
                                f"${status.get('cost_used_today_usd', 0.0):.4f}")
    out.print(table)


@policy_app.command("set")
def set_policy(
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    failure_rate: Annotated[float, typer.Option("--failure-rate", help="Trigger when the share of failed "
                                                "executions over the window is above this (0: off).")] = 0.0,
    window: Annotated[float, typer.Option(help="Failure-rate window in seconds (0: 3600).")] = 0.0,
    min_executions: Annotated[int, typer.Option("--min-executions", help="Executions in the window before the "
                                                "rate counts (0: 10).")] = 0,
    labelled_failures: Annotated[int, typer.Option("--labelled-failures", help="Trigger on this many newly "
                                                   "labelled cases the current version gets wrong (0: off).")] = 0,
    every: Annotated[float, typer.Option(help="Trigger every this many seconds (0: off).")] = 0.0,
    max_evaluations_per_day: Annotated[int, typer.Option("--max-evaluations-per-day", help="0: 2000.")] = 0,
    max_cost_per_day: Annotated[float, typer.Option("--max-cost-per-day", help="LLM US dollars per day (0: 1).")] = 0.0,
    canary_traffic: Annotated[float, typer.Option("--canary-traffic", help="Share of stable's executions the "
                                                  "evolved version gets (0: 0.2).")] = 0.0,
    canary_min_sample: Annotated[int, typer.Option("--canary-min-sample", help="Executions of each side before "
                                                   "the registry judges the canary (0: 20).")] = 0,
    held_out: Annotated[float, typer.Option("--held-out", help="Share of each kind of case held out for the "
                                            "promotion gate (0: 0.3).")] = 0.0,
    population: Annotated[int | None, typer.Option(help="Candidates per generation of automatic runs.")] = None,
    generations: Annotated[int | None, typer.Option(help="Most generations of automatic runs.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Store the policy but never trigger.")] = False,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Create or replace an agent's evolution policy."""
    config = {key: value for key, value in (("population_size", population), ("generations", generations))
              if value is not None}
    policy = {
        "agent_id": agent, "disabled": disabled,
        "trigger": {"failure_rate_threshold": failure_rate, "window_seconds": window,
                    "min_executions": min_executions, "labelled_failures": labelled_failures,
                    "schedule_interval_seconds": every},
        "budget": {"max_evaluations_per_day": max_evaluations_per_day, "max_cost_usd_per_day": max_cost_per_day},
        "config": config, "canary_traffic_fraction": canary_traffic, "canary_min_sample": canary_min_sample,
        "held_out_fraction": held_out,
    }
    stored = _run(address, lambda evolution: evolution.set_evolution_policy(policy))
    if as_json:
        emit(stored)
    else:
        _print(stored)


@policy_app.command("show")
def show_policy(
    agent_id: Annotated[str, typer.Argument(help="Agent id.")],
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """An agent's policy and what its loop is doing."""
    policy = _run(address, lambda evolution: evolution.get_evolution_policy(agent_id))
    if as_json:
        emit(policy)
    else:
        _print(policy)


@policy_app.command("list")
def list_policies(
    limit: Annotated[int, typer.Option(help="At most this many policies.")] = 50,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Every policy by agent id."""
    page = _run(address, lambda evolution: evolution.list_evolution_policies(page_size=limit))
    if as_json:
        emit({"policies": page.items})
        return
    table = Table("agent", "phase", "runs", "last outcome")
    for policy in page.items:
        status = policy.get("status", {})
        table.add_row(policy["agent_id"], str(status.get("phase", "")).removeprefix("PHASE_").lower(),
                      str(status.get("runs_started", 0)), status.get("last_outcome", ""))
    out.print(table)


@policy_app.command("delete")
def delete_policy(
    agent_id: Annotated[str, typer.Argument(help="Agent id.")],
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Remove an agent's policy (a run it started goes on)."""
    _run(address, lambda evolution: evolution.delete_evolution_policy(agent_id))
    if as_json:
        emit({"agent_id": agent_id, "deleted": True})
    else:
        out.print(f"{agent_id}: policy deleted", markup=False)


@policy_app.command("trigger")
def trigger_policy(
    agent_id: Annotated[str, typer.Argument(help="Agent id.")],
    reason: Annotated[str, typer.Option(help="Why, kept as the run's start reason.")] = "",
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Start the policy's automatic run now, from the production cases."""
    answer = _run(address, lambda evolution: evolution.trigger_evolution_policy(agent_id, reason=reason))
    if as_json:
        emit(answer)
        return
    run = answer["run"]
    out.print(f"{run['run_id']} started: {run.get('start_reason', '')}", markup=False)
    out.print(f"follow it: tdev evolution watch {run['run_id']}", markup=False)
