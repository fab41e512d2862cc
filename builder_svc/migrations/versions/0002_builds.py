"""Builds with their progress and leases, and their events.

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

SCHEMA = "builder"


def upgrade() -> None:
    """Creates the tables."""
    op.create_table(
        "builds",
        sa.Column("build_id", sa.String(40), nullable=False),
        sa.Column("requirements", sa.Text, nullable=False),
        sa.Column("constraints", sa.JSON, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("stages", sa.JSON, nullable=False),
        sa.Column("checkpoint", sa.JSON, nullable=False),
        sa.Column("usage", sa.JSON, nullable=False),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("package", sa.JSON, nullable=True),
        sa.Column("registered_agents", sa.JSON, nullable=False),
        sa.Column("elapsed_seconds", sa.Double, nullable=False),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.Double, nullable=False),
        sa.Column("update_time", sa.Double, nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_epoch", sa.BigInteger, nullable=False),
        sa.Column("lease_expires", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("build_id", name="pk_builds"),
        sa.UniqueConstraint("request_id", name="uq_builds_request_id"),
        schema=SCHEMA,
    )
    op.create_index("ix_builds_create_time", "builds", ["create_time", "build_id"], schema=SCHEMA)
    op.create_index("ix_builds_state", "builds", ["state", "lease_expires"], schema=SCHEMA)
    op.create_table(
        "build_events",
        sa.Column("build_id", sa.String(40), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("stage", sa.SmallInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("duration_ms", sa.Double, nullable=False),
        sa.Column("usage", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("build_id", "sequence", name="pk_build_events"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    """Drops the tables."""
    op.drop_table("build_events", schema=SCHEMA)
    op.drop_index("ix_builds_state", table_name="builds", schema=SCHEMA)
    op.drop_index("ix_builds_create_time", table_name="builds", schema=SCHEMA)
    op.drop_table("builds", schema=SCHEMA)
