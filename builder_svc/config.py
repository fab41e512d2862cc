"""Settings of the builder service (env prefix ``TDEV_BUILDER_``, Parameter Store section ``builder``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import ServiceSettings

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
