"""What each RegisterAgent request id was used for, so a reuse with a different request can be refused.

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

SCHEMA = "registry"


def _schema() -> str | None:
    # ALTER TABLE is not schema-translated on SQLite (one file per service, no schemas): name none there.
    return SCHEMA if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    """Adds ``register_requests.fingerprint``; rows from before stay NULL and match any replay."""
    op.add_column("register_requests", sa.Column("fingerprint", sa.String(64), nullable=True), schema=_schema())


def downgrade() -> None:
    """Drops ``register_requests.fingerprint``."""
    op.drop_column("register_requests", "fingerprint", schema=_schema())
