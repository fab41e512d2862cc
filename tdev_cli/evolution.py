"""``tdev evolve`` and ``tdev evolution``: evolve an agent against a suite, follow it live, chart it (gRPC)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from tdev.evolution.v1 import evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2
from tdev.evolution.v1 import evolution_service_pb2_grpc as pb2_grpc
from tdev.registry.v1 import registry_service_pb2 as registry_pb2
from tdev.registry.v1 import registry_service_pb2_grpc as registry_pb2_grpc

from tdev_cli.agent_files import NAME_HELP, NEW_VERSION_OF_HELP, RegistrationRefused, registration_name
from tdev_cli.calls import call_service, cli_security
from tdev_common.config import get_common_settings
from tdev_common.grpc_client import open_channel

T = TypeVar("T")
Event = evolution_pb2.EvolutionEvent
RUN = evolution_pb2.EvolutionRun
END_EVENTS = (Event.TYPE_RUN_SUCCEEDED, Event.TYPE_RUN_FAILED, Event.TYPE_RUN_CANCELLED)
SCORING = {
    **{name.removeprefix("SCORING_MODE_").lower(): value for name, value in evolution_pb2.ScoringMode.items()},
    **dict(evolution_pb2.ScoringMode.items()),
}
OPERATORS = {name.removeprefix("OPERATOR_SET_").lower(): value for name, value in evolution_pb2.OperatorSet.items()}
STATES = {name.removeprefix("STATE_").lower(): value for name, value in RUN.State.items() if value}
ADDRESS_HELP = "Evolution service address (default: TDEV_EVOLUTION_ADDRESS)."

evolution_app = typer.Typer(help="Show, chart, list, watch and cancel evolution runs.", no_args_is_help=True)
console = Console()


def suite_from_file(path: Path) -> evolution_pb2.EvaluationSuite:
    """A suite file (``examples/evolution/*/suite.json``) as the proto message.

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
    suite = evolution_pb2.EvaluationSuite(
        scoring_mode=SCORING[mode],  # type: ignore[arg-type]
        tolerance=float(data.get("tolerance") or 0.0),
        scorer_agent_id=str(data.get("scorer_agent_id", "")),
        scorer_agent_version=str(data.get("scorer_agent_version", "")),
        held_out_fraction=float(data.get("held_out_fraction") or 0.0),
    )
    for index, raw in enumerate(data["cases"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("inputs", {}), dict):
            raise typer.BadParameter(f"{path}: cases[{index}] needs an object of inputs")
        case = suite.cases.add(name=str(raw.get("name", "")), held_out=bool(raw.get("held_out", False)),
                               weight=float(raw.get("weight", 0.0)))
        case.inputs.update(raw.get("inputs", {}))
        if isinstance(raw.get("expected"), dict):
            case.expected.update(raw["expected"])
    return suite


def _run(address: str, work: Callable[[pb2_grpc.EvolutionServiceStub], Awaitable[T]]) -> T:
    """Runs ``work`` against the evolution service; a failed call prints its status and exits 1."""
    return call_service(address or get_common_settings().evolution_address, pb2_grpc.EvolutionServiceStub, work)


# -- live table ---------------------------------------------------------------------------------------------
class GenerationTable:
    """One row per finished generation, folded from the run's events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.reports: list[evolution_pb2.GenerationReport] = []
        self.notes: list[str] = []
        self.ended: Event | None = None

    def add(self, event: evolution_pb2.EvolutionEvent) -> None:
        """Folds one event in."""
        if event.type == Event.TYPE_GENERATION_COMPLETED:
            self.reports.append(event.report)
        elif event.type == Event.TYPE_PROMOTION_DECIDED:
            verdict = "[green]promoted[/green]" if event.promotion.promoted else "[yellow]not promoted[/yellow]"
            where = f" as {event.promotion.agent_id} {event.promotion.version}" if event.promotion.promoted else ""
            self.notes.append(f"{verdict}{where}: {escape(event.promotion.reason)}")
        elif event.message:
            self.notes.append(f"{Event.Type.Name(event.type).removeprefix('TYPE_').lower()}: {escape(event.message)}")
        if event.type in END_EVENTS:
            self.ended = event

    def render(self) -> Group:
        """The table and the notes so far."""
        table = Table(title=f"evolution {self.run_id}", title_justify="left")
        for column in ("gen", "best", "mean", "median", "vs seed", "vs prev", "diversity", "evals", "cache",
                       "dups", "archive", "cost $", "ms"):
            table.add_column(column, justify="right")
        for r in self.reports:
            table.add_row(
                str(r.generation), f"{r.best_fitness:.4f}", f"{r.mean_fitness:.4f}", f"{r.median_fitness:.4f}",
                f"{r.improvement_over_seed:+.1%}", f"{r.improvement_over_previous:+.1%}", f"{r.diversity:.2f}",
                str(r.evaluations), str(r.cache_hits), str(r.duplicates_skipped), str(r.archive_size),
                f"{r.cost_usd:.4f}", f"{r.duration_ms:.0f}",
            )
        return Group(table, *(Text.from_markup(note) for note in self.notes))


async def _follow(stub: pb2_grpc.EvolutionServiceStub, run_id: str, after: int = 0) -> GenerationTable:
    table = GenerationTable(run_id)
    with Live(table.render(), console=console, refresh_per_second=8) as live:
        async for message in stub.WatchEvolution(pb2.WatchEvolutionRequest(run_id=run_id, after_sequence=after)):
            table.add(message.event)
            live.update(table.render())
    return table


def _exit_code(table: GenerationTable) -> int:
    return 0 if table.ended is not None and table.ended.type == Event.TYPE_RUN_SUCCEEDED else 1


# -- tdev evolve --------------------------------------------------------------------------------------------
def _register_file(path: Path, name: str, new_version_of: str, registry_address: str) -> str:
    """Registers an agent file and returns its id (the same code twice is the same version).

    The name is chosen and checked as by ``tdev agents register`` (tdev_cli/agent_files.py): a file is never
    filed under an agent of another class unless ``new_version_of`` says so.
    """
    common = get_common_settings()
    code = path.read_text()

    async def register() -> str:
        channel = open_channel(registry_address or common.registry_address,
                               deadline_seconds=common.client_deadline_seconds, tracing=False,
                               security=cli_security(common))
        try:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            target = await registration_name(stub, path, code, name=name, new_version_of=new_version_of)
            response = await stub.RegisterAgent(
                registry_pb2.RegisterAgentRequest(name=target, code=code,
                                                  description=f"registered by tdev evolve from {path.name}"))
            return str(response.agent.agent_id)
        finally:
            await channel.close()

    try:
        return asyncio.run(register())
    except RegistrationRefused as refused:
        console.print(f"[red]error[/red] FAILED_PRECONDITION: {escape(str(refused))}")
        raise typer.Exit(1) from None
    except grpc.aio.AioRpcError as error:
        console.print(f"[red]error[/red] registering {path}: {error.code().name}: {escape(error.details() or '')}")
        raise typer.Exit(1) from None


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
) -> None:
    """Evolve AGENT against a suite; with --follow, show one row per generation as it finishes.

    A file is registered first under the agent's own name (not the file's stem), and refused when that name is
    an agent of another class unless --new-version-of names it (see tdev agents register).
    """
    if name and new_version_of:
        raise typer.BadParameter("--name and --new-version-of exclude each other")
    if operators not in ("auto", *OPERATORS):
        raise typer.BadParameter(f"--operators: one of auto, {', '.join(k for k in OPERATORS if k != 'unspecified')}")
    message = suite_from_file(suite)
    path = Path(agent)
    if agent.endswith(".py") and path.is_file():
        agent = _register_file(path, name, new_version_of, registry_address)
    config = evolution_pb2.EvolutionConfig(
        operators=OPERATORS.get(operators, evolution_pb2.OPERATOR_SET_UNSPECIFIED),  # type: ignore[arg-type]
        promote=promote,
    )
    for field, value in (
        ("generations", generations), ("population_size", population), ("mutation_rate", mutation_rate),
        ("crossover_rate", crossover_rate), ("islands", islands), ("seed", seed),
        ("max_evaluations", max_evaluations), ("max_cost_usd", max_cost), ("max_duration_seconds", max_duration),
        ("plateau_generations", plateau), ("promotion_margin", margin),
    ):
        if value is not None:
            setattr(config, field, value)

    async def work(stub: pb2_grpc.EvolutionServiceStub) -> int:
        run = (await stub.StartEvolution(pb2.StartEvolutionRequest(agent_id=agent, suite=message, config=config))).run
        console.print(
            f"run [bold]{run.run_id}[/bold]: {run.agent_id} {run.agent_version}, population "
            f"{run.config.population_size}, {run.config.generations} generations, seed {run.config.seed}, "
            f"operators {evolution_pb2.OperatorSet.Name(run.config.operators).removeprefix('OPERATOR_SET_').lower()}"
        )
        if not follow:
            console.print(f"follow it with: tdev evolution watch {run.run_id}")
            return 0
        return _exit_code(await _follow(stub, run.run_id))

    raise typer.Exit(_run(address, work))


# -- tdev evolution ... ---------------------------------------------------------------------------------------
def write_plot(run: evolution_pb2.EvolutionRun, path: Path) -> None:
    """A fitness-per-generation chart (best, mean, median; generation 0 is the seed program)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    generations = [0, *(r.generation for r in run.generations)]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.plot(generations, [run.seed_fitness, *(r.best_fitness for r in run.generations)], marker="o", label="best")
    axes.plot(generations, [run.seed_fitness, *(r.mean_fitness for r in run.generations)], label="mean")
    axes.plot(generations, [run.seed_fitness, *(r.median_fitness for r in run.generations)], linestyle="--",
              label="median")
    axes.axhline(run.seed_fitness, color="grey", linewidth=0.8, linestyle=":", label="seed program")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{run.run_id}: {run.agent_id} {run.agent_version}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _summary(run: evolution_pb2.EvolutionRun) -> Table:
    table = Table(show_header=False, box=None)
    state = RUN.State.Name(run.state).removeprefix("STATE_").lower()  # type: ignore[arg-type]
    stop = evolution_pb2.StopReason.Name(run.stop_reason).removeprefix("STOP_REASON_").lower()  # type: ignore[arg-type]
    rows = [
        ("run", run.run_id), ("agent", f"{run.agent_id} {run.agent_version}"), ("state", state),
        ("stopped", f"{stop}: {run.stop_message}" if run.stop_message else stop),
        ("seed fitness", f"{run.seed_fitness:.4f}"),
        ("best", f"{run.best.fitness:.4f} (correctness {run.best.correctness:.4f}, {run.best.operator}, "
                 f"generation {run.best.generation})"),
        ("promotion", ("promoted as " + f"{run.promotion.agent_id} {run.promotion.version}: "
                       if run.promotion.promoted else "not promoted: ") + run.promotion.reason),
    ]
    if run.error:
        rows.append(("error", run.error))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", escape(value))
    return table


@evolution_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run id, e.g. evo_1a2b3c4d5e6f.")],
    plot: Annotated[Path | None, typer.Option(help="Write a fitness-per-generation chart (PNG) here.")] = None,
    code: Annotated[bool, typer.Option(help="Print the best candidate's code.")] = False,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
) -> None:
    """Show a run: summary, one row per generation, and optionally a chart and the best code."""
    run = _run(address, lambda stub: _get(stub, run_id))
    console.print(_summary(run))
    table = GenerationTable(run.run_id)
    table.reports = list(run.generations)
    console.print(table.render())
    if code:
        console.print(run.best.code, markup=False, highlight=False)
    if plot is not None:
        write_plot(run, plot)
        console.print(f"chart written to {plot}")


async def _get(stub: pb2_grpc.EvolutionServiceStub, run_id: str) -> evolution_pb2.EvolutionRun:
    return (await stub.GetEvolution(pb2.GetEvolutionRequest(run_id=run_id))).run


@evolution_app.command("list")
def list_runs(
    agent: Annotated[str, typer.Option(help="Only runs of this agent id.")] = "",
    state: Annotated[str, typer.Option(help=f"Only runs in this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 20,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
) -> None:
    """List runs, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"--state: one of {', '.join(STATES)}")
    request = pb2.ListEvolutionsRequest(page_size=limit, agent_id=agent, state=STATES.get(state, 0))  # type: ignore[arg-type]
    page = _run(address, lambda stub: stub.ListEvolutions(request))
    table = Table("run", "agent", "state", "stopped", "seed", "best", "promoted")
    for run in page.runs:
        table.add_row(
            run.run_id, f"{run.agent_id} {run.agent_version}",
            RUN.State.Name(run.state).removeprefix("STATE_").lower(),  # type: ignore[arg-type]
            evolution_pb2.StopReason.Name(run.stop_reason).removeprefix("STOP_REASON_").lower(),  # type: ignore[arg-type]
            f"{run.seed_fitness:.4f}", f"{run.best.fitness:.4f}", "yes" if run.promotion.promoted else "no",
        )
    console.print(table)


@evolution_app.command("watch")
def watch(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    after: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
) -> None:
    """Follow a run live until it ends."""
    raise typer.Exit(_run(address, lambda stub: _watch(stub, run_id, after)))


async def _watch(stub: pb2_grpc.EvolutionServiceStub, run_id: str, after: int) -> int:
    return _exit_code(await _follow(stub, run_id, after))


@evolution_app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    reason: Annotated[str, typer.Option(help="Why, kept on the run.")] = "",
    address: Annotated[str, typer.Option(help=ADDRESS_HELP)] = "",
) -> None:
    """Cancel an unfinished run."""
    request = pb2.CancelEvolutionRequest(run_id=run_id, reason=reason)
    run: Any = _run(address, lambda stub: stub.CancelEvolution(request))
    console.print(f"{run.run.run_id}: {run.run.stop_message}")
