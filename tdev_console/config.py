"""Settings of the web console (env prefix ``TDEV_CONSOLE_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Where the console listens; everything else (addresses, tokens, TLS) comes from CommonSettings."""

    model_config = SettingsConfigDict(env_prefix="TDEV_CONSOLE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface the web console binds to (loopback by default).")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port of the web console (0: any free port).")
    session_hours: float = Field(
        12.0, gt=0, description="Lifetime of the login cookie set by the console's login form (production mode).")


@lru_cache
def get_console_settings() -> ConsoleSettings:
    """The console's settings, read once per process."""
    return ConsoleSettings()
