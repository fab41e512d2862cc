"""Alembic environment of the evolution service; run through tdev_common.db.migrate()."""

from evolution_svc.models import Base
from tdev_common.db import run_migrations_in_env

run_migrations_in_env(Base.metadata)
