"""Settings of the LLM layer (env prefix ``TDEV_LLM_``, Parameter Store section ``llm``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from tdev_common.config import LayeredSettings

ALL_PURPOSES = ("analysis", "requirements", "code_generation", "code_repair", "mutation", "review")
DEFAULT_CHAIN = ["openai", "anthropic", "offline"]


class Price(BaseModel):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


# List prices as of late 2025; override with TDEV_LLM_PRICES (JSON) or Parameter Store llm/prices.
# Keys: "provider:model", "model", or "provider:*" (any model of that provider).
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": Price(input_per_mtok=2.0, output_per_mtok=8.0),
    "gpt-4.1-mini": Price(input_per_mtok=0.4, output_per_mtok=1.6),
    "gpt-4.1-nano": Price(input_per_mtok=0.1, output_per_mtok=0.4),
    "gpt-4o": Price(input_per_mtok=2.5, output_per_mtok=10.0),
    "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6),
    "text-embedding-3-small": Price(input_per_mtok=0.02),
    "text-embedding-3-large": Price(input_per_mtok=0.13),
    "claude-sonnet-4-5": Price(input_per_mtok=3.0, output_per_mtok=15.0),
    "claude-opus-4-1": Price(input_per_mtok=15.0, output_per_mtok=75.0),
    "claude-haiku-4-5": Price(input_per_mtok=1.0, output_per_mtok=5.0),
    "offline:*": Price(input_per_mtok=0.0, output_per_mtok=0.0),
}


class LLMSettings(LayeredSettings):
    """Providers, routing, reliability, prices, budgets and cache of ``tdev_common.llm``."""

    model_config = SettingsConfigDict(env_prefix="TDEV_LLM_", extra="ignore")
    ssm_section: ClassVar[str | None] = "llm"

    # Providers
    openai_enabled: bool = Field(True, description="Use OpenAI (or the compatible server) when configured.")
    openai_base_url: str | None = Field(
        None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, Ollama, llama.cpp).")
    openai_model: str = Field("gpt-4.1-mini", description="Default OpenAI model.")
    openai_embedding_model: str = Field("text-embedding-3-small", description="Embeddings model.")
    openai_secret_name: str = Field("api-keys/openai", description="Secrets Manager name below the prefix.")
    openai_key_required: bool | None = Field(
        None, description="Whether a key is needed; default: yes for api.openai.com, no with a base URL.")
    openai_json_mode: Literal["json_schema", "json_object", "none"] = Field(
        "json_object", description="How JSON output is requested from OpenAI-style servers.")
    openai_max_tokens_field: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        "auto", description="auto: max_completion_tokens on api.openai.com, max_tokens on other servers.")
    openai_send_temperature: bool = Field(True, description="Reasoning models reject temperature: set false.")
    anthropic_enabled: bool = Field(True, description="Use Anthropic when a key is configured.")
    anthropic_base_url: str | None = Field(None, description="Anthropic API base URL (tests, gateways).")
    anthropic_model: str = Field("claude-sonnet-4-5", description="Default Anthropic model.")
    anthropic_secret_name: str = Field("api-keys/anthropic", description="Secrets Manager name.")
    anthropic_native_json: bool = Field(
        False, description="Also send output_config.format with the schema (structured outputs).")
    secret_key_field: str = Field("api_key", description="Field of the JSON secret holding the key.")
    require_model_provider: bool = Field(
        False, description="Fail at start-up unless a real provider is configured (production).")

    # Routing
    routes: dict[str, list[str]] = Field(
        default_factory=lambda: {purpose: list(DEFAULT_CHAIN) for purpose in ALL_PURPOSES},
        description='Purpose -> ordered targets "provider" or "provider:model"; unconfigured ones are skipped.')
    default_route: list[str] = Field(default_factory=lambda: list(DEFAULT_CHAIN),
                                     description="Targets for purposes missing from routes.")
    embedding_route: list[str] = Field(default_factory=lambda: ["openai"],
                                       description="Targets for embed(); add 'offline' for hashed vectors.")
    ensemble_purposes: list[str] = Field(default_factory=lambda: ["analysis"],
                                         description="Purposes answered by two providers when available.")
    ensemble_providers: list[str] = Field(default_factory=lambda: ["openai", "anthropic"],
                                          description="The two providers of the ensemble, primary first.")
    ensemble_numeric_tolerance: float = Field(0.1, description="Relative difference counted as agreement.")

    # Reliability
    timeout_seconds: float = Field(60.0, gt=0, description="Per attempt, including reading the answer.")
    max_attempts: int = Field(4, ge=1, le=10, description="Attempts per call (1 = no retries).")
    backoff_initial_seconds: float = Field(1.0, ge=0, description="First retry delay.")
    backoff_max_seconds: float = Field(30.0, ge=0, description="Longest retry delay.")
    backoff_multiplier: float = Field(2.0, ge=1, description="Growth of the delay per attempt.")
    backoff_jitter_seconds: float = Field(1.0, ge=0, description="Uniform random extra delay.")
    retry_after_max_seconds: float = Field(
        60.0, ge=0, description="A longer Retry-After fails the call at once (the next provider is tried).")
    breaker_failure_threshold: int = Field(5, ge=1, description="Consecutive failures that open a breaker.")
    breaker_reset_seconds: float = Field(30.0, ge=0, description="Open time before one trial call.")
    repair_rounds: int = Field(1, ge=0, le=3, description="Re-asks with the validation error.")

    # Cost
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES),
                                     description="US$ per million tokens; merged over the defaults.")
    unknown_model_price: Price = Field(
        default_factory=lambda: Price(input_per_mtok=15.0, output_per_mtok=75.0),
        description="Used (with a warning) for models missing from prices: deliberately high.")
    daily_budget_usd: float | None = Field(25.0, description="Process-wide LLM spend per UTC day; null = none.")

    # Cache
    cache_enabled: bool = Field(True, description="Answer identical temperature-0 requests from the cache.")
    cache_ttl_seconds: float = Field(7 * 24 * 3600.0, description="How long cached answers live.")
    cache_namespace: str = Field("llm:v1:", description="Key prefix inside the cache.")

    def price_table(self) -> dict[str, Price]:
        """Configured prices over the defaults."""
        return {**DEFAULT_PRICES, **self.prices}
