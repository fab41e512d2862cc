"""Builds the LLMClient from settings: keys from env or Secrets Manager, providers, cache, daily budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import SecretStr

from tdev_common.cache import Cache, build_cache
from tdev_common.config import CommonSettings, get_common_settings
from tdev_common.errors import Unavailable
from tdev_common.llm.base import Provider
from tdev_common.llm.budget import DailyBudget
from tdev_common.llm.cache import ResponseCache
from tdev_common.llm.client import LLMClient
from tdev_common.llm.errors import NoProviderConfigured
from tdev_common.llm.offline import OfflineProvider
from tdev_common.llm.retry import Sleep
from tdev_common.llm.settings import LLMSettings
from tdev_common.llm.wire import safe_url
from tdev_common.secrets import SecretStore

log = structlog.get_logger("tdev.llm")
_daily: dict[float | None, DailyBudget] = {}


def process_daily_budget(limit_usd: float | None) -> DailyBudget:
    """The process-wide daily budget (one per limit value, so every client of a process shares it)."""
    if limit_usd not in _daily:
        _daily[limit_usd] = DailyBudget(limit_usd)
    return _daily[limit_usd]


async def _key(secrets: SecretStore, name: str, env_var: str, field: str) -> SecretStr | None:
    """A key from env, else Secrets Manager: a JSON secret's field, or the whole secret if it is not JSON."""
    try:
        value = await secrets.get(name, env_var=env_var, key=field)
        if value is None and secrets.prefix:
            raw = await secrets.get(name)
            if raw is not None and not raw.get_secret_value().lstrip().startswith("{"):
                value = raw
    except Exception as error:  # boto errors name the secret id at most, never its value
        raise Unavailable(f"cannot read LLM key {name!r} from Secrets Manager ({type(error).__name__}); check "
                          "the task role and TDEV_SECRETS_PREFIX") from None
    return value


async def build_llm(settings: LLMSettings | None = None, *, common: CommonSettings | None = None,
                    secrets: SecretStore | None = None, cache: Cache | None = None,
                    daily_budget: DailyBudget | None = None, sleep: Sleep = asyncio.sleep,
                    clock: Callable[[], float] | None = None) -> LLMClient:
    """The client for this process.

    Args:
        settings: LLM settings (default: read from env and Parameter Store).
        common: common settings, for the secrets prefix, AWS endpoint and Redis URL.
        secrets: where keys come from (default: env, then Secrets Manager under ``common.secrets_prefix``).
        cache: response cache (default: Redis when ``common.redis_url`` is set, else in-process).
        daily_budget: the daily cap (default: the process-wide one for ``settings.daily_budget_usd``).
        sleep: how retries wait (tests pass a recorder).
        clock: monotonic clock for the circuit breakers.

    Raises:
        Unavailable: Secrets Manager could not be read.
        NoProviderConfigured: ``require_model_provider`` is set and no key is configured.
    """
    settings = settings or LLMSettings()
    common = common or get_common_settings()
    secrets = secrets or SecretStore(prefix=common.secrets_prefix, region=common.aws_region,
                                     endpoint_url=common.aws_endpoint_url)
    closers: list[Callable[[], Awaitable[object]]] = []
    if cache is None and settings.cache_enabled:
        cache = build_cache(common.redis_url, "tdev:", timeout_seconds=common.redis_timeout_seconds)
        closers.append(cache.close)
    providers: dict[str, Provider] = {}
    if settings.openai_enabled:
        key = await _key(secrets, settings.openai_secret_name, "OPENAI_API_KEY", settings.secret_key_field)
        required = settings.openai_key_required
        if required is None:
            required = settings.openai_base_url is None
        if key is not None or not required:
            # SDKs are imported only when used: together they add ~1.5 s to every service's start-up.
            from tdev_common.llm.openai import OpenAIProvider

            providers["openai"] = OpenAIProvider(
                api_key=key, model=settings.openai_model, embedding_model=settings.openai_embedding_model,
                base_url=settings.openai_base_url, json_mode=settings.openai_json_mode,
                max_tokens_field=settings.openai_max_tokens_field, send_temperature=settings.openai_send_temperature,
                timeout_seconds=settings.timeout_seconds)
    if settings.anthropic_enabled:
        key = await _key(secrets, settings.anthropic_secret_name, "ANTHROPIC_API_KEY", settings.secret_key_field)
        if key is not None:
            from tdev_common.llm.anthropic import AnthropicProvider

            providers["anthropic"] = AnthropicProvider(
                api_key=key, model=settings.anthropic_model, base_url=settings.anthropic_base_url,
                native_json=settings.anthropic_native_json, timeout_seconds=settings.timeout_seconds)
    providers["offline"] = OfflineProvider()
    real = [name for name, provider in providers.items() if provider.is_model]
    if settings.require_model_provider and not real:
        raise NoProviderConfigured("no LLM provider is configured: set OPENAI_API_KEY / ANTHROPIC_API_KEY, a "
                                   "Secrets Manager key, or TDEV_LLM_OPENAI_BASE_URL")
    log.info("llm_providers_configured", providers=list(providers), real=real,
             openai_base_url=safe_url(settings.openai_base_url), cache=cache.name if cache is not None else "none")
    options: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return LLMClient(
        settings=settings, providers=providers,
        cache=ResponseCache(cache, namespace=settings.cache_namespace, ttl_seconds=settings.cache_ttl_seconds,
                            enabled=settings.cache_enabled),
        daily_budget=daily_budget if daily_budget is not None else process_daily_budget(settings.daily_budget_usd),
        sleep=sleep, closers=closers, **options)
