"""Alembic environment of the registry service; run through tdev_common.db.migrate()."""

from registry_svc.models import Base
from tdev_common.db import run_migrations_in_env

run_migrations_in_env(Base.metadata)
