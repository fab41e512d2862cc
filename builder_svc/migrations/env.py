"""Alembic environment of the builder service; run through common.db.migrate()."""

from builder_svc.models import Base
from common.db import run_migrations_in_env

run_migrations_in_env(Base.metadata)
