"""Tables of the ``workflow`` schema; only this service's repository touches them."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from common.db import service_metadata
from workflow_svc.config import SCHEMA


class Base(DeclarativeBase):
    """Declarative base bound to the ``workflow`` schema."""

    metadata = service_metadata(SCHEMA)
