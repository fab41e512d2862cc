"""Production cases of agent versions, captured with their execution records and labelled by callers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from registry_svc.models import Json, NullableJson, UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


def upgrade() -> None:
    """Creates ``agent_cases``."""
    op.create_table(
        "agent_cases",
        sa.Column("case_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("inputs", Json, nullable=False),
        sa.Column("output", NullableJson, nullable=True),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("expected", NullableJson, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("labelled_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("case_id", name="pk_agent_cases"),
        sa.UniqueConstraint("execution_id", name="uq_agent_cases_execution_id"),
        sa.ForeignKeyConstraint(["agent_id", "version"], [f"{SCHEMA}.agent_versions.agent_id",
                                                          f"{SCHEMA}.agent_versions.version"],
                                name="fk_agent_cases_agent_id_agent_versions"),
        schema=SCHEMA,
    )
    op.create_index("ix_agent_cases_agent_created", "agent_cases", ["agent_id", "created_at"], schema=SCHEMA)


def downgrade() -> None:
    """Drops ``agent_cases``."""
    op.drop_index("ix_agent_cases_agent_created", table_name="agent_cases", schema=SCHEMA)
    op.drop_table("agent_cases", schema=SCHEMA)
