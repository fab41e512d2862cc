"""What each StartEvolution request id was used for, so a reuse with another request is refused.

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

SCHEMA = "evolution"


def upgrade() -> None:
    """Adds ``runs.request_fingerprint``; rows from before stay NULL and match any replay."""
    op.add_column("runs", sa.Column("request_fingerprint", sa.String(64), nullable=True), schema=altered_schema(SCHEMA))


def downgrade() -> None:
    """Drops ``runs.request_fingerprint``."""
    op.drop_column("runs", "request_fingerprint", schema=altered_schema(SCHEMA))
