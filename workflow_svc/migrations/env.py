"""Alembic environment of the workflow service; run through tdev_common.db.migrate()."""

from tdev_common.db import run_migrations_in_env
from workflow_svc.models import Base

run_migrations_in_env(Base.metadata)
