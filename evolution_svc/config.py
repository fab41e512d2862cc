"""Settings of the evolution service (env prefix ``TDEV_EVOLUTION_``, SSM section ``evolution``).

The run defaults (population_size, mutation_rate, ...) are what a StartEvolution request gets for every
field it leaves unset; Parameter Store ``/t-developer/{env}/config/evolution/<name>`` overrides them.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from tdev_common.config import ServiceSettings

SCHEMA = "evolution"


class EvolutionSettings(ServiceSettings):
    """Knobs of the evolution service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_EVOLUTION_", extra="ignore")
    ssm_section: ClassVar[str | None] = "evolution"

    port: int = Field(50054, description="Port the evolution service listens on.")

    # Run defaults (a request's EvolutionConfig overrides each).
    population_size: int = Field(50, description="Candidates per generation.")
    generations: int = Field(20, description="Most generations per run.")
    mutation_rate: float = Field(0.1, description="Probability of mutating a child.")
    crossover_rate: float = Field(0.5, description="Probability of crossover when making a child.")
    elitism: int = Field(2, description="Best candidates copied unchanged into the next generation (per island).")
    tournament_size: int = Field(3, description="Candidates drawn per tournament.")
    islands: int = Field(2, description="Sub-populations evolving apart between migrations.")
    migration_interval: int = Field(5, description="Generations between migrations.")
    migration_size: int = Field(2, description="Candidates each island sends at a migration.")
    max_evaluations: int = Field(5000, description="Most candidate evaluations per run.")
    max_cost_usd: float = Field(1.0, description="Most LLM cost per run in US dollars.")
    max_duration_seconds: float = Field(600.0, description="Most wall time per run in seconds.")
    plateau_generations: int = Field(5, description="Stop after this many generations without improvement.")
    promotion_margin: float = Field(0.01, description="Held-out fitness margin needed for promotion.")
    speed_weight: float = Field(0.01, description="Weight of speed in the fitness.")
    size_weight: float = Field(0.01, description="Weight of code size in the fitness.")
    promote: bool = Field(True, description="Register the winner when it beats the original.")
    operators: Literal["auto", "program_transform", "llm", "mixed"] = Field(
        "auto", description="Default operators; auto: mixed when a model is configured, else program transforms."
    )
    selection: Literal["tournament", "lexicase", "epsilon_lexicase"] = Field(
        "tournament", description="Parent selection; lexicase also keys the archive on per-case pass vectors."
    )
    synthesis: bool = Field(
        False, description="Add the synthesis operators to the transforms, weighted by a success bandit."
    )

    # Service behaviour.
    max_concurrent_runs: int = Field(4, description="Runs this replica works on at once.")
    evaluation_parallelism: int = Field(8, description="Candidates of one run measured at once.")
    case_timeout_seconds: float = Field(2.0, description="Wall-clock limit of one case of one candidate.")
    case_memory_mb: int = Field(256, description="Address-space limit of a candidate's process, MiB.")
    archive_rate: float = Field(0.1, description="Share of parents drawn from the MAP-Elites archive.")
    attempts_per_child: int = Field(20, description="Operator attempts per open slot before filling with survivors.")
    llm_parallelism: int = Field(4, description="Model calls of one run at once.")
    worker_id: str = Field(
        "", description="Stable name of this replica; on restart it takes back its own runs at once."
    )
    lease_seconds: float = Field(
        15.0, description="Lease of a running run; a crashed replica's runs move after lease + claim interval."
    )
    claim_interval_seconds: float = Field(2.0, description="How often a replica looks for runs to start or resume.")
    watch_poll_seconds: float = Field(
        1.0, description="Safety poll of the event table by quiet watchers (Redis notices wake them at once).")
    redis_channel: str = Field(
        "tdev:evolution:events",
        description="Redis pub/sub channel on which replicas announce new run events (with TDEV_REDIS_URL).")
    watch_buffer_events: int = Field(1000, description="Live events buffered per watcher before it reads storage.")
    cache_namespace: str = Field("tdev:evolution:", description="Prefix of the fitness cache's keys.")
    cache_ttl_seconds: float = Field(7 * 24 * 3600.0, description="Lifetime of a cached measurement.")
    policy_loop: bool = Field(True, description="Run the evolution-policy loop on this replica.")
    policy_interval_seconds: float = Field(
        5.0, description="How often the policy loop reads production numbers and advances each policy.")
    policy_lease_seconds: float = Field(
        30.0, description="Lease of a policy on the replica advancing it; another takes over after it expires.")
    policies_per_tick: int = Field(50, description="Policies one replica advances per tick.")
    cache_signing_key: SecretStr | None = Field(
        None, description="HMAC key of cached measurements (shared by replicas); unset: a key per process."
    )
    registry_deadline_seconds: float = Field(30.0, description="Deadline of registry calls.")
