"""Tables of the ``registry`` schema; only this service's repository touches them.

``agent_versions`` holds every column of the seed plan's ``agents.registry`` table (agent_id, name,
version, code, code_hash, ai_capabilities, ai_quality_score, ai_analysis_timestamp, ai_model_used,
execution/success/failure counts, average_execution_time, total_tokens_used, total_cost, created_at,
updated_at), one row per version; ``agents`` is the identity row per agent with its latest version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from registry_svc.config import SCHEMA
from tdev_common.db import service_metadata

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
# None stored as SQL NULL rather than JSON null, so "IS NULL" means "not set" (an unlabelled case).
NullableJson = sa.JSON(none_as_null=True).with_variant(sa.dialects.postgresql.JSONB(none_as_null=True), "postgresql")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both Postgres (timestamptz) and SQLite (naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base bound to the ``registry`` schema."""

    metadata = service_metadata(SCHEMA)


class AgentRow(Base):
    """One agent: stable id, unique name and a pointer to its latest version."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    latest_version: Mapped[str] = mapped_column(sa.String(32))
    latest_version_id: Mapped[int] = mapped_column(BigId)
    version_count: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AgentVersionRow(Base):
    """One version of one agent, with its analysis and execution metrics (the seed's registry row)."""

    __tablename__ = "agent_versions"
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent_id_version"),
        sa.UniqueConstraint("agent_id", "code_hash", name="uq_agent_versions_agent_id_code_hash"),
        sa.Index("ix_agent_versions_analysis_state", "analysis_state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("agents.agent_id"))
    name: Mapped[str] = mapped_column(sa.String(100))
    version: Mapped[str] = mapped_column(sa.String(32))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    code: Mapped[str] = mapped_column(sa.Text)
    code_hash: Mapped[str] = mapped_column(sa.String(64))
    code_size_bytes: Mapped[int] = mapped_column(sa.Integer)
    class_name: Mapped[str] = mapped_column(sa.String(200))
    declared_capabilities: Mapped[dict[str, Any]] = mapped_column(Json)
    execute_is_async: Mapped[bool] = mapped_column(sa.Boolean)
    labels: Mapped[dict[str, str]] = mapped_column(Json)
    ai_capabilities: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    ai_quality_score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    ai_analysis_timestamp: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ai_model_used: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    analysis_models: Mapped[list[str]] = mapped_column(Json)
    analysis_state: Mapped[str] = mapped_column(sa.String(16))
    analysis_static_metrics: Mapped[dict[str, Any]] = mapped_column(Json)
    analysis_duration_ms: Mapped[float] = mapped_column(sa.Float, default=0.0)
    analysis_error: Mapped[str] = mapped_column(sa.Text, default="")
    analysis_owner: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    analysis_lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    analysis_attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    execution_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    success_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    failure_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    average_execution_time: Mapped[float] = mapped_column(sa.Float, default=0.0)
    total_execution_time: Mapped[float] = mapped_column(sa.Float, default=0.0)
    p95_execution_time: Mapped[float] = mapped_column(sa.Float, default=0.0)
    total_tokens_used: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total_cost: Mapped[float] = mapped_column(sa.Numeric(20, 9, asdecimal=False), default=0)
    search_text: Mapped[str] = mapped_column(sa.Text, default="")
    capabilities_text: Mapped[str] = mapped_column(sa.Text, default="")
    search_embedding: Mapped[list[float] | None] = mapped_column(Json, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LineageRow(Base):
    """child was derived from parent (evolution, builder fixes)."""

    __tablename__ = "agent_lineage"
    __table_args__ = (
        sa.ForeignKeyConstraint(["child_agent_id", "child_version"],
                                ["agent_versions.agent_id", "agent_versions.version"]),
        sa.ForeignKeyConstraint(["parent_agent_id", "parent_version"],
                                ["agent_versions.agent_id", "agent_versions.version"]),
        sa.Index("ix_agent_lineage_parent", "parent_agent_id", "parent_version"),
    )

    child_agent_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    child_version: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    parent_agent_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    parent_version: Mapped[str] = mapped_column(sa.String(32), primary_key=True)


class RegisterRequestRow(Base):
    """AIP-155 idempotency keys of RegisterAgent and the version each one produced."""

    __tablename__ = "register_requests"

    request_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(40))
    version: Mapped[str] = mapped_column(sa.String(32))
    # sha256 of the request without its id; NULL for rows stored before 0004 (they match any replay).
    fingerprint: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LabelRequestRow(Base):
    """AIP-155 idempotency keys of UpdateAgentLabels: the version each changed and what the change was."""

    __tablename__ = "label_requests"

    request_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(40))
    version: Mapped[str] = mapped_column(sa.String(32))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ExecutionRow(Base):
    """One recorded execution; its id makes RecordExecutions idempotent, its duration feeds p95."""

    __tablename__ = "execution_records"
    __table_args__ = (
        sa.ForeignKeyConstraint(["agent_id", "version"], ["agent_versions.agent_id", "agent_versions.version"]),
        sa.Index("ix_execution_records_version_finish", "agent_id", "version", "finish_time"),
    )

    execution_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(40))
    version: Mapped[str] = mapped_column(sa.String(32))
    success: Mapped[bool] = mapped_column(sa.Boolean)
    duration_ms: Mapped[float] = mapped_column(sa.Float)
    tokens: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(sa.Float, default=0.0)
    error_type: Mapped[str] = mapped_column(sa.String(200), default="")
    finish_time: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CaseRow(Base):
    """A production case of one agent version (captured by RecordExecutions), labelled or not."""

    __tablename__ = "agent_cases"
    __table_args__ = (
        sa.ForeignKeyConstraint(["agent_id", "version"], ["agent_versions.agent_id", "agent_versions.version"]),
        sa.Index("ix_agent_cases_agent_created", "agent_id", "created_at"),
    )

    case_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(40))
    version: Mapped[str] = mapped_column(sa.String(32))
    execution_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    success: Mapped[bool] = mapped_column(sa.Boolean)
    inputs: Mapped[dict[str, Any]] = mapped_column(Json)
    output: Mapped[dict[str, Any] | None] = mapped_column(NullableJson, nullable=True)
    error_type: Mapped[str] = mapped_column(sa.String(200), default="")
    error_message: Mapped[str] = mapped_column(sa.Text, default="")
    source: Mapped[str] = mapped_column(sa.String(500), default="")
    expected: Mapped[dict[str, Any] | None] = mapped_column(NullableJson, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    labelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AliasRow(Base):
    """An alias of an agent pointing at one of its versions (a canary with its share and rollout policy)."""

    __tablename__ = "agent_aliases"
    __table_args__ = (
        sa.ForeignKeyConstraint(["agent_id", "version"], ["agent_versions.agent_id", "agent_versions.version"]),
    )

    agent_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    alias: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    version: Mapped[str] = mapped_column(sa.String(32))
    traffic_fraction: Mapped[float] = mapped_column(sa.Float, default=0.0)
    min_sample: Mapped[int] = mapped_column(sa.Integer, default=0)
    max_success_rate_drop: Mapped[float] = mapped_column(sa.Float, default=0.0)
    max_latency_ratio: Mapped[float] = mapped_column(sa.Float, default=0.0)
    min_latency_increase_ms: Mapped[float] = mapped_column(sa.Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AliasEventRow(Base):
    """What happened to an agent's aliases, newest last."""

    __tablename__ = "alias_events"
    __table_args__ = (sa.Index("ix_alias_events_agent", "agent_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(sa.String(40))
    alias: Mapped[str] = mapped_column(sa.String(40))
    kind: Mapped[int] = mapped_column(sa.Integer)
    version: Mapped[str] = mapped_column(sa.String(32))
    message: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
