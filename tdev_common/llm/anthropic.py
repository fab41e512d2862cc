"""Anthropic provider through the official SDK (``anthropic.AsyncAnthropic``), SDK retries off."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anthropic
from pydantic import SecretStr

from tdev_common.llm.base import EmbeddingReply, Message, ProviderInfo, ProviderReply, ProviderRequest
from tdev_common.llm.errors import (
    EmbeddingsUnsupported,
    PermanentProviderError,
    ProviderCallError,
    ProviderTimeout,
    TransientProviderError,
)
from tdev_common.llm.wire import safe_text, safe_url, status_error


def _translate(error: Exception, provider: str) -> ProviderCallError:
    if isinstance(error, anthropic.APITimeoutError):
        return ProviderTimeout(provider, f"{provider} did not answer in time")
    if isinstance(error, anthropic.APIConnectionError):
        return TransientProviderError(provider, f"{provider} connection failed: {type(error).__name__}")
    if isinstance(error, anthropic.APIStatusError):
        return status_error(provider, error.status_code, error.response.headers, error.body)
    return PermanentProviderError(provider, f"{provider} answer unreadable: {safe_text(str(error))}")


def split_system(messages: Sequence[Message]) -> tuple[str, list[dict[str, str]]]:
    """Anthropic takes the system prompt apart and wants alternating turns that start with the user."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[dict[str, str]] = []
    for message in messages:
        if message.role == "system":
            continue
        if turns and turns[-1]["role"] == message.role:
            turns[-1] = {"role": message.role, "content": turns[-1]["content"] + "\n\n" + message.content}
        else:
            turns.append({"role": message.role, "content": message.content})
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "(continue)"})
    return system, turns


class AnthropicProvider:
    """Messages API. No temperature is sent: API version 2026-10-21 (SDK 2.x) rejects sampling parameters."""

    name = "anthropic"
    is_model = True
    supports_embeddings = False

    def __init__(self, *, api_key: SecretStr, model: str, base_url: str | None = None,
                 native_json: bool = False, timeout_seconds: float = 60.0) -> None:
        self._model = model
        self._base_url = base_url
        self._native_json = native_json
        self._client = anthropic.AsyncAnthropic(api_key=api_key.get_secret_value(), base_url=base_url,
                                                max_retries=0, timeout=timeout_seconds)

    def default_model(self, purpose: str) -> str:
        """The configured model (the same for every purpose)."""
        return self._model

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """One message."""
        system, turns = split_system(request.messages)
        kwargs: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": turns,
                                  "timeout": request.timeout_seconds}
        if system:
            kwargs["system"] = system
        if self._native_json and request.schema is not None:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": dict(request.schema)}}
        try:
            response = await self._client.messages.create(**kwargs)
        except anthropic.AnthropicError as error:
            raise _translate(error, self.name) from None
        text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text")
        if response.stop_reason == "refusal":
            raise PermanentProviderError(self.name, f"{self.name} refused to answer")
        return ProviderReply(text=text, input_tokens=response.usage.input_tokens,
                             output_tokens=response.usage.output_tokens, model=str(response.model or request.model),
                             finish_reason=response.stop_reason)

    async def embed(self, texts: Sequence[str], model: str, timeout_seconds: float) -> EmbeddingReply:
        """Anthropic has no embeddings endpoint."""
        raise EmbeddingsUnsupported("the anthropic provider offers no embeddings")

    def info(self) -> ProviderInfo:
        """What is configured."""
        return ProviderInfo(name=self.name, is_model=True, default_model=self._model, embeddings=False,
                            base_url=safe_url(self._base_url), models=(self._model,))

    async def close(self) -> None:
        """Closes the HTTP client."""
        await self._client.close()
