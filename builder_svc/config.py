"""Settings of the builder service (env prefix ``TDEV_BUILDER_``, Parameter Store section ``builder``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tdev_common.config import ServiceSettings

SCHEMA = "builder"


class BuilderSettings(ServiceSettings):
    """Knobs of the builder service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_BUILDER_", extra="ignore")
    ssm_section: ClassVar[str | None] = "builder"

    port: int = Field(50053, description="Port the builder service listens on.")
    max_requirements_chars: int = Field(20_000, description="Longest requirements text accepted.")
    max_fix_attempts: int = Field(3, description="Default fix attempts per generated agent.")
    max_cost_usd: float = Field(2.0, description="Default LLM cost budget per build, in US dollars.")
    max_tokens: int = Field(200_000, description="Default LLM token budget per build.")
    max_duration_seconds: float = Field(600.0, description="Default wall-time budget per build.")
    max_fix_attempts_limit: int = Field(10, description="Most fix attempts a caller may ask for.")
    max_sample_inputs: int = Field(20, description="Most extra sample inputs a caller may give.")
    max_validation_rounds: int = Field(
        2, description="Times validation may send the build back to fixing the responsible agent."
    )
    worker_id: str = Field(
        "", description="Stable name of this replica; on restart it takes back its own builds at once."
    )
    lease_seconds: float = Field(
        15.0, description="Lease of a running build; a crashed replica's builds move after lease + claim interval."
    )
    claim_interval_seconds: float = Field(1.0, description="How often a replica looks for builds to run or resume.")
    max_active_builds: int = Field(8, description="Builds one replica runs at once; more wait.")
    agent_concurrency: int = Field(4, description="Agents of one build selected or generated at once.")
    validation_concurrency: int = Field(4, description="Validation executions of one build run at once.")
    reuse_candidates: int = Field(3, description="Registry candidates tested per agent before generating one.")
    search_top_k: int = Field(10, description="Registry search results offered to the planner.")
    example_timeout_seconds: float = Field(5.0, description="Sandbox wall-clock limit per example run.")
    node_timeout_seconds: float = Field(10.0, description="Per-attempt timeout of each composed workflow node.")
    watch_poll_seconds: float = Field(1.0, description="Safety poll of the event table by quiet watchers.")
    redis_channel: str = Field(
        "tdev:builder:events",
        description="Redis pub/sub channel on which replicas announce new build events (with TDEV_REDIS_URL).")
    watch_buffer_events: int = Field(1000, description="Live events buffered per watcher before it reads storage.")
    dependency_deadline_seconds: float = Field(30.0, description="Deadline of unary calls to registry and workflow.")
    dependency_attempts: int = Field(3, description=(
        "Tries of a request-id keyed write (CreateWorkflow, StartExecution) and of resuming a broken watch while the "
        "workflow service is unavailable; reads are retried by the channel's retry policy."))
    label_retry_max_seconds: float = Field(
        60.0, description="Longest wait between tries of labelling an ended build's agent versions in the registry."
    )
    validation_deadline_seconds: float = Field(120.0, description="Longest one validation execution may take.")
    analysis_max_tokens: int = Field(4000, description="Output token cap of the analysis call.")
    plan_max_tokens: int = Field(8000, description="Output token cap of the planning call.")
    code_max_tokens: int = Field(4000, description="Output token cap of each code generation or repair call.")
    model: str | None = Field(
        None, description='Model for every builder call ("provider:model"); unset follows tdev_common.llm routing.'
    )
    evolution_repair: bool = Field(False, description=(
        "When the fix loop runs out for an agent, hand it to the evolution service (TDEV_EVOLUTION_ADDRESS) with its "
        "cases as the suite, under the build's remaining budgets (stage repair)."))
    repair_population: int = Field(12, description="Population of a repair-by-evolution run.")
    repair_generations: int = Field(10, description="Most generations of a repair-by-evolution run.")
    repair_operators: str = Field("", description=(
        'Operators of a repair run: "" (the evolution service default), "program_transform", "llm" or "mixed".'))
    repair_time_share: float = Field(
        0.5, description="Share of the build's remaining time a repair-by-evolution run may take.")
    repair_max_agents: int = Field(3, ge=1, description=(
        "Most agents one repair stage hands to evolution (side by side); a round needing more fails the build."))
    public_workflow_address: str = Field(
        "", description="Workflow address shown in generated READMEs; empty uses TDEV_WORKFLOW_ADDRESS."
    )
