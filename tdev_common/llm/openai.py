"""OpenAI provider (official SDK), also for OpenAI-compatible servers (vLLM, Ollama, llama.cpp) by base URL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import openai
from pydantic import SecretStr

from tdev_common.llm.base import EmbeddingReply, ProviderInfo, ProviderReply, ProviderRequest
from tdev_common.llm.errors import PermanentProviderError, ProviderCallError, ProviderTimeout, TransientProviderError
from tdev_common.llm.wire import safe_text, safe_url, status_error

JsonMode = Literal["json_schema", "json_object", "none"]
# Compatible servers ignore the key but the SDK insists on one.
_PLACEHOLDER_KEY = "not-needed"


def _translate(error: Exception, provider: str) -> ProviderCallError:
    if isinstance(error, openai.APITimeoutError):
        return ProviderTimeout(provider, f"{provider} did not answer in time")
    if isinstance(error, openai.APIConnectionError):
        return TransientProviderError(provider, f"{provider} connection failed: {type(error).__name__}")
    if isinstance(error, openai.APIStatusError):
        return status_error(provider, error.status_code, error.response.headers, error.body)
    return PermanentProviderError(provider, f"{provider} answer unreadable: {safe_text(str(error))}")


class OpenAIProvider:
    """Chat completions and embeddings through ``openai.AsyncOpenAI`` with the SDK's retries off."""

    name = "openai"
    is_model = True
    supports_embeddings = True

    def __init__(self, *, api_key: SecretStr | None, model: str, embedding_model: str,
                 base_url: str | None = None, json_mode: JsonMode = "json_object",
                 max_tokens_field: str = "auto", send_temperature: bool = True,
                 timeout_seconds: float = 60.0) -> None:
        self._model = model
        self._embedding_model = embedding_model
        self._base_url = base_url
        self._json_mode = json_mode
        if max_tokens_field == "auto":
            max_tokens_field = "max_tokens" if base_url else "max_completion_tokens"
        self._max_tokens_field = max_tokens_field
        self._send_temperature = send_temperature
        key = api_key.get_secret_value() if api_key is not None else _PLACEHOLDER_KEY
        # max_retries=0: our retry loop (with the breaker and budgets) is the only one.
        self._client = openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_seconds)

    def default_model(self, purpose: str) -> str:
        """The configured chat model (the same for every purpose)."""
        return self._model

    def _response_format(self, schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if schema is None or self._json_mode == "none":
            return None
        if self._json_mode == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": dict(schema), "strict": False}}

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """One chat completion."""
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [message.as_dict() for message in request.messages],
            self._max_tokens_field: request.max_tokens,
            "timeout": request.timeout_seconds,
        }
        if self._send_temperature:
            kwargs["temperature"] = request.temperature
        response_format = self._response_format(request.schema)
        if response_format is not None:
            kwargs["response_format"] = response_format
        try:
            response = await self._client.chat.completions.create(**kwargs)
        except openai.OpenAIError as error:
            raise _translate(error, self.name) from None
        if not response.choices:
            raise PermanentProviderError(self.name, f"{self.name} returned no choices")
        choice = response.choices[0]
        text = choice.message.content
        if text is None:
            refusal = getattr(choice.message, "refusal", None)
            detail = f": {safe_text(refusal)}" if refusal else ""
            raise PermanentProviderError(self.name, f"{self.name} returned no text{detail}")
        usage = response.usage
        return ProviderReply(
            text=text,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=response.model or request.model,
            finish_reason=choice.finish_reason,
        )

    async def embed(self, texts: Sequence[str], model: str, timeout_seconds: float) -> EmbeddingReply:
        """Embeddings as floats (some compatible servers cannot send base64)."""
        try:
            response = await self._client.embeddings.create(
                model=model, input=list(texts), encoding_format="float", timeout=timeout_seconds)
        except openai.OpenAIError as error:
            raise _translate(error, self.name) from None
        ordered = sorted(response.data, key=lambda item: item.index)
        if len(ordered) != len(texts):
            raise PermanentProviderError(self.name, f"{self.name} returned {len(ordered)} embeddings "
                                                    f"for {len(texts)} texts")
        vectors = tuple(tuple(float(x) for x in item.embedding) for item in ordered)
        tokens = response.usage.prompt_tokens if response.usage else 0
        return EmbeddingReply(vectors=vectors, input_tokens=tokens, model=response.model or model)

    @property
    def embedding_model(self) -> str:
        """The configured embeddings model."""
        return self._embedding_model

    def info(self) -> ProviderInfo:
        """What is configured."""
        return ProviderInfo(name=self.name, is_model=True, default_model=self._model, embeddings=True,
                            base_url=safe_url(self._base_url), models=(self._model, self._embedding_model))

    async def close(self) -> None:
        """Closes the HTTP client."""
        await self._client.close()
