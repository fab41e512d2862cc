"""Every candidate a run evaluates, so that callers can list a run's lineage (ListCandidates).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# On SQLite the schema is translated away by the engine (tdev_common.db), so it can always be named.
SCHEMA = "evolution"


def upgrade() -> None:
    """Creates ``candidates``; runs stored before it list only the candidates of generations after it."""
    op.create_table(
        "candidates",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], [f"{SCHEMA}.runs.run_id"],
            name="fk_candidates_run_id_runs", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "code_hash", name="pk_candidates"),
        schema=SCHEMA,
    )
    op.create_index("ix_candidates_run_generation", "candidates", ["run_id", "generation", "code_hash"],
                    schema=SCHEMA)


def downgrade() -> None:
    """Drops ``candidates``."""
    op.drop_table("candidates", schema=SCHEMA)
