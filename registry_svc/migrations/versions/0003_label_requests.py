"""Request ids of UpdateAgentLabels (labels themselves live in agent_versions.labels already).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry_svc.models import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


def upgrade() -> None:
    """Creates ``label_requests``."""
    op.create_table(
        "label_requests",
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_label_requests"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    """Drops ``label_requests``."""
    op.drop_table("label_requests", schema=SCHEMA)
