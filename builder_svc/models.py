"""Tables of the ``builder`` schema; only this service's repository touches them.

Times are UTC epoch seconds (double precision), so they compare and encode the same on Postgres and SQLite.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from builder_svc.config import SCHEMA
from tdev_common.db import service_metadata

Json: sa.JSON[object] = sa.JSON()
Seconds: sa.Double[float] = sa.Double()


class Base(DeclarativeBase):
    """Declarative base bound to the ``builder`` schema."""

    metadata = service_metadata(SCHEMA)


class BuildRow(Base):
    """One build: its request, its progress (written with each event) and its lease."""

    __tablename__ = "builds"

    build_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    requirements: Mapped[str] = mapped_column(sa.Text)
    constraints: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[int] = mapped_column(sa.SmallInteger)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    # sha256 of the request without its id; NULL for rows stored before migration 0004 (they match any replay).
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    stages: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(Json)
    usage: Mapped[dict[str, Any]] = mapped_column(Json)
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    package: Mapped[dict[str, Any] | None] = mapped_column(Json)
    registered_agents: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    elapsed_seconds: Mapped[float] = mapped_column(Seconds, default=0.0)
    last_sequence: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    create_time: Mapped[float] = mapped_column(Seconds)
    update_time: Mapped[float] = mapped_column(Seconds)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(100))
    lease_epoch: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    lease_expires: Mapped[float | None] = mapped_column(Seconds)
    # Registry labels of the versions an ended build registered: an outbox retried until the registry took them.
    marks_state: Mapped[str | None] = mapped_column(sa.String(16))
    marks_due: Mapped[float | None] = mapped_column(Seconds)
    marks_attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    marks_epoch: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    marks_error: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.Index("ix_builds_create_time", "create_time", "build_id"),
        sa.Index("ix_builds_state", "state", "lease_expires"),
        sa.Index("ix_builds_marks", "marks_state", "marks_due"),
    )


class BuildEventRow(Base):
    """One stored event of a build; (build_id, sequence) has no gaps."""

    __tablename__ = "build_events"

    build_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    sequence: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    type: Mapped[int] = mapped_column(sa.SmallInteger)
    stage: Mapped[int] = mapped_column(sa.SmallInteger)
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]] = mapped_column(Json)
    duration_ms: Mapped[float] = mapped_column(Seconds)
    usage: Mapped[dict[str, Any] | None] = mapped_column(Json)
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    time: Mapped[float] = mapped_column(Seconds)
