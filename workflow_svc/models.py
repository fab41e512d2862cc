"""Tables of the ``workflow`` schema; only this service's repository touches them.

Times are stored as UTC epoch seconds (double precision): the event table is the hot path, and plain
floats compare and encode the same on Postgres and SQLite.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tdev_common.db import service_metadata
from workflow_svc.config import SCHEMA

Json: sa.JSON[object] = sa.JSON()
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Seconds: sa.Double[float] = sa.Double()


class Base(DeclarativeBase):
    """Declarative base bound to the ``workflow`` schema."""

    metadata = service_metadata(SCHEMA)


class WorkflowRow(Base):
    """A stored, validated definition (immutable) with its plan."""

    __tablename__ = "workflows"

    workflow_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[str] = mapped_column(sa.String(64))
    description: Mapped[str] = mapped_column(sa.Text)
    definition: Mapped[dict[str, Any]] = mapped_column(Json)
    plan: Mapped[dict[str, Any]] = mapped_column(Json)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    # sha256 of the request without its id; NULL for rows stored before migration 0003 (they match any replay).
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    create_time: Mapped[float] = mapped_column(Seconds)
    update_time: Mapped[float] = mapped_column(Seconds)

    __table_args__ = (sa.Index("ix_workflows_create_time", "create_time", "workflow_id"),)


class ExecutionRow(Base):
    """One execution, its lease (owner, epoch, expiry) and its cancellation request."""

    __tablename__ = "executions"

    execution_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(sa.String(40))
    state: Mapped[int] = mapped_column(sa.SmallInteger)
    inputs: Mapped[dict[str, Any]] = mapped_column(Json)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(Json)
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    failure_policy: Mapped[int] = mapped_column(sa.SmallInteger)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    last_sequence: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    create_time: Mapped[float] = mapped_column(Seconds)
    update_time: Mapped[float] = mapped_column(Seconds)
    start_time: Mapped[float | None] = mapped_column(Seconds)
    end_time: Mapped[float | None] = mapped_column(Seconds)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(100))
    lease_epoch: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    lease_expires: Mapped[float | None] = mapped_column(Seconds)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    cancel_reason: Mapped[str] = mapped_column(sa.Text, default="")

    __table_args__ = (
        sa.Index("ix_executions_create_time", "create_time", "execution_id"),
        sa.Index("ix_executions_workflow_id", "workflow_id"),
        sa.Index("ix_executions_state", "state", "lease_expires"),
    )


class NodeRunRow(Base):
    """The latest state of one node in one execution (written when it changes)."""

    __tablename__ = "node_runs"

    execution_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    state: Mapped[int] = mapped_column(sa.SmallInteger)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    failures: Mapped[int] = mapped_column(sa.Integer)
    output: Mapped[dict[str, Any] | None] = mapped_column(Json)
    output_ref: Mapped[str] = mapped_column(sa.String(200))
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    start_time: Mapped[float | None] = mapped_column(Seconds)
    end_time: Mapped[float | None] = mapped_column(Seconds)
    duration_ms: Mapped[float] = mapped_column(sa.Double)
    agent_version: Mapped[str] = mapped_column(sa.String(64))


class EventRow(Base):
    """One event; (execution_id, sequence) is gapless per execution."""

    __tablename__ = "events"

    execution_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    sequence: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    type: Mapped[int] = mapped_column(sa.SmallInteger)
    time: Mapped[float] = mapped_column(Seconds)
    node_id: Mapped[str] = mapped_column(sa.String(64))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    duration_ms: Mapped[float] = mapped_column(sa.Double)
    output: Mapped[dict[str, Any] | None] = mapped_column(Json)
    output_ref: Mapped[str] = mapped_column(sa.String(200))
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    backoff_seconds: Mapped[float] = mapped_column(sa.Double)
    message: Mapped[str] = mapped_column(sa.Text)
    worker_id: Mapped[str] = mapped_column(sa.String(100))


class OutboxRow(Base):
    """A node outcome waiting to be reported to the registry (written with the node's result)."""

    __tablename__ = "registry_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record: Mapped[dict[str, Any]] = mapped_column(Json)
