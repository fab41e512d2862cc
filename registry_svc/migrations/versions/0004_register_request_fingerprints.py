"""What each RegisterAgent request id was used for, so a reuse with a different request can be refused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tdev_common.db import altered_schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "registry"


def upgrade() -> None:
    """Adds ``register_requests.fingerprint``; rows from before stay NULL and match any replay."""
    op.add_column("register_requests", sa.Column("fingerprint", sa.String(64), nullable=True),
                  schema=altered_schema(SCHEMA))


def downgrade() -> None:
    """Drops ``register_requests.fingerprint``."""
    op.drop_column("register_requests", "fingerprint", schema=altered_schema(SCHEMA))
