"""What every stage shares: its settings, the ports it calls, how it reports progress and calls the LLM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from builder_svc.domain import SERVICE_ID_PREFIX, BuildError, BuildState, EventType, NewEvent, Progress, ServicePackage
from builder_svc.ports import LanguageModel, Registry, Tester, Workflows
from tdev_common.llm import Completion, Purpose

if TYPE_CHECKING:  # the pipeline imports the stages, which only need BuildRun's type
    from builder_svc.pipeline import BuildRun

JSON = dict[str, Any]
T = TypeVar("T")
BuildStates = Callable[[Sequence[str]], Awaitable[Mapping[str, BuildState]]]


class BuildFailed(Exception):
    """Ends the build as FAILED with this error."""

    def __init__(self, error: BuildError) -> None:
        super().__init__(error.message)
        self.error = error


class RepairNeeded(BuildFailed):
    """The fix loop ran out for an agent version it registered: the evolution service may still fix it.

    ``needs`` lists every agent of the stage whose fix loop ran out (this one first): select or create lets the
    others finish, so that one repair stage hands all of them to evolution.
    """

    def __init__(self, error: BuildError, spec_id: str, agent_id: str, version: str, examples: list[JSON],
                 fix_attempts: int) -> None:
        super().__init__(error)
        self.spec_id = spec_id
        self.agent_id = agent_id
        self.version = version
        self.examples = examples
        self.fix_attempts = fix_attempts
        self.needs: tuple[RepairNeeded, ...] = (self,)

    def together_with(self, others: Sequence[RepairNeeded]) -> RepairNeeded:
        """This one, naming ``others`` too."""
        self.needs = (self, *(other for other in others if other is not self))
        return self


@dataclass(frozen=True)
class PipelineSettings:
    """Knobs of the stages (from BuilderSettings)."""

    agent_concurrency: int = 4
    validation_concurrency: int = 4
    reuse_candidates: int = 3
    search_top_k: int = 10
    example_timeout_seconds: float = 5.0
    node_timeout_seconds: float = 10.0
    validation_deadline_seconds: float = 120.0
    max_validation_rounds: int = 2
    analysis_max_tokens: int = 4000
    plan_max_tokens: int = 8000
    code_max_tokens: int = 4000
    model: str | None = None
    workflow_address: str = "127.0.0.1:50052"
    repair_population: int = 12
    repair_generations: int = 10
    repair_time_share: float = 0.5
    repair_operators: str = ""
    repair_max_agents: int = 3


@dataclass(frozen=True)
class StageOutcome:
    """What a stage body produced: the summary and details of its event, the checkpoint keys it sets."""

    summary: str
    details: JSON
    checkpoint: JSON = field(default_factory=dict)
    succeeded: bool = True
    package: ServicePackage | None = None


@dataclass(frozen=True)
class StageTools:
    """The settings and ports every stage of every build uses (one per worker)."""

    settings: PipelineSettings
    llm: LanguageModel
    registry: Registry
    workflows: Workflows
    tester: Tester
    build_states: BuildStates


class StageBody:
    """Base of the stages: ``await stage(run, attempt)`` does the stage's work for one build."""

    def __init__(self, tools: StageTools) -> None:
        self._tools = tools
        self._settings = tools.settings

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        raise NotImplementedError

    async def _progress(self, run: BuildRun, message: str, details: JSON | None = None,
                        change: Callable[[Progress], Progress] | None = None) -> None:
        await run.emit(NewEvent(EventType.STAGE_PROGRESS, run.current, message, details or {}), change)

    async def _complete(self, run: BuildRun, messages: Sequence[Any], schema: Mapping[str, Any], purpose: Purpose,
                        max_tokens: int) -> Completion:
        completion = await self._tools.llm.complete(messages, schema=schema, purpose=purpose, max_tokens=max_tokens,
                                                    temperature=0.0, model=self._settings.model, budget=run.budget)
        run.meter.add(completion)
        return completion


async def run_all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Runs coroutines concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def service_id_of(build_id: str) -> str:
    """``build_1a2b...`` -> ``svc_1a2b...``."""
    return SERVICE_ID_PREFIX + build_id.removeprefix("build_")
