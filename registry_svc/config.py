"""Settings of the registry service (env prefix ``TDEV_REGISTRY_``, Parameter Store section ``registry``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import ServiceSettings

SCHEMA = "registry"


class RegistrySettings(ServiceSettings):
    """Knobs of the registry service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_REGISTRY_", extra="ignore")
    ssm_section: ClassVar[str | None] = "registry"

    port: int = Field(50051, description="Port the registry service listens on.")
    max_code_bytes: int = Field(64 * 1024, description="Largest agent source accepted, in bytes.")
    max_agents: int = Field(10_000, description="Most distinct agents the registry holds.")
