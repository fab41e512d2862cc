"""Agents, their versions (every column of the seed's agents.registry), lineage, request ids, executions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry_svc.models import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Creates the tables (and, on Postgres, the full-text index)."""
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("latest_version", sa.String(32), nullable=False),
        sa.Column("latest_version_id", BigId, nullable=False),
        sa.Column("version_count", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
        schema=SCHEMA,
    )
    op.create_table(
        "agent_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("code_size_bytes", sa.Integer, nullable=False),
        sa.Column("class_name", sa.String(200), nullable=False),
        sa.Column("declared_capabilities", Json, nullable=False),
        sa.Column("execute_is_async", sa.Boolean, nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("ai_capabilities", Json, nullable=True),
        sa.Column("ai_quality_score", sa.Float, nullable=True),
        sa.Column("ai_analysis_timestamp", UtcDateTime, nullable=True),
        sa.Column("ai_model_used", sa.Text, nullable=True),
        sa.Column("analysis_models", Json, nullable=False),
        sa.Column("analysis_state", sa.String(16), nullable=False),
        sa.Column("analysis_static_metrics", Json, nullable=False),
        sa.Column("analysis_duration_ms", sa.Float, nullable=False),
        sa.Column("analysis_error", sa.Text, nullable=False),
        sa.Column("analysis_owner", sa.String(64), nullable=True),
        sa.Column("analysis_lease_expires_at", UtcDateTime, nullable=True),
        sa.Column("analysis_attempts", sa.Integer, nullable=False),
        sa.Column("execution_count", sa.BigInteger, nullable=False),
        sa.Column("success_count", sa.BigInteger, nullable=False),
        sa.Column("failure_count", sa.BigInteger, nullable=False),
        sa.Column("average_execution_time", sa.Float, nullable=False),
        sa.Column("total_execution_time", sa.Float, nullable=False),
        sa.Column("p95_execution_time", sa.Float, nullable=False),
        sa.Column("total_tokens_used", sa.BigInteger, nullable=False),
        sa.Column("total_cost", sa.Numeric(20, 9), nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("capabilities_text", sa.Text, nullable=False),
        sa.Column("search_embedding", Json, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_versions"),
        sa.ForeignKeyConstraint(["agent_id"], [f"{SCHEMA}.agents.agent_id"],
                                name="fk_agent_versions_agent_id_agents"),
        sa.UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent_id_version"),
        sa.UniqueConstraint("agent_id", "code_hash", name="uq_agent_versions_agent_id_code_hash"),
        schema=SCHEMA,
    )
    op.create_index("ix_agent_versions_analysis_state", "agent_versions", ["analysis_state"], schema=SCHEMA)
    op.create_table(
        "agent_lineage",
        sa.Column("child_agent_id", sa.String(40), nullable=False),
        sa.Column("child_version", sa.String(32), nullable=False),
        sa.Column("parent_agent_id", sa.String(40), nullable=False),
        sa.Column("parent_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("child_agent_id", "child_version", "parent_agent_id", "parent_version",
                                name="pk_agent_lineage"),
        sa.ForeignKeyConstraint(["child_agent_id", "child_version"],
                                [f"{SCHEMA}.agent_versions.agent_id", f"{SCHEMA}.agent_versions.version"],
                                name="fk_agent_lineage_child_agent_id_agent_versions"),
        sa.ForeignKeyConstraint(["parent_agent_id", "parent_version"],
                                [f"{SCHEMA}.agent_versions.agent_id", f"{SCHEMA}.agent_versions.version"],
                                name="fk_agent_lineage_parent_agent_id_agent_versions"),
        schema=SCHEMA,
    )
    op.create_index("ix_agent_lineage_parent", "agent_lineage", ["parent_agent_id", "parent_version"],
                    schema=SCHEMA)
    op.create_table(
        "register_requests",
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_register_requests"),
        schema=SCHEMA,
    )
    op.create_table(
        "execution_records",
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("finish_time", UtcDateTime, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_execution_records"),
        sa.ForeignKeyConstraint(["agent_id", "version"],
                                [f"{SCHEMA}.agent_versions.agent_id", f"{SCHEMA}.agent_versions.version"],
                                name="fk_execution_records_agent_id_agent_versions"),
        schema=SCHEMA,
    )
    op.create_index("ix_execution_records_version_finish", "execution_records",
                    ["agent_id", "version", "finish_time"], schema=SCHEMA)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_agent_versions_search ON {SCHEMA}.agent_versions "
                   "USING gin (to_tsvector('english', search_text))")


def downgrade() -> None:
    """Drops the tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {SCHEMA}.ix_agent_versions_search")
    for table in ("execution_records", "register_requests", "agent_lineage", "agent_versions", "agents"):
        op.drop_table(table, schema=SCHEMA)
