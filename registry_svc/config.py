"""Settings of the registry service (env prefix ``TDEV_REGISTRY_``, Parameter Store section ``registry``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tdev_common.config import ServiceSettings

SCHEMA = "registry"


class RegistrySettings(ServiceSettings):
    """Knobs of the registry service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_REGISTRY_", extra="ignore")
    ssm_section: ClassVar[str | None] = "registry"

    port: int = Field(50051, description="Port the registry service listens on.")
    max_code_bytes: int = Field(64 * 1024, description="Largest agent source accepted, in bytes.")
    max_agents: int = Field(10_000, description="Most distinct agents the registry holds.")
    analysis_workers: int = Field(2, description="Analyses run at once by this replica; 0 turns analysis off.")
    worker_id: str = Field(
        "", description="Stable name of this replica; on restart it takes back its own analyses at once."
    )
    analysis_lease_seconds: float = Field(
        120.0, description="How long a claimed analysis stays with its replica before another may take it."
    )
    analysis_timeout_seconds: float = Field(60.0, description="Longest one analysis may take.")
    analysis_poll_seconds: float = Field(2.0, description="How often idle workers look for pending analyses.")
    cache_ttl_seconds: float = Field(300.0, description="Lifetime of a cached GetAgent answer.")
    cache_degraded_ttl_seconds: float = Field(
        1.0, gt=0, description="Lifetime of a cached GetAgent answer while this replica may miss invalidations "
        "(Redis unreachable, or one of its own invalidations still unpublished): the staleness bound then.")
    cache_heartbeat_seconds: float = Field(
        0.5, gt=0, description="How often the invalidation subscription is pinged; a hung Redis is noticed "
        "within this plus TDEV_REDIS_TIMEOUT_SECONDS.")
    cache_namespace: str = Field("tdev:registry:", description="Prefix of this registry's keys in Redis.")
    cache_max_entries: int = Field(10_000, description="Most GetAgent answers kept in process.")
    max_case_bytes: int = Field(
        64 * 1024, description="Largest captured production case (inputs + output + error) kept, in bytes.")
    max_cases_per_version: int = Field(
        1000, description="Production cases kept per agent version (newest first, labelled ones before others).")
    p95_window: int = Field(1000, description="Recent executions per version the p95 duration is taken over.")
    inspect_timeout_seconds: float = Field(10.0, description="Wall-clock limit of loading a class in the sandbox.")
    sandbox_pool_size: int = Field(1, ge=1, description="Warm sandbox processes kept for loading classes.")
