"""Aliases and progressive delivery: named pointers to versions, a canary that takes a share of the traffic of
"stable", and the automatic decision that promotes or rolls it back once both have enough executions."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from registry_svc import validation
from registry_svc.domain import (
    CANARY,
    STABLE,
    UNSET_ROLLOUT,
    AgentAlias,
    AliasEvent,
    RolloutPolicy,
    Selector,
    VersionStats,
)
from registry_svc.ports import Repository
from tdev_common.errors import FieldViolation, NotFound, invalid_field, invalid_fields, require

log = structlog.get_logger(__name__)
ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
EVENTS_SHOWN = 50
DEFAULT_POLICY = RolloutPolicy()


@dataclass(frozen=True)
class AliasView:
    """An agent's aliases, its latest alias events and, during a rollout, both sides' numbers."""

    aliases: list[AgentAlias]
    events: list[AliasEvent]
    stable: VersionStats | None = None
    canary: VersionStats | None = None


def effective_policy(policy: RolloutPolicy | None) -> RolloutPolicy:
    """The policy with every unset (0) field at its default."""
    given = policy or UNSET_ROLLOUT
    return RolloutPolicy(given.min_sample or DEFAULT_POLICY.min_sample,
                         given.max_success_rate_drop or DEFAULT_POLICY.max_success_rate_drop,
                         given.max_latency_ratio or DEFAULT_POLICY.max_latency_ratio,
                         given.min_latency_increase_ms or DEFAULT_POLICY.min_latency_increase_ms)


def decide(stable: VersionStats, canary: VersionStats, policy: RolloutPolicy) -> tuple[bool, str] | None:
    """(promote?, why) once both sides have ``min_sample`` executions; None before."""
    if min(stable.executions, canary.executions) < policy.min_sample:
        return None
    drop = stable.success_rate - canary.success_rate
    ratio = canary.median_duration_ms / stable.median_duration_ms if stable.median_duration_ms > 0 else 1.0
    numbers = (f"canary {canary.version}: {canary.success_rate:.1%} of {canary.executions} succeeded, median "
               f"{canary.median_duration_ms:.1f} ms; stable {stable.version}: {stable.success_rate:.1%} of "
               f"{stable.executions}, median {stable.median_duration_ms:.1f} ms")
    if drop > policy.max_success_rate_drop:
        return False, f"success rate {drop:.1%} below stable (limit {policy.max_success_rate_drop:.1%}); {numbers}"
    increase = canary.median_duration_ms - stable.median_duration_ms
    if ratio > policy.max_latency_ratio and increase > policy.min_latency_increase_ms:
        return False, (f"median duration {ratio:.2f}x stable's, {increase:.1f} ms more (limits "
                       f"{policy.max_latency_ratio:g}x and {policy.min_latency_increase_ms:g} ms); {numbers}")
    return True, f"as good as stable; {numbers}"


class AliasService:
    """Set, list and delete aliases; judge canaries when new executions are recorded."""

    def __init__(self, repository: Repository, clock: Callable[[], datetime]) -> None:
        self._repository = repository
        self._clock = clock

    async def set_alias(self, agent_id: str, alias: str, version: str, traffic_fraction: float,
                        rollout: RolloutPolicy | None) -> AgentAlias:
        """Points an alias at a version (a canary needs stable set, and a share in (0, 1]).

        Raises:
            InvalidArgument: every problem with the request, each as a field violation.
            NotFound: no such agent or version.
        """
        require("agent_id", agent_id)
        problems = []
        if not ALIAS.match(alias):
            problems.append(FieldViolation("alias", "a lowercase letter, then up to 39 of a-z 0-9 _ -"))
        if not version:
            problems.append(FieldViolation("version", "is required: the exact version the alias points at"))
        if alias == CANARY:
            if not (math.isfinite(traffic_fraction) and 0.0 < traffic_fraction <= 1.0):
                problems.append(FieldViolation("traffic_fraction", f"must be in (0, 1] for canary, got "
                                                                   f"{traffic_fraction}"))
            problems += _policy_problems(rollout)
        elif traffic_fraction or rollout is not None:
            problems.append(FieldViolation("traffic_fraction" if traffic_fraction else "rollout",
                                           "only the canary alias takes a traffic share and a rollout policy"))
        if problems:
            raise invalid_fields(problems)
        validation.parse_version_at(version, "version")
        if await self._repository.get_version(Selector(agent_id=agent_id, version=version),
                                              include_code=False) is None:
            raise NotFound(f'agent "{agent_id}" has no version "{version}"', reason="AGENT_VERSION_NOT_FOUND")
        if alias == CANARY and not any(a.alias == STABLE for a in await self._repository.aliases(agent_id)):
            raise invalid_field("alias", "a canary needs a stable alias to take traffic from: set stable first",
                                reason="NO_STABLE_ALIAS")
        stored = AgentAlias(agent_id, alias, version, self._clock(), traffic_fraction if alias == CANARY else 0.0,
                            effective_policy(rollout) if alias == CANARY else None)
        share = f" with {traffic_fraction:.0%} of stable's executions" if alias == CANARY else ""
        return await self._repository.set_alias(stored, f"{alias} -> {version}{share}")

    async def view(self, agent_id: str) -> AliasView:
        """The aliases, latest events and rollout numbers of an agent.

        Raises:
            InvalidArgument: no agent_id.
            NotFound: no such agent.
        """
        require("agent_id", agent_id)
        if await self._repository.identity(agent_id=agent_id) is None:
            raise NotFound(f'unknown agent "{agent_id}"', reason="AGENT_NOT_FOUND")
        found = await self._repository.aliases(agent_id)
        events = await self._repository.alias_events(agent_id, EVENTS_SHOWN)
        by_name = {a.alias: a for a in found}
        if CANARY in by_name and STABLE in by_name:
            canary, stable = by_name[CANARY], by_name[STABLE]
            stats = await self._repository.version_stats(agent_id, [stable.version, canary.version],
                                                         canary.update_time)
            return AliasView(found, events, stats[stable.version], stats[canary.version])
        return AliasView(found, events)

    async def execution_stats(self, agent_id: str, version: str, since: datetime | None) -> VersionStats:
        """One version's executions finished at or after ``since`` (every one when None); the latest version when
        ``version`` is empty.

        Raises:
            InvalidArgument: no agent_id or a malformed version.
            NotFound: no such agent or version.
        """
        require("agent_id", agent_id)
        if version:
            validation.parse_version_at(version, "version")
        found = await self._repository.get_version(Selector(agent_id=agent_id, version=version), include_code=False)
        if found is None:
            if version and await self._repository.identity(agent_id=agent_id) is not None:
                raise NotFound(f'agent "{agent_id}" has no version "{version}"', reason="AGENT_VERSION_NOT_FOUND")
            raise NotFound(f'unknown agent "{agent_id}"', reason="AGENT_NOT_FOUND")
        since = since or datetime.min.replace(tzinfo=UTC)
        return (await self._repository.version_stats(agent_id, [found.version], since))[found.version]

    async def delete(self, agent_id: str, alias: str) -> None:
        """Removes an alias.

        Raises:
            InvalidArgument: a missing field.
            NotFound: no such alias.
        """
        require("agent_id", agent_id)
        require("alias", alias)
        if await self._repository.delete_alias(agent_id, alias, self._clock()) is None:
            raise NotFound(f'agent "{agent_id}" has no alias "{alias}"', reason="ALIAS_NOT_FOUND")

    async def judge(self, agent_ids: Sequence[str]) -> None:
        """Promotes or rolls back the canaries of these agents once their samples are big enough."""
        for canary in await self._repository.canaries(sorted(set(agent_ids))):
            stable = next((a for a in await self._repository.aliases(canary.agent_id) if a.alias == STABLE), None)
            if stable is None or stable.version == canary.version:
                continue
            stats = await self._repository.version_stats(canary.agent_id, [stable.version, canary.version],
                                                         canary.update_time)
            verdict = decide(stats[stable.version], stats[canary.version], effective_policy(canary.rollout))
            if verdict is None:
                continue
            promote, why = verdict
            if await self._repository.finish_rollout(canary, promote, why, self._clock()):
                log.info("rollout_promoted" if promote else "rollout_rolled_back", agent_id=canary.agent_id,
                         version=canary.version, why=why)


def _policy_problems(policy: RolloutPolicy | None) -> list[FieldViolation]:
    if policy is None:
        return []
    problems = []
    if policy.min_sample < 0:
        problems.append(FieldViolation("rollout.min_sample", f"must not be negative, got {policy.min_sample}"))
    if not (math.isfinite(policy.max_success_rate_drop) and 0.0 <= policy.max_success_rate_drop <= 1.0):
        problems.append(FieldViolation("rollout.max_success_rate_drop",
                                       f"must be 0 to 1, got {policy.max_success_rate_drop}"))
    if not (math.isfinite(policy.max_latency_ratio) and policy.max_latency_ratio >= 0.0):
        problems.append(FieldViolation("rollout.max_latency_ratio",
                                       f"must be a number >= 0, got {policy.max_latency_ratio}"))
    if not (math.isfinite(policy.min_latency_increase_ms) and policy.min_latency_increase_ms >= 0.0):
        problems.append(FieldViolation("rollout.min_latency_increase_ms",
                                       f"must be a number of milliseconds >= 0, got {policy.min_latency_increase_ms}"))
    return problems
