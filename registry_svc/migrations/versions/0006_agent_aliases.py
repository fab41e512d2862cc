"""Aliases of agents (stable, canary, any name) and the events of their rollouts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry_svc.models import BigId, UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


def upgrade() -> None:
    """Creates ``agent_aliases`` and ``alias_events``."""
    op.create_table(
        "agent_aliases",
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("alias", sa.String(40), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("traffic_fraction", sa.Float, nullable=False),
        sa.Column("min_sample", sa.Integer, nullable=False),
        sa.Column("max_success_rate_drop", sa.Float, nullable=False),
        sa.Column("max_latency_ratio", sa.Float, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "alias", name="pk_agent_aliases"),
        sa.ForeignKeyConstraint(["agent_id", "version"], [f"{SCHEMA}.agent_versions.agent_id",
                                                          f"{SCHEMA}.agent_versions.version"],
                                name="fk_agent_aliases_agent_id_agent_versions"),
        schema=SCHEMA,
    )
    op.create_table(
        "alias_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("alias", sa.String(40), nullable=False),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alias_events"),
        schema=SCHEMA,
    )
    op.create_index("ix_alias_events_agent", "alias_events", ["agent_id", "id"], schema=SCHEMA)


def downgrade() -> None:
    """Drops ``alias_events`` and ``agent_aliases``."""
    op.drop_index("ix_alias_events_agent", table_name="alias_events", schema=SCHEMA)
    op.drop_table("alias_events", schema=SCHEMA)
    op.drop_table("agent_aliases", schema=SCHEMA)
