"""A canary's absolute latency margin: a slower median counts only this many milliseconds above stable's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tdev_common.db import altered_schema

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


def upgrade() -> None:
    """Adds ``agent_aliases.min_latency_increase_ms``; 0 (the default) on existing rows."""
    op.add_column("agent_aliases", sa.Column("min_latency_increase_ms", sa.Float, nullable=False,
                                             server_default="0"), schema=altered_schema(SCHEMA))


def downgrade() -> None:
    """Drops ``agent_aliases.min_latency_increase_ms``."""
    op.drop_column("agent_aliases", "min_latency_increase_ms", schema=altered_schema(SCHEMA))
