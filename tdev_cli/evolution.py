"""``tdev evolve`` and ``tdev evolution``: evolve an agent against a suite, follow it live, chart it (typed
client)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tdev.evolution.v1 import evolution_pb2

from tdev_cli import session
from tdev_cli.agent_files import NAME_HELP, NEW_VERSION_OF_HELP, RegistrationRefused, registration_name
from tdev_cli.policies import policy_app
from tdev_cli.session import JsonOption, emit, emit_line, out
from tdev_client import EvolutionClient, Mesh

END_EVENTS = ("TYPE_RUN_SUCCEEDED", "TYPE_RUN_FAILED", "TYPE_RUN_CANCELLED")
SCORING = {
    **{name.removeprefix("SCORING_MODE_").lower(): name for name, _ in evolution_pb2.ScoringMode.items()},
    **{name: name for name, _ in evolution_pb2.ScoringMode.items()},
}
OPERATORS = {name.removeprefix("OPERATOR_SET_").lower(): name for name, _ in evolution_pb2.OperatorSet.items()}
STATES = {name.removeprefix("STATE_").lower(): name for name, value in evolution_pb2.EvolutionRun.State.items()
          if value}
ADDRESS_HELP = "Evolution service address (else the profile's, else TDEV_EVOLUTION_ADDRESS, else 127.0.0.1:50054)."

evolution_app = typer.Typer(help="Show, chart, list, watch and cancel evolution runs; list a run's candidates; "
                                 "evolution policies.", no_args_is_help=True)
evolution_app.add_typer(policy_app, name="policy")


def suite_from_file(path: Path) -> dict[str, Any]:
    """A suite file (``examples/evolution/*/suite.json``) as the ``EvaluationSuite`` the client sends.

    Raises:
        typer.BadParameter: the file is not a suite, naming the case.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise typer.BadParameter(f"{path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise typer.BadParameter(f"{path}: a suite is an object with a list of cases")
    mode = str(data.get("scoring_mode", "exact"))
    if mode not in SCORING:
        raise typer.BadParameter(f"{path}: unknown scoring_mode {mode!r}; one of {', '.join(sorted(SCORING))}")
    cases = []
    for index, raw in enumerate(data["cases"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("inputs", {}), dict):
            raise typer.BadParameter(f"{path}: cases[{index}] needs an object of inputs")
        case = {"name": str(raw.get("name", "")), "held_out": bool(raw.get("held_out", False)),
                "weight": float(raw.get("weight", 0.0)), "inputs": raw.get("inputs", {})}
        if isinstance(raw.get("expected"), dict):
            case["expected"] = raw["expected"]
        cases.append(case)
    return {"scoring_mode": SCORING[mode], "tolerance": float(data.get("tolerance") or 0.0),
            "scorer_agent_id": str(data.get("scorer_agent_id", "")),
            "scorer_agent_version": str(data.get("scorer_agent_version", "")),
            "held_out_fraction": float(data.get("held_out_fraction") or 0.0), "cases": cases}


def _run(address: str, work: Any) -> Any:
    """Runs ``work(mesh.evolution)``; a failed call prints its status and exits 1."""
    return session.call(lambda mesh: work(mesh.evolution), evolution=address)


def _lower(name: str, prefix: str) -> str:
    return str(name).removeprefix(prefix).lower()


# -- live table ---------------------------------------------------------------------------------------------
class GenerationTable:
    """One row per finished generation, folded from the run's events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.reports: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.ended: Mapping[str, Any] | None = None

    def add(self, event: Mapping[str, Any]) -> None:
        """Folds one event in."""
        kind = str(event.get("type", ""))
        if kind == "TYPE_GENERATION_COMPLETED":
            self.reports.append(event.get("report", {}))
        elif kind == "TYPE_PROMOTION_DECIDED":
            promotion = event.get("promotion", {})
            promoted = bool(promotion.get("promoted"))
            verdict = "[green]promoted[/green]" if promoted else "[yellow]not promoted[/yellow]"
            where = f" as {promotion.get('agent_id')} {promotion.get('version')}" if promoted else ""
            self.notes.append(f"{verdict}{where}: {escape(promotion.get('reason', ''))}")
        elif event.get("message"):
            self.notes.append(f"{_lower(kind, 'TYPE_')}: {escape(event['message'])}")
        if kind in END_EVENTS:
            self.ended = event

    def render(self) -> Group:
        """The table and the notes so far."""
        table = Table(title=f"evolution {self.run_id}", title_justify="left")
        for column in ("gen", "best", "mean", "median", "vs seed", "vs prev", "diversity", "evals", "cache",
                       "dups", "archive", "cost $", "ms"):
            table.add_column(column, justify="right")
        for r in self.reports:
            table.add_row(
                str(r.get("generation", 0)), f"{r.get('best_fitness', 0.0):.4f}", f"{r.get('mean_fitness', 0.0):.4f}",
                f"{r.get('median_fitness', 0.0):.4f}", f"{r.get('improvement_over_seed', 0.0):+.1%}",
                f"{r.get('improvement_over_previous', 0.0):+.1%}", f"{r.get('diversity', 0.0):.2f}",
                str(r.get("evaluations", 0)), str(r.get("cache_hits", 0)), str(r.get("duplicates_skipped", 0)),
                str(r.get("archive_size", 0)), f"{r.get('cost_usd', 0.0):.4f}", f"{r.get('duration_ms', 0.0):.0f}",
            )
        return Group(table, *(Text.from_markup(note) for note in self.notes))


async def _follow(evolution: EvolutionClient, run_id: str, after: int = 0, *, as_json: bool = False) -> int:
    """The run live until it ends (a table, or one JSON event per line); the exit status."""
    table = GenerationTable(run_id)
    session.watching("the run", f"tdev evolution watch {run_id}")
    events = evolution.watch_evolution(run_id, after_sequence=after)
    if as_json:
        async for event in events:
            table.add(event)
            emit_line(event)
    else:
        with session.live(table.render()) as update:
            async for event in events:
                table.add(event)
                update(table.render())
    return 0 if table.ended is not None and table.ended.get("type") == "TYPE_RUN_SUCCEEDED" else 1


# -- tdev evolve --------------------------------------------------------------------------------------------
async def _register_file(mesh: Mesh, path: Path, code: str, name: str, new_version_of: str) -> str:
    """Registers an agent file and returns its id (the same code twice is the same version).

    The name is chosen and checked as by ``tdev agents register`` (tdev_cli/agent_files.py): a file is never
    filed under an agent of another class unless ``new_version_of`` says so.
    """
    target = await registration_name(mesh.registry, path, code, name=name, new_version_of=new_version_of)
    answer = await mesh.registry.register_agent(target, code, description=f"registered by tdev evolve from {path.name}")
    return str(answer["agent"]["agent_id"])


def evolve_command(
    agent: Annotated[str, typer.Argument(help="Agent id or name in the registry, or a .py file to register first.")],
    suite: Annotated[Path, typer.Option("--suite", help="Evaluation suite (JSON file).", exists=True)],
    generations: Annotated[int | None, typer.Option(help="Most generations.")] = None,
    population: Annotated[int | None, typer.Option(help="Candidates per generation.")] = None,
    mutation_rate: Annotated[float | None, typer.Option(help="Probability of mutating a child.")] = None,
    crossover_rate: Annotated[float | None, typer.Option(help="Probability of crossover.")] = None,
    islands: Annotated[int | None, typer.Option(help="Number of islands.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same run).")] = None,
    operators: Annotated[str, typer.Option(help="auto, program_transform, llm or mixed.")] = "auto",
    max_evaluations: Annotated[int | None, typer.Option(help="Evaluation budget.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="LLM cost budget in US dollars.")] = None,
    max_duration: Annotated[float | None, typer.Option(help="Wall-time budget in seconds.")] = None,
    plateau: Annotated[int | None, typer.Option(help="Stop after this many generations without improvement.")] = None,
    margin: Annotated[float | None, typer.Option(help="Held-out margin needed for promotion.")] = None,
    promote: Annotated[bool, typer.Option(help="Register the winner when it beats the original.")] = True,
    name: Annotated[str, typer.Option(help="When AGENT is a file: " + NAME_HELP)] = "",
    new_version_of: Annotated[str, typer.Option(help="When AGENT is a file: " + NEW_VERSION_OF_HELP)] = "",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow the run with a live table.")] = False,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    registry_address: Annotated[str, typer.Option(help="Registry address (default: TDEV_REGISTRY_ADDRESS).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Evolve AGENT against a suite; with --follow, show one row per generation as it finishes (--json: the
    run, or with --follow one event per line).

    A file is registered first under the agent's own name (not the file's stem), and refused when that name is
    an agent of another class unless --new-version-of names it (see tdev agents register).
    """
    if name and new_version_of:
        raise typer.BadParameter("--name and --new-version-of exclude each other")
    if operators not in ("auto", *OPERATORS):
        raise typer.BadParameter(f"--operators: one of auto, {', '.join(k for k in OPERATORS if k != 'unspecified')}")
    message = suite_from_file(suite)
    path = Path(agent)
    code = session.read_text(path) if agent.endswith(".py") and path.is_file() else None
    config: dict[str, Any] = {"operators": OPERATORS.get(operators, "OPERATOR_SET_UNSPECIFIED"), "promote": promote}
    for field, value in (
        ("generations", generations), ("population_size", population), ("mutation_rate", mutation_rate),
        ("crossover_rate", crossover_rate), ("islands", islands), ("seed", seed),
        ("max_evaluations", max_evaluations), ("max_cost_usd", max_cost), ("max_duration_seconds", max_duration),
        ("plateau_generations", plateau), ("promotion_margin", margin),
    ):
        if value is not None:
            config[field] = value

    async def work(mesh: Mesh) -> int:
        agent_id = agent
        if code is not None:
            agent_id = await _register_file(mesh, path, code, name, new_version_of)
        run = await mesh.evolution.start_evolution(agent_id, message, config=config)
        run_config = run.get("config", {})
        if not follow and as_json:
            emit(run)
            return 0
        session.say(as_json, (
            f"run [bold]{run['run_id']}[/bold]: {run['agent_id']} {run['agent_version']}, population "
            f"{run_config.get('population_size', 0)}, {run_config.get('generations', 0)} generations, seed "
            f"{run_config.get('seed', 0)}, operators {_lower(run_config.get('operators', ''), 'OPERATOR_SET_')}"))
        if not follow:
            out.print(f"follow it with: tdev evolution watch {run['run_id']}")
            return 0
        return await _follow(mesh.evolution, run["run_id"], as_json=as_json)

    try:
        raise typer.Exit(session.call(work, evolution=address, registry=registry_address))
    except RegistrationRefused as refused:
        session.fail(f"FAILED_PRECONDITION: {refused}", 1)


# -- tdev evolution ... ---------------------------------------------------------------------------------------
def write_plot(run: dict[str, Any], path: Path) -> None:
    """A fitness-per-generation chart (best, mean, median; generation 0 is the seed program)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    reports = run.get("generations", [])
    seed = float(run.get("seed_fitness", 0.0))
    generations = [0, *(r["generation"] for r in reports)]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.plot(generations, [seed, *(r.get("best_fitness", 0.0) for r in reports)], marker="o", label="best")
    axes.plot(generations, [seed, *(r.get("mean_fitness", 0.0) for r in reports)], label="mean")
    axes.plot(generations, [seed, *(r.get("median_fitness", 0.0) for r in reports)], linestyle="--",
              label="median")
    axes.axhline(seed, color="grey", linewidth=0.8, linestyle=":", label="seed program")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{run['run_id']}: {run['agent_id']} {run.get('agent_version', '')}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _summary(run: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    best, promotion = run.get("best", {}), run.get("promotion", {})
    stop = _lower(run.get("stop_reason", ""), "STOP_REASON_")
    rows = [
        ("run", run["run_id"]), ("agent", f"{run['agent_id']} {run.get('agent_version', '')}"),
        ("state", _lower(run["state"], "STATE_")),
        ("stopped", f"{stop}: {run['stop_message']}" if run.get("stop_message") else stop),
        ("seed fitness", f"{run.get('seed_fitness', 0.0):.4f}"),
        ("best", f"{best.get('fitness', 0.0):.4f} (correctness {best.get('correctness', 0.0):.4f}, "
                 f"{best.get('operator', '')}, generation {best.get('generation', 0)})"),
        ("promotion", ("promoted as " + f"{promotion.get('agent_id')} {promotion.get('version')}: "
                       if promotion.get("promoted") else "not promoted: ") + promotion.get("reason", "")),
    ]
    if run.get("error"):
        rows.append(("error", run["error"]))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", escape(value))
    return table


@evolution_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run id, e.g. evo_1a2b3c4d5e6f.")],
    plot: Annotated[Path | None, typer.Option(help="Write a fitness-per-generation chart (PNG) here.")] = None,
    code: Annotated[bool, typer.Option(help="Print the best candidate's code.")] = False,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Show a run: summary, one row per generation, and optionally a chart and the best code."""
    run = _run(address, lambda evolution: evolution.get_evolution(run_id))
    if plot is not None:
        write_plot(run, plot)
    if as_json:
        emit(run)
        if plot is not None:
            session.err.print(f"chart written to {plot}", markup=False)
        return
    out.print(_summary(run))
    table = GenerationTable(run["run_id"])
    table.reports = list(run.get("generations", []))
    out.print(table.render())
    if code:
        out.print(run.get("best", {}).get("code", ""), markup=False, highlight=False)
    if plot is not None:
        out.print(f"chart written to {plot}", markup=False)


@evolution_app.command("list")
def list_runs(
    agent: Annotated[str, typer.Option(help="Only runs of this agent id.")] = "",
    state: Annotated[str, typer.Option(help=f"Only runs in this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 20,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"--state: one of {', '.join(STATES)}")
    page = _run(address, lambda evolution: evolution.list_evolutions(page_size=limit, agent_id=agent,
                                                                     state=STATES.get(state)))
    if as_json:
        emit({"runs": page.items})
        return
    table = Table("run", "agent", "state", "stopped", "seed", "best", "promoted")
    for run in page.items:
        table.add_row(
            run["run_id"], f"{run['agent_id']} {run.get('agent_version', '')}", _lower(run["state"], "STATE_"),
            _lower(run.get("stop_reason", ""), "STOP_REASON_"), f"{run.get('seed_fitness', 0.0):.4f}",
            f"{run.get('best', {}).get('fitness', 0.0):.4f}",
            "yes" if run.get("promotion", {}).get("promoted") else "no",
        )
    out.print(table)


@evolution_app.command("candidates")
def candidates(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    limit: Annotated[int, typer.Option(help="At most this many candidates (0: every one).")] = 0,
    code: Annotated[bool, typer.Option(help="Include each candidate's code (in --json; else printed after "
                                            "the table).")] = False,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """List the candidates a run evaluated, by generation: the seed, then each generation's children with the
    operator that made them and their parents (--json: {"candidates": [...]})."""
    if limit < 0:
        raise typer.BadParameter("--limit must not be negative")

    async def work(evolution: EvolutionClient) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        async for candidate in evolution.iter_candidates(run_id, page_size=min(limit, 500) if limit else 500,
                                                         exclude_code=not code):
            found.append(dict(candidate))
            if limit and len(found) >= limit:
                break
        return found

    listed = _run(address, work)
    if as_json:
        emit({"candidates": listed})
        return
    table = Table("gen", "code hash", "operator", "fitness", "correct", "parents", title=f"candidates of {run_id}",
                  title_justify="left")
    for candidate in listed:
        table.add_row(
            str(candidate.get("generation", 0)), candidate["code_hash"][:12], escape(candidate.get("operator", "")),
            f"{candidate.get('fitness', 0.0):.4f}", f"{candidate.get('correctness', 0.0):.2f}",
            " ".join(parent[:12] for parent in candidate.get("parent_hashes", [])) or "-",
        )
    out.print(table)
    if code:
        for candidate in listed:
            out.print(f"# {candidate['code_hash'][:12]} (generation {candidate.get('generation', 0)})", markup=False)
            out.print(candidate.get("code", ""), markup=False, highlight=False)


@evolution_app.command("watch")
def watch(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    after: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Follow a run live until it ends (--json: one event per line)."""
    raise typer.Exit(_run(address, lambda evolution: _follow(evolution, run_id, after, as_json=as_json)))


@evolution_app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    reason: Annotated[str, typer.Option(help="Why, kept on the run.")] = "",
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
    as_json: JsonOption = False,
) -> None:
    """Cancel an unfinished run."""
    run = _run(address, lambda evolution: evolution.cancel_evolution(run_id, reason=reason))
    if as_json:
        emit(run)
    else:
        out.print(f"{run['run_id']}: {run.get('stop_message', '')}", markup=False)
