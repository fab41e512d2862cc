"""What each StartBuild / BuildService request id was used for, so a reuse with another request is refused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "builder"


def _schema() -> str | None:
    # ALTER TABLE is not schema-translated on SQLite (one file per service, no schemas): name none there.
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    """Adds ``builds.request_fingerprint``; rows from before stay NULL and match any replay."""
    op.add_column("builds", sa.Column("request_fingerprint", sa.String(64), nullable=True), schema=_schema())


def downgrade() -> None:
    """Drops ``builds.request_fingerprint``."""
    op.drop_column("builds", "request_fingerprint", schema=_schema())
