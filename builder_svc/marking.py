"""Marks the agent versions an ended build registered with how it ended (registry labels), durably and retried.

The end of a build and the order to mark its versions are written in one transaction (``builds.marks_*``, an
outbox), so the build's terminal state never waits for the registry and the marking is never lost: a replica's
:class:`LabelMarker` claims due builds, sets the labels with ``UpdateAgentLabels`` (one request id per build, end
state and version, so a repeated job changes nothing twice) and records the job done, or due again after a capped
backoff while the registry is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import structlog

from builder_svc.domain import Build, BuildState, MarkJob, Stage
from builder_svc.ports import Registry, Repository
from tdev_common.errors import DomainError
from tdev_common.tasks import watch

log = structlog.get_logger(__name__)

STATE_LABEL = "build_state"
UNVALIDATED, VALIDATED, SUPERSEDED = "unvalidated", "validated", "superseded"
FAILED, CANCELLED = "failed", "cancelled"
# Versions a build must never reuse, whatever their agent's search rank: they did not pass as part of a service.
NOT_REUSABLE = frozenset({FAILED, CANCELLED, SUPERSEDED})
GIVE_UP_CODES = frozenset({"INVALID_ARGUMENT"})  # the same request can never succeed


def end_labels(build: Build, agent_id: str, version: str) -> dict[str, str]:
    """The labels a version registered by ``build`` gets once the build has ended.

    A succeeded build's packaged versions are ``validated``; the versions it registered and then replaced by a
    fix are ``superseded``. A failed or cancelled build's versions are ``failed`` / ``cancelled`` with the error
    code (``build_error``) and the stage it ended in (``build_error_stage``).
    """
    if build.state == BuildState.SUCCEEDED:
        packaged = {(a.agent_id, a.version) for a in build.package.agents} if build.package else set()
        return {STATE_LABEL: VALIDATED if (agent_id, version) in packaged else SUPERSEDED}
    labels = {STATE_LABEL: CANCELLED if build.state == BuildState.CANCELLED else FAILED}
    if build.error is not None:
        labels["build_error"] = build.error.code
        if build.error.stage is not None:
            labels["build_error_stage"] = build.error.stage.key
    return labels


def request_id(build: Build, agent_id: str, version: str) -> str:
    """The UpdateAgentLabels idempotency key of one version of one ended build."""
    return f"{build.build_id}:end:{build.state.name.lower()}:{agent_id}@{version}"


def retry_delay(attempts: int, max_seconds: float) -> float:
    """0.5 s, 1 s, 2 s, ... after the first, second, third failure, at most ``max_seconds``."""
    return float(min(max_seconds, 0.5 * 2 ** min(attempts, 20)))


def build_suffix(build_id: str) -> str:
    """The part of a build id that every agent name it registers contains (``word_frequency.1a2b3c4d5e6f``)."""
    return build_id.removeprefix("build_")


class LabelMarker:
    """Marks the versions of ended builds in the registry: at once when told, else on its poll; retries."""

    def __init__(self, repository: Repository, registry: Registry, *, poll_seconds: float = 1.0,
                 hold_seconds: float = 120.0, max_delay_seconds: float = 60.0, batch: int = 8,
                 clock: Callable[[], float] = time.time) -> None:
        self._repository = repository
        self._registry = registry
        self._poll = poll_seconds
        self._hold = hold_seconds
        self._max_delay = max_delay_seconds
        self._batch = batch
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the loop."""
        self._task = watch(asyncio.create_task(self._loop(), name="builder-label-marker"),
                           event="builder_loop_failed", loop="builder-label-marker")

    def wake(self) -> None:
        """Looks for builds to mark now (one just ended here)."""
        self._wake.set()

    async def again(self, build_id: str) -> None:
        """Marks an ended build's versions once more (its fenced-out run may have registered one late)."""
        if await self._repository.mark_again(build_id, self._clock()):
            self.wake()

    async def close(self) -> None:
        """Stops the loop; a job cut short is taken up again once its hold expires."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                while await self.run_once() >= self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("build_marking_poll_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claims the builds due now and marks their versions; returns how many builds it handled."""
        self._wake.clear()
        jobs = await self._repository.claim_marks(self._clock(), self._hold, self._batch)
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    async def _run(self, job: MarkJob) -> None:
        build = job.build
        try:
            marked = await self.mark(build)
        except DomainError as error:
            attempts = await self._failed(job, f"{error.code.name}: {error.message}", error.code.name)
            log.warning("build_marking_failed", build_id=build.build_id, code=error.code.name, attempts=attempts,
                        error=error.message)
        except Exception as error:
            attempts = await self._failed(job, f"{type(error).__name__}: {error}", "INTERNAL")
            log.exception("build_marking_crashed", build_id=build.build_id, attempts=attempts)
        else:
            await self._repository.finish_marks(job)
            log.info("build_versions_marked", build_id=build.build_id, state=build.state.name, versions=marked)

    async def _failed(self, job: MarkJob, error: str, code: str) -> int:
        attempts = job.attempts + 1
        retry_at = None if code in GIVE_UP_CODES else self._clock() + retry_delay(job.attempts, self._max_delay)
        await self._repository.finish_marks(job, error=error, retry_at=retry_at)
        return attempts

    async def mark(self, build: Build) -> int:
        """Sets the end labels on every version ``build`` registered; returns how many versions it marked.

        The versions are those the build recorded plus any the registry holds under the build's agent names with
        its ``build_id`` label (a run stopped between registering a version and recording it leaves such a one).
        A version the registry no longer knows is skipped.

        Raises:
            tdev_common.errors.DomainError: the registry failed (the caller retries the whole build later).
        """
        targets = {(a.agent_id, a.version) for a in build.registered_agents if not a.reused}
        if any(s.stage == Stage.SELECT_OR_CREATE for s in build.stages):
            targets.update(await self._registry.versions_labelled(build_suffix(build.build_id), "build_id",
                                                                  build.build_id))
        for agent_id, version in sorted(targets):
            labels = end_labels(build, agent_id, version)
            try:
                await self._registry.update_labels(agent_id, version, labels, request_id(build, agent_id, version))
            except DomainError as error:
                if error.code.name != "NOT_FOUND":
                    raise
                log.warning("build_version_gone", build_id=build.build_id, agent_id=agent_id, version=version)
        return len(targets)


def reusable_label(labels: Mapping[str, str]) -> bool:
    """False for versions whose label says their build did not validate them."""
    return labels.get(STATE_LABEL, "") not in NOT_REUSABLE
