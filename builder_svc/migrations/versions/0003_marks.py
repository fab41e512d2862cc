"""Registry marking of ended builds: an outbox of the labels still to set on the versions each build registered.

Builds that ended before this revision are queued too, so their versions get marked once the registry offers
UpdateAgentLabels.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tdev_common.db import altered_schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "builder"
ENDED = (3, 4, 5)  # SUCCEEDED, FAILED, CANCELLED


def upgrade() -> None:
    """Adds the marking columns and queues every ended build."""
    schema = altered_schema(SCHEMA)
    for column in (sa.Column("marks_state", sa.String(16), nullable=True),
                   sa.Column("marks_due", sa.Double, nullable=True),
                   sa.Column("marks_attempts", sa.Integer, nullable=False, server_default="0"),
                   sa.Column("marks_epoch", sa.BigInteger, nullable=False, server_default="0"),
                   sa.Column("marks_error", sa.Text, nullable=True)):
        op.add_column("builds", column, schema=schema)
    op.create_index("ix_builds_marks", "builds", ["marks_state", "marks_due"], schema=SCHEMA)
    builds = sa.table("builds", sa.column("state", sa.SmallInteger), sa.column("marks_state", sa.String),
                      sa.column("marks_due", sa.Double), schema=schema)
    op.execute(builds.update().where(builds.c.state.in_(ENDED)).values(marks_state="pending", marks_due=0.0))


def downgrade() -> None:
    """Drops the marking columns."""
    op.drop_index("ix_builds_marks", table_name="builds", schema=SCHEMA)
    for column in ("marks_error", "marks_epoch", "marks_attempts", "marks_due", "marks_state"):
        op.drop_column("builds", column, schema=altered_schema(SCHEMA))
