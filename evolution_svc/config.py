"""Settings of the evolution service (env prefix ``TDEV_EVOLUTION_``, SSM section ``evolution``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import ServiceSettings

SCHEMA = "evolution"


class EvolutionSettings(ServiceSettings):
    """Knobs of the evolution service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_EVOLUTION_", extra="ignore")
    ssm_section: ClassVar[str | None] = "evolution"

    port: int = Field(50054, description="Port the evolution service listens on.")
    population_size: int = Field(50, description="Candidates per generation.")
    generations: int = Field(20, description="Most generations per run.")
    mutation_rate: float = Field(0.1, description="Probability of mutating a child.")
    crossover_rate: float = Field(0.5, description="Probability of crossover when making a child.")
    elitism: int = Field(2, description="Best candidates copied unchanged into the next generation.")
