"""Runs (with checkpoint and lease) and their events.

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

# On SQLite the schema is translated away by the engine (tdev_common.db), so it can always be named.
SCHEMA = "evolution"


def upgrade() -> None:
    """Creates ``runs`` and ``events``."""
    schema = SCHEMA
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("agent_name", sa.String(100), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.String(32), nullable=False),
        sa.Column("stop_message", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("suite", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed_code", sa.Text(), nullable=False),
        sa.Column("seed_fitness", sa.Float(), nullable=False),
        sa.Column("best", sa.JSON(), nullable=True),
        sa.Column("promotion", sa.JSON(), nullable=True),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=True),
        sa.Column("checkpoint_generation", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
        sa.UniqueConstraint("request_id", name="uq_runs_request_id"),
        schema=schema,
    )
    op.create_index("ix_runs_agent_created", "runs", ["agent_id", "create_time"], schema=schema)
    op.create_index("ix_runs_created", "runs", ["create_time", "run_id"], schema=schema)
    op.create_index("ix_runs_state_lease", "runs", ["state", "lease_until"], schema=schema)
    op.create_table(
        "events",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], [f"{SCHEMA}.runs.run_id"],
            name="fk_events_run_id_runs", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "sequence", name="pk_events"),
        schema=schema,
    )


def downgrade() -> None:
    """Drops ``events`` and ``runs``."""
    op.drop_table("events", schema=SCHEMA)
    op.drop_table("runs", schema=SCHEMA)
