"""Tables of the ``builder`` schema; only this service's repository touches them."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from builder_svc.config import SCHEMA
from common.db import service_metadata


class Base(DeclarativeBase):
    """Declarative base bound to the ``builder`` schema."""

    metadata = service_metadata(SCHEMA)
