"""What each request id of CreateWorkflow and StartExecution was used for, so a reuse with another request is refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tdev_common.db import altered_schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "workflow"


def upgrade() -> None:
    """Adds ``request_fingerprint`` to workflows and executions; rows from before stay NULL (match any replay)."""
    for table in ("workflows", "executions"):
        op.add_column(table, sa.Column("request_fingerprint", sa.String(64), nullable=True),
                      schema=altered_schema(SCHEMA))


def downgrade() -> None:
    """Drops the ``request_fingerprint`` columns."""
    for table in ("workflows", "executions"):
        op.drop_column(table, "request_fingerprint", schema=altered_schema(SCHEMA))
