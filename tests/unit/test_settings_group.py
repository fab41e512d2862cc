"""Settings groups: a component's dataclass filled whole from the flat service settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pydantic_settings import BaseSettings

from builder_svc.config import BuilderSettings
from builder_svc.stages.base import PipelineSettings
from tdev_common.config import settings_group
from workflow_svc.config import WorkflowSettings
from workflow_svc.engine import EngineSettings
from workflow_svc.validation import Limits

pytestmark = pytest.mark.unit


class Knobs(BaseSettings):
    lease_seconds: float = 7.0
    max_concurrency: int = 3


@dataclass
class Group:
    worker_id: str
    lease_seconds: float
    limit: int = field(metadata={"setting": "max_concurrency"})
    extra: int = 5


def test_fields_come_from_given_then_settings_by_name_or_metadata_then_defaults() -> None:
    assert settings_group(Knobs(), Group, worker_id="w1") == Group("w1", 7.0, 3, 5)
    assert settings_group(Knobs(), Group, worker_id="w1", lease_seconds=1.0).lease_seconds == 1.0


def test_a_field_with_no_source_or_an_unknown_given_field_is_refused() -> None:
    with pytest.raises(TypeError, match=r"no setting for \['worker_id'\]"):
        settings_group(Knobs(), Group)
    with pytest.raises(TypeError, match=r"unknown fields \['typo'\]"):
        settings_group(Knobs(), Group, worker_id="w", typo=1)


def test_the_services_groups_read_the_renamed_settings() -> None:
    settings = WorkflowSettings(max_concurrency=9, max_concurrency_limit=99, lease_seconds=4.0)
    engine = settings_group(settings, EngineSettings, worker_id="w", reclaim_own=False)
    assert (engine.default_concurrency, engine.lease_seconds) == (9, 4.0)
    assert settings_group(settings, Limits).max_concurrency == 99
    pipeline = settings_group(BuilderSettings(agent_concurrency=2, model="openai:gpt"), PipelineSettings,
                              workflow_address="wf:1")
    assert (pipeline.agent_concurrency, pipeline.model, pipeline.workflow_address) == (2, "openai:gpt", "wf:1")
