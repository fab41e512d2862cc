"""Evolution policies (one per agent) and why a run started.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tdev_common.db import altered_schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "evolution"


def upgrade() -> None:
    """Adds the ``policies`` table and ``runs.automatic`` / ``runs.start_reason``."""
    op.create_table(
        "policies",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        schema=altered_schema(SCHEMA),
    )
    op.add_column("runs", sa.Column("automatic", sa.Boolean, nullable=False, server_default=sa.false()),
                  schema=altered_schema(SCHEMA))
    op.add_column("runs", sa.Column("start_reason", sa.Text, nullable=False, server_default=""),
                  schema=altered_schema(SCHEMA))


def downgrade() -> None:
    """Drops what upgrade added."""
    op.drop_column("runs", "start_reason", schema=altered_schema(SCHEMA))
    op.drop_column("runs", "automatic", schema=altered_schema(SCHEMA))
    op.drop_table("policies", schema=altered_schema(SCHEMA))
