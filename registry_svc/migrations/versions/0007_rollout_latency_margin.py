"""A canary's absolute latency margin: a slower median counts only this many milliseconds above stable's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


def _schema() -> str | None:
    # ALTER TABLE is not schema-translated on SQLite (one file per service, no schemas): name none there.
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    """Adds ``agent_aliases.min_latency_increase_ms``; 0 (the default) on existing rows."""
    op.add_column("agent_aliases", sa.Column("min_latency_increase_ms", sa.Float, nullable=False,
                                             server_default="0"), schema=_schema())


def downgrade() -> None:
    """Drops ``agent_aliases.min_latency_increase_ms``."""
    op.drop_column("agent_aliases", "min_latency_increase_ms", schema=_schema())
