"""Fixtures of the LLM tests: the wire server, fast settings, a sleep recorder, spans and captured logs."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tdev_common.cache import LocalCache
from tdev_common.config import CommonSettings
from tdev_common.llm import DailyBudget, LLMClient, LLMSettings, Price, build_llm
from tdev_common.secrets import SecretStore
from tdev_common.telemetry import configure_logging, configure_tracing
from tests.llm.llm_wire_server import WireServer

OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-9876543210"
PRICES = {"openai:test-model": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "anthropic:claude-test": Price(input_per_mtok=3.0, output_per_mtok=15.0),
          "openai:embed-model": Price(input_per_mtok=0.5)}
_EXPORTER = InMemorySpanExporter()
configure_tracing("tdev-llm-tests", span_exporter=_EXPORTER)


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys only where a test sets them."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TDEV_PARAMETER_STORE_PREFIX", "TDEV_SECRETS_PREFIX"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def wire() -> Iterator[WireServer]:
    """A started wire server."""
    server = WireServer().start()
    yield server
    server.stop()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Finished spans of this test."""
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Log lines of this test (JSON, DEBUG and up)."""
    previous = logging.getLevelName(logging.getLogger().level)
    stream = io.StringIO()
    configure_logging("llm-tests", "DEBUG", True, stream=stream)
    yield stream
    configure_logging("llm-tests", previous, True, stream=io.StringIO())


class SleepRecorder:
    """Stands in for asyncio.sleep: records the waits, does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))


@pytest.fixture
def sleeps() -> SleepRecorder:
    """The recorder retries sleep through."""
    return SleepRecorder()


def fast_settings(wire: WireServer, **overrides: Any) -> LLMSettings:
    """Settings pointing both providers at the wire server, with quick, jitter-free retries."""
    values: dict[str, Any] = {
        "openai_base_url": f"{wire.url}/v1", "anthropic_base_url": wire.url, "openai_model": "test-model",
        "openai_embedding_model": "embed-model", "anthropic_model": "claude-test", "prices": PRICES,
        "max_attempts": 3, "backoff_initial_seconds": 0.01, "backoff_multiplier": 2.0,
        "backoff_jitter_seconds": 0.0, "timeout_seconds": 2.0, "daily_budget_usd": None,
        "routes": {}, "default_route": ["openai", "anthropic", "offline"],
        "ensemble_providers": ["openai", "anthropic"],
    }
    values.update(overrides)
    return LLMSettings(**values)


ClientFactory = Callable[..., Awaitable[LLMClient]]


@pytest.fixture
async def make_client(wire: WireServer, sleeps: SleepRecorder, monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[ClientFactory]:
    """Builds clients against the wire server; keys=("openai", "anthropic") chooses which keys exist."""
    clients: list[LLMClient] = []

    async def make(*, keys: tuple[str, ...] = ("openai",), cache: Any = None, daily: DailyBudget | None = None,
                   clock: Callable[[], float] | None = None, **overrides: Any) -> LLMClient:
        if "openai" in keys:
            monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        if "anthropic" in keys:
            monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        overrides.setdefault("openai_key_required", True)
        client = await build_llm(fast_settings(wire, **overrides), common=CommonSettings(),
                                 secrets=SecretStore(prefix=None), cache=cache if cache is not None else LocalCache(),
                                 daily_budget=daily or DailyBudget(None), sleep=sleeps, clock=clock)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
