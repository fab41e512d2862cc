"""Settings of the workflow service (env prefix ``TDEV_WORKFLOW_``, Parameter Store section ``workflow``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import ServiceSettings

SCHEMA = "workflow"


class WorkflowSettings(ServiceSettings):
    """Knobs of the workflow service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_WORKFLOW_", extra="ignore")
    ssm_section: ClassVar[str | None] = "workflow"

    port: int = Field(50052, description="Port the workflow service listens on.")
    max_nodes: int = Field(1000, description="Most nodes in one workflow definition.")
    max_concurrency: int = Field(16, description="Default most nodes running at once per execution.")
    default_timeout_seconds: float = Field(30.0, description="Per-attempt node timeout when none is set.")
