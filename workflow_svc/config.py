"""Settings of the workflow service (env prefix ``TDEV_WORKFLOW_``, Parameter Store section ``workflow``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tdev_common.config import ServiceSettings

SCHEMA = "workflow"


class WorkflowSettings(ServiceSettings):
    """Knobs of the workflow service."""

    model_config = SettingsConfigDict(env_prefix="TDEV_WORKFLOW_", extra="ignore")
    ssm_section: ClassVar[str | None] = "workflow"

    port: int = Field(50052, description="Port the workflow service listens on.")
    max_nodes: int = Field(1000, description="Most nodes in one workflow definition.")
    max_concurrency: int = Field(16, description="Default most nodes running at once per execution.")
    default_timeout_seconds: float = Field(30.0, description="Per-attempt node timeout when none is set.")
    max_timeout_seconds: float = Field(3600.0, description="Largest per-attempt timeout a node may ask for.")
    max_concurrency_limit: int = Field(256, description="Largest max_concurrency a workflow may ask for.")
    max_active_executions: int = Field(
        64, description="Most executions one replica runs at once; the rest wait for another replica."
    )
    worker_id: str = Field(
        "", description="Stable name of this replica; on restart it takes back its own executions at once."
    )
    lease_seconds: float = Field(
        15.0,
        description="Lease of a running execution; a crashed replica's executions move after lease + claim interval.",
    )
    claim_interval_seconds: float = Field(1.0, description="How often a replica looks for executions to run or resume.")
    flush_interval_seconds: float = Field(
        0.01, description="Least time between two commits of one execution's changes (group commit)."
    )
    inline_output_bytes: int = Field(
        65536, description="Outputs larger than this are sent in events as a reference."
    )
    watch_poll_seconds: float = Field(2.0, description="Safety poll of the event table by quiet watchers.")
    watch_buffer_events: int = Field(
        10000, description="Live events buffered per watcher; beyond it the watcher catches up from storage."
    )
    cancel_wait_seconds: float = Field(2.0, description="How long CancelExecution waits for the stop.")
    report_interval_seconds: float = Field(0.5, description="How often node outcomes go to the registry.")
    report_batch_size: int = Field(500, description="Most outcomes per RecordExecutions call.")
    warm_batch_size: int = Field(
        8, ge=1,
        description="Most nodes of one opted-in agent version that share one warm sandboxed process at a time "
        "(docs/workflow.md, \"Warm-process reuse\").",
    )
    agent_cache_size: int = Field(512, description="Agent versions whose code is kept in memory.")
    registry_deadline_seconds: float = Field(10.0, description="Deadline of calls to the registry.")
    db_pool_size: int = Field(20, description="Database connections per replica.")
    redis_channel: str = Field("tdev:workflow", description="Redis pub/sub channel shared by the replicas.")
