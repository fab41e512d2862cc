"""Alembic environment of the registry service; run through common.db.migrate()."""

from common.db import run_migrations_in_env
from registry_svc.models import Base

run_migrations_in_env(Base.metadata)
