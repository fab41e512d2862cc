"""One async engine per service schema (Postgres via asyncpg, or an SQLite file) and its migrations.

Each service keeps its tables in a schema of its own (``registry``, ``workflow``, ...). On SQLite, which
has no schemas, the schema is translated away and each service has its own file instead. Migrations are
alembic scripts under ``<svc>_svc/migrations`` with the version table inside the service's schema; they
run at start-up under an advisory lock, so replicas starting together do not race.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = structlog.get_logger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata(schema: str) -> MetaData:
    """MetaData for one service's tables, in its own schema, with stable constraint names."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str) -> bool:
    """True for SQLite URLs."""
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    """Accepts plain ``postgresql://`` DSNs and selects the asyncpg driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def create_engine(url: str, schema: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Creates the service's engine; on SQLite the schema is translated away (one file per service)."""
    url = normalise_url(url)
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30},
            execution_options={"schema_translate_map": {schema: None}},
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": f"tdev-{schema}"}},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """One sessionmaker per process; objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(migrations_dir: Path, schema: str, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _upgrade(connection: Connection, migrations_dir: Path, schema: str) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together: one migrates, the others wait and then find nothing to do.
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": zlib.crc32(f"tdev-migrate-{schema}".encode())},
        )
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    command.upgrade(_alembic_config(migrations_dir, schema, connection), "head")


async def migrate(engine: AsyncEngine, migrations_dir: Path, schema: str) -> str | None:
    """Applies the service's migrations up to head (idempotent) and returns the current revision."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, migrations_dir, schema)
    async with engine.connect() as connection:
        revision = await connection.run_sync(lambda sync: _current_revision(sync, schema))
    log.info("migrations_applied", schema=schema, revision=revision)
    return revision


def _current_revision(connection: Connection, schema: str) -> str | None:
    options = {"version_table_schema": schema} if connection.dialect.name == "postgresql" else {}
    return MigrationContext.configure(connection, opts=options).get_current_revision()


def altered_schema(schema: str) -> str | None:
    """The schema a migration's ALTER TABLE (or plain statement) names: ``schema`` on Postgres, none on SQLite,
    where each service has a file of its own and such statements are not schema-translated."""
    from alembic import op

    return schema if op.get_bind().dialect.name == "postgresql" else None


def run_migrations_in_env(target_metadata: MetaData) -> None:
    """Body of every service's alembic ``env.py``: migrate on the connection :func:`migrate` passed."""
    from alembic import context

    config = context.config
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through tdev_common.db.migrate(), which supplies the connection")
    schema: str = config.attributes["schema"]
    postgres = connection.dialect.name == "postgresql"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=schema if postgres else None,
        include_schemas=postgres,
        render_as_batch=not postgres,
    )
    with context.begin_transaction():
        context.run_migrations()
