"""Workflows, executions with leases, node runs, events and the registry outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "workflow"
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Creates the tables."""
    op.create_table(
        "workflows",
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("create_time", sa.Double, nullable=False),
        sa.Column("update_time", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", name="pk_workflows"),
        sa.UniqueConstraint("request_id", name="uq_workflows_request_id"),
        schema=SCHEMA,
    )
    op.create_index("ix_workflows_create_time", "workflows", ["create_time", "workflow_id"], schema=SCHEMA)
    op.create_table(
        "executions",
        sa.Column("execution_id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("failure_policy", sa.SmallInteger, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.Double, nullable=False),
        sa.Column("update_time", sa.Double, nullable=False),
        sa.Column("start_time", sa.Double, nullable=True),
        sa.Column("end_time", sa.Double, nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_epoch", sa.BigInteger, nullable=False),
        sa.Column("lease_expires", sa.Double, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("cancel_reason", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_executions"),
        sa.UniqueConstraint("request_id", name="uq_executions_request_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_executions_create_time", "executions", ["create_time", "execution_id"], schema=SCHEMA
    )
    op.create_index("ix_executions_workflow_id", "executions", ["workflow_id"], schema=SCHEMA)
    op.create_index("ix_executions_state", "executions", ["state", "lease_expires"], schema=SCHEMA)
    op.create_table(
        "node_runs",
        sa.Column("execution_id", sa.String(40), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("output", sa.JSON, nullable=True),
        sa.Column("output_ref", sa.String(200), nullable=False),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("start_time", sa.Double, nullable=True),
        sa.Column("end_time", sa.Double, nullable=True),
        sa.Column("duration_ms", sa.Double, nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "node_id", name="pk_node_runs"),
        schema=SCHEMA,
    )
    op.create_table(
        "events",
        sa.Column("execution_id", sa.String(40), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Double, nullable=False),
        sa.Column("output", sa.JSON, nullable=True),
        sa.Column("output_ref", sa.String(200), nullable=False),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("backoff_seconds", sa.Double, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("worker_id", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "sequence", name="pk_events"),
        schema=SCHEMA,
    )
    op.create_table(
        "registry_outbox",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("record", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry_outbox"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    """Drops the tables."""
    for table in ("registry_outbox", "events", "node_runs", "executions", "workflows"):
        op.drop_table(table, schema=SCHEMA)
