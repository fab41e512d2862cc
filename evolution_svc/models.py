"""Tables of the ``evolution`` schema; only this service's repository touches them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from evolution_svc.config import SCHEMA
from tdev_common.db import service_metadata


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite returns naive ones otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base bound to the ``evolution`` schema."""

    metadata = service_metadata(SCHEMA)


class RunRow(Base):
    """One evolution run with its latest checkpoint and lease."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    agent_id: Mapped[str] = mapped_column(sa.String(64))
    agent_name: Mapped[str] = mapped_column(sa.String(100))
    agent_version: Mapped[str] = mapped_column(sa.String(64))
    request_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    # sha256 of the request without its id; NULL for rows stored before migration 0003 (they match any replay).
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16))
    stop_reason: Mapped[str] = mapped_column(sa.String(32), default="unspecified")
    stop_message: Mapped[str] = mapped_column(sa.Text, default="")
    error: Mapped[str] = mapped_column(sa.Text, default="")
    suite: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    config: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    seed_code: Mapped[str] = mapped_column(sa.Text)
    seed_fitness: Mapped[float] = mapped_column(sa.Float, default=0.0)
    best: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    promotion: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    last_sequence: Mapped[int] = mapped_column(sa.Integer, default=0)
    checkpoint: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    checkpoint_generation: Mapped[int] = mapped_column(sa.Integer, default=0)
    owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    automatic: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    start_reason: Mapped[str] = mapped_column(sa.Text, default="", server_default="")

    __table_args__ = (
        sa.Index("ix_runs_agent_created", "agent_id", "create_time"),
        sa.Index("ix_runs_created", "create_time", "run_id"),
        sa.Index("ix_runs_state_lease", "state", "lease_until"),
    )


class EventRow(Base):
    """One stored event of a run; (run_id, sequence) has no gaps."""

    __tablename__ = "events"

    run_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(32))
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


class PolicyRow(Base):
    """One agent's evolution policy: its settings (spec), what its loop is doing (status) and the lease of the
    replica working on it."""

    __tablename__ = "policies"

    agent_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(sa.Boolean)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    status: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)


class CandidateRow(Base):
    """One candidate a run evaluated (the seed, or a child of a generation), stored once per code hash."""

    __tablename__ = "candidates"

    run_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    code_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    generation: Mapped[int] = mapped_column(sa.Integer)
    code: Mapped[str] = mapped_column(sa.Text)
    # The rest of the candidate (codec.candidate_to_json without its code): fitness, operator, parents, ...
    body: Mapped[dict[str, Any]] = mapped_column(sa.JSON)

    __table_args__ = (sa.Index("ix_candidates_run_generation", "run_id", "generation", "code_hash"),)
