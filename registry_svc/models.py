"""Tables of the ``registry`` schema; only this service's repository touches them."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from common.db import service_metadata
from registry_svc.config import SCHEMA


class Base(DeclarativeBase):
    """Declarative base bound to the ``registry`` schema."""

    metadata = service_metadata(SCHEMA)
