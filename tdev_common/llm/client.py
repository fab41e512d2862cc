"""LLMClient: routing, retries, breakers, budgets, cache, JSON validation, ensemble, spans and logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from jsonschema.exceptions import SchemaError
from opentelemetry.trace import Span, Status, StatusCode

from tdev_common.errors import DomainError, InvalidArgument
from tdev_common.llm.base import (
    Completion,
    EmbeddingReply,
    Embeddings,
    EnsembleReport,
    Message,
    MessageLike,
    Provider,
    ProviderInfo,
    ProviderReply,
    ProviderRequest,
    normalise_messages,
)
from tdev_common.llm.breaker import CircuitBreaker
from tdev_common.llm.budget import Budget, DailyBudget, reserve
from tdev_common.llm.cache import ResponseCache
from tdev_common.llm.costs import PriceTable, input_token_bound, text_token_bound
from tdev_common.llm.ensemble import merge_answers
from tdev_common.llm.errors import (
    BudgetExceeded,
    CircuitOpen,
    EmbeddingsUnsupported,
    InvalidModelOutput,
    PermanentProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    TransientProviderError,
)
from tdev_common.llm.jsonout import JSONOutputError, check_schema, parse_and_validate, repair_prompt, schema_instruction
from tdev_common.llm.jsonout import validate as validate_json
from tdev_common.llm.retry import RetryPolicy, Sleep, call_with_retries
from tdev_common.llm.routing import Router, Target
from tdev_common.llm.settings import LLMSettings
from tdev_common.redaction import redact
from tdev_common.telemetry import tracer_provider

log = structlog.get_logger("tdev.llm")
_EMBED_BATCH = 256


def _debug_enabled() -> bool:
    # Prompt bodies are built for the log only when DEBUG is on for this logger.
    return logging.getLogger("tdev.llm").isEnabledFor(logging.DEBUG)
Schema = Mapping[str, Any]


@dataclass
class _Call:
    """What one provider call (with its retries) produced."""

    reply: ProviderReply
    cost_usd: float
    latency_ms: float
    attempts: int


class LLMClient:
    """The one way services talk to language models. Build it with :func:`tdev_common.llm.build_llm`."""

    def __init__(self, *, settings: LLMSettings, providers: Mapping[str, Provider],
                 cache: ResponseCache | None = None, daily_budget: DailyBudget | None = None,
                 sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.monotonic,
                 closers: Sequence[Callable[[], Awaitable[object]]] = ()) -> None:
        self.settings = settings
        self._providers = dict(providers)
        self._cache = cache or ResponseCache(None, namespace="", ttl_seconds=0, enabled=False)
        self.daily_budget = daily_budget
        self._sleep = sleep
        self._prices = PriceTable(settings.price_table(), settings.unknown_model_price)
        self._policy = RetryPolicy(
            max_attempts=settings.max_attempts, initial_seconds=settings.backoff_initial_seconds,
            max_seconds=settings.backoff_max_seconds, multiplier=settings.backoff_multiplier,
            jitter_seconds=settings.backoff_jitter_seconds, retry_after_max_seconds=settings.retry_after_max_seconds)
        self._breakers = {name: CircuitBreaker(name, threshold=settings.breaker_failure_threshold,
                                               reset_seconds=settings.breaker_reset_seconds, clock=clock)
                          for name in self._providers}
        self._router = Router(settings.routes, settings.default_route, self._providers)
        self._tracer = tracer_provider().get_tracer("tdev.llm")
        self._closers = list(closers)

    @classmethod
    async def from_settings(cls, settings: LLMSettings | None = None, secrets: Any = None, cache: Any = None,
                            **options: Any) -> LLMClient:
        """Same as :func:`tdev_common.llm.build_llm`."""
        from tdev_common.llm.factory import build_llm

        return await build_llm(settings, secrets=secrets, cache=cache, **options)

    # ---- what is configured ---------------------------------------------------------------------------

    def configured_providers(self) -> list[ProviderInfo]:
        """Every configured provider (offline included), in configuration order."""
        return [provider.info() for provider in self._providers.values()]

    def real_providers(self) -> list[str]:
        """Names of configured providers that are models (offline excluded)."""
        return [name for name, provider in self._providers.items() if provider.is_model]

    def ensemble_available(self) -> bool:
        """True when two real providers of ``ensemble_providers`` are configured."""
        return len(self._ensemble_members()) >= 2

    def embeddings_available(self, *, real_only: bool = True) -> bool:
        """True when a provider on the embeddings route offers embeddings (offline counts if not real_only)."""
        for target in self._embedding_targets():
            if not real_only or self._providers[target.provider].is_model:
                return True
        return False

    def breaker_state(self, provider: str) -> str:
        """closed, open or half_open."""
        return self._breakers[provider].state.value

    def _ensemble_members(self) -> list[str]:
        return [name for name in self.settings.ensemble_providers
                if name in self._providers and self._providers[name].is_model][:2]

    def _embedding_targets(self) -> list[Target]:
        targets = []
        for text in self.settings.embedding_route:
            target = Target.parse(text)
            provider = self._providers.get(target.provider)
            if provider is not None and provider.supports_embeddings and target not in targets:
                targets.append(target)
        return targets

    # ---- complete -------------------------------------------------------------------------------------

    async def complete(self, messages: Sequence[MessageLike], *, schema: Schema | None = None, purpose: str,
                       max_tokens: int, temperature: float, model: str | None = None,
                       budget: Budget | None = None, ensemble: bool | None = None) -> Completion:
        """One answer for the messages.

        Args:
            messages: chat messages; build them with ``tdev_common.llm.prompts`` so the offline provider can answer.
            schema: JSON Schema the answer must match; ``data`` then holds the parsed JSON.
            purpose: a :class:`~tdev_common.llm.base.Purpose` value; picks the route and the offline behaviour.
            max_tokens: most output tokens (also what the budget reserves).
            temperature: sampling temperature; 0 makes the request cacheable.
            model: ``"provider:model"`` or a model of the first routed provider; disables fallback.
            budget: the caller's budget (per build, per evolution run); the daily budget always applies.
            ensemble: None = the configured default for the purpose; True/False force it on/off.

        Raises:
            InvalidArgument: bad messages, max_tokens, temperature or schema.
            BudgetExceeded: a budget cannot cover the call (nothing was sent).
            ProviderUnavailable: every routed provider failed (retries, timeouts, open breakers).
            ProviderRejected: a provider refused the request (non-retryable 4xx) and no fallback succeeded.
            InvalidModelOutput: the answer did not match the schema after the repair round.
            NoProviderConfigured / OfflineUnsupported / BadPayload: see tdev_common.llm.errors.
        """
        try:
            normalised = normalise_messages(messages)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        if max_tokens <= 0:
            raise InvalidArgument("max_tokens must be positive")
        if not 0.0 <= temperature <= 2.0:
            raise InvalidArgument("temperature must be within [0, 2]")
        if schema is not None:
            try:
                check_schema(schema)
            except SchemaError as error:
                raise InvalidArgument(f"schema is not a valid JSON Schema: {error.message}") from None
        purpose = str(purpose)
        use_ensemble = ensemble if ensemble is not None else (
            purpose in self.settings.ensemble_purposes and self.ensemble_available() and schema is not None
            and model is None)
        if use_ensemble and schema is None:
            raise InvalidArgument("an ensemble needs a schema: answers are merged as JSON")
        with self._tracer.start_as_current_span("llm.complete") as span:
            span.set_attribute("tdev.llm.purpose", purpose)
            span.set_attribute("tdev.llm.ensemble", bool(use_ensemble))
            try:
                if use_ensemble:
                    result = await self._ensemble(normalised, schema, purpose, max_tokens, temperature, budget)
                else:
                    result = await self._routed(normalised, schema, purpose, max_tokens, temperature, model, budget)
            except DomainError as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                log.warning("llm_completion_failed", purpose=purpose, error=type(error).__name__,
                            reason=error.reason, message=redact(error.message))
                raise
            _annotate(span, result)
            log.info("llm_completion", purpose=purpose, provider=result.provider, model=result.model,
                     is_model=result.is_model, input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                     cost_usd=round(result.cost_usd, 8), latency_ms=round(result.latency_ms, 2),
                     cached=result.cached, repaired=result.repaired, fallbacks=list(result.fallbacks),
                     disagreements=len(result.ensemble.disagreements) if result.ensemble else 0)
            return result

    async def _routed(self, messages: tuple[Message, ...], schema: Schema | None, purpose: str, max_tokens: int,
                      temperature: float, model: str | None, budget: Budget | None) -> Completion:
        targets = self._router.targets(purpose, model)
        failures: list[tuple[str, DomainError]] = []
        for target in targets:
            try:
                result = await self._complete_with(target, messages, schema, purpose, max_tokens, temperature, budget)
            except (ProviderUnavailable, ProviderRejected) as error:
                failures.append((target.provider, error))
                if target is not targets[-1]:
                    log.warning("llm_fallback", purpose=purpose, failed=target.provider, reason=error.reason)
                continue
            return replace(result, fallbacks=tuple(name for name, _ in failures))
        if len(failures) == 1:
            raise failures[0][1]
        summary = "; ".join(f"{name}: {error.message}" for name, error in failures)
        if all(isinstance(error, ProviderRejected) for _, error in failures):
            raise ProviderRejected(f"every LLM provider refused the request ({summary})")
        raise ProviderUnavailable(f"every LLM provider failed ({summary})")

    async def _complete_with(self, target: Target, messages: tuple[Message, ...], schema: Schema | None,
                             purpose: str, max_tokens: int, temperature: float,
                             budget: Budget | None) -> Completion:
        provider = self._providers[target.provider]
        model = target.model or provider.default_model(purpose)
        label = model if model.startswith(f"{provider.name}/") else f"{provider.name}/{model}"
        sent = _with_schema(messages, schema) if provider.is_model else messages
        cache_key: str | None = None
        if provider.is_model and temperature == 0 and self._cache.enabled:
            cache_key = self._cache.completion_key(provider=provider.name, model=model, messages=sent,
                                                   schema=schema, temperature=temperature, max_tokens=max_tokens)
            started = time.perf_counter()
            hit = await self._cache.get(cache_key)
            if hit is not None and isinstance(hit.get("text"), str):
                latency = (time.perf_counter() - started) * 1000
                if budget is not None:
                    budget.record_cached(label)
                log.info("llm_cache_hit", purpose=purpose, provider=provider.name, model=model,
                         backend=self._cache.backend)
                return Completion(text=hit["text"], data=hit.get("data"), provider=provider.name, model=model,
                                  purpose=purpose, input_tokens=0, output_tokens=0, cost_usd=0.0,
                                  latency_ms=latency, cached=True, is_model=True)
        request = ProviderRequest(messages=sent, model=model, max_tokens=max_tokens, temperature=temperature,
                                  purpose=purpose, schema=schema, timeout_seconds=self.settings.timeout_seconds)
        call = await self._call(provider, request, budget, label)
        calls = [call]
        data: Any = None
        repaired = False
        if schema is not None:
            try:
                data = _validated(call.reply, schema)
            except JSONOutputError as error:
                if not provider.is_model or self.settings.repair_rounds == 0:
                    raise InvalidModelOutput(f"{label} answered {purpose} with invalid JSON: {error}") from None
                data, more = await self._repair(provider, request, call.reply, error, budget, label)
                calls.extend(more)
                repaired = True
        final = calls[-1].reply
        result = Completion(
            text=final.text, data=data, provider=provider.name, model=model, purpose=purpose,
            input_tokens=sum(c.reply.input_tokens for c in calls),
            output_tokens=sum(c.reply.output_tokens for c in calls),
            cost_usd=sum(c.cost_usd for c in calls), latency_ms=sum(c.latency_ms for c in calls), cached=False,
            is_model=provider.is_model, repaired=repaired)
        if cache_key is not None:
            await self._cache.put(cache_key, {"text": final.text, "data": data})
        return result

    async def _repair(self, provider: Provider, request: ProviderRequest, reply: ProviderReply,
                      error: JSONOutputError, budget: Budget | None, label: str) -> tuple[Any, list[_Call]]:
        """Re-asks with the validation error, at most ``repair_rounds`` times."""
        calls: list[_Call] = []
        messages = request.messages
        last_reply, last_error = reply, error
        for _round in range(self.settings.repair_rounds):
            log.info("llm_repair_round", provider=provider.name, model=request.model, purpose=request.purpose,
                     error=str(last_error)[:300])
            messages = (*messages, Message.assistant(last_reply.text), Message.user(repair_prompt(last_error)))
            call = await self._call(provider, replace(request, messages=messages), budget, label)
            calls.append(call)
            try:
                return _validated(call.reply, request.schema or {}), calls
            except JSONOutputError as again:
                last_reply, last_error = call.reply, again
        raise InvalidModelOutput(f"{label} answered {request.purpose} with invalid JSON after "
                                 f"{self.settings.repair_rounds} repair round(s): {last_error}")

    async def _call(self, provider: Provider, request: ProviderRequest, budget: Budget | None,
                    label: str) -> _Call:
        """One provider call: reserve budget, retry with backoff under the breaker, settle the real cost."""
        bound = input_token_bound(request.messages)
        reserve_cost = self._prices.cost(provider.name, request.model, bound, request.max_tokens)
        reserve_tokens = bound + request.max_tokens if provider.is_model else 0
        what = f"a {label} call for {request.purpose} (max_tokens={request.max_tokens})"
        reservation = reserve([budget, self.daily_budget], reserve_cost, reserve_tokens, what=what)
        attempts = 0

        async def attempt() -> ProviderReply:
            nonlocal attempts
            attempts += 1
            try:
                async with asyncio.timeout(request.timeout_seconds):
                    return await provider.complete(request)
            except TimeoutError:
                raise ProviderTimeout(provider.name, f"{provider.name} did not answer within "
                                                     f"{request.timeout_seconds:g}s") from None

        if _debug_enabled():  # bodies only at debug level, secrets masked
            log.debug("llm_request_body", provider=provider.name, model=request.model, purpose=request.purpose,
                      messages=[{"role": m.role, "content": redact(m.content)} for m in request.messages])
        started = time.perf_counter()
        with self._tracer.start_as_current_span("llm.call") as span:
            span.set_attribute("gen_ai.system", provider.name)
            span.set_attribute("gen_ai.request.model", request.model)
            span.set_attribute("gen_ai.request.max_tokens", request.max_tokens)
            span.set_attribute("gen_ai.request.temperature", request.temperature)
            span.set_attribute("tdev.llm.purpose", request.purpose)
            span.set_attribute("tdev.llm.is_model", provider.is_model)
            try:
                reply = await call_with_retries(attempt, policy=self._policy, breaker=self._breakers[provider.name],
                                                sleep=self._sleep, what=f"{label}:{request.purpose}")
            except BaseException as error:
                reservation.release()
                span.set_attribute("tdev.llm.attempts", attempts)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise self._failure(error, provider, request, attempts) from None
            latency = (time.perf_counter() - started) * 1000
            cost = self._prices.cost(provider.name, request.model, reply.input_tokens, reply.output_tokens)
            reservation.settle(cost, reply.input_tokens, reply.output_tokens, label)
            span.set_attribute("gen_ai.response.model", reply.model)
            span.set_attribute("gen_ai.usage.input_tokens", reply.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", reply.output_tokens)
            span.set_attribute("tdev.llm.cost_usd", cost)
            span.set_attribute("tdev.llm.attempts", attempts)
        log.info("llm_call", provider=provider.name, model=request.model, purpose=request.purpose,
                 is_model=provider.is_model, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                 cost_usd=round(cost, 8), latency_ms=round(latency, 2), attempts=attempts,
                 finish_reason=reply.finish_reason)
        if _debug_enabled():
            log.debug("llm_response_body", provider=provider.name, model=request.model, text=redact(reply.text))
        return _Call(reply=reply, cost_usd=cost, latency_ms=latency, attempts=attempts)

    def _failure(self, error: BaseException, provider: Provider, request: ProviderRequest,
                 attempts: int) -> BaseException:
        """Provider-call errors become DomainErrors; others (domain errors, cancellation) pass unchanged."""
        if isinstance(error, CircuitOpen | DomainError) or not isinstance(error, Exception):
            if isinstance(error, DomainError):
                log.warning("llm_call_failed", provider=provider.name, model=request.model, purpose=request.purpose,
                            error=type(error).__name__, attempts=attempts)
            return error
        if isinstance(error, TransientProviderError):
            log.warning("llm_call_failed", provider=provider.name, model=request.model, purpose=request.purpose,
                        error=type(error).__name__, status=error.status, attempts=attempts)
            what = "timed out" if isinstance(error, ProviderTimeout) else "failed"
            return ProviderUnavailable(f"LLM provider {provider.name} {what} after {attempts} attempt(s): "
                                       f"{error.message}", metadata={"provider": provider.name})
        if isinstance(error, PermanentProviderError):
            log.warning("llm_call_failed", provider=provider.name, model=request.model, purpose=request.purpose,
                        error=type(error).__name__, status=error.status, attempts=attempts)
            return ProviderRejected(f"LLM provider {provider.name} refused the request: {error.message}",
                                    metadata={"provider": provider.name})
        return error

    # ---- ensemble -------------------------------------------------------------------------------------

    async def _ensemble(self, messages: tuple[Message, ...], schema: Schema | None, purpose: str, max_tokens: int,
                        temperature: float, budget: Budget | None) -> Completion:
        members = self._ensemble_members()
        if len(members) < 2 or schema is None:
            raise ProviderUnavailable("an ensemble needs two configured model providers and a schema")
        outcomes = await asyncio.gather(
            *(self._complete_with(Target(name), messages, schema, purpose, max_tokens, temperature, budget)
              for name in members), return_exceptions=True)
        answers: list[Completion] = []
        failed: dict[str, str] = {}
        for name, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, BudgetExceeded):
                raise outcome
            if isinstance(outcome, DomainError):
                failed[name] = outcome.message
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append(outcome)
        if not answers:
            reasons = "; ".join(f"{name}: {message}" for name, message in failed.items())
            raise ProviderUnavailable(f"every ensemble member failed: {reasons}")
        labels = [answer.label for answer in answers]
        merged, disagreements = merge_answers([a.data for a in answers], labels,
                                              self.settings.ensemble_numeric_tolerance)
        try:
            validate_json(merged, schema)
        except JSONOutputError:
            merged = answers[0].data
            disagreements = (*disagreements,)
        report = EnsembleReport(members=tuple(answers), failed=failed, disagreements=disagreements)
        return Completion(
            text=json.dumps(merged, ensure_ascii=False), data=merged, provider="ensemble",
            model="+".join(labels), purpose=purpose,
            input_tokens=sum(a.input_tokens for a in answers), output_tokens=sum(a.output_tokens for a in answers),
            cost_usd=sum(a.cost_usd for a in answers), latency_ms=max(a.latency_ms for a in answers),
            cached=all(a.cached for a in answers), is_model=True, repaired=any(a.repaired for a in answers),
            ensemble=report)

    # ---- embeddings -----------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, budget: Budget | None = None,
                    model: str | None = None) -> Embeddings:
        """One vector per text, from the embeddings route (fallback on unavailability), cached per text.

        Raises:
            EmbeddingsUnsupported: no provider on the route offers embeddings.
            BudgetExceeded / ProviderUnavailable / ProviderRejected: as for complete().
        """
        targets = self._embedding_targets()
        if model:
            targets = [Target.parse(model)] if ":" in model else [Target(t.provider, model) for t in targets[:1]]
            targets = [t for t in targets if t.provider in self._providers]
        if not targets:
            raise EmbeddingsUnsupported("no configured provider offers embeddings (embedding_route: "
                                        f"{', '.join(self.settings.embedding_route)})")
        items = list(texts)
        failures: list[tuple[str, DomainError]] = []
        with self._tracer.start_as_current_span("llm.embed") as span:
            span.set_attribute("tdev.llm.texts", len(items))
            for target in targets:
                try:
                    result = await self._embed_with(target, items, budget)
                except (ProviderUnavailable, ProviderRejected) as error:
                    failures.append((target.provider, error))
                    continue
                span.set_attribute("gen_ai.system", result.provider)
                span.set_attribute("gen_ai.request.model", result.model)
                span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
                span.set_attribute("tdev.llm.cost_usd", result.cost_usd)
                span.set_attribute("tdev.llm.cached", result.cached)
                log.info("llm_embeddings", provider=result.provider, model=result.model, is_model=result.is_model,
                         texts=len(items), cached_count=result.cached_count, input_tokens=result.input_tokens,
                         cost_usd=round(result.cost_usd, 8), latency_ms=round(result.latency_ms, 2))
                return result
            span.set_status(Status(StatusCode.ERROR, "embeddings failed"))
        if len(failures) == 1:
            raise failures[0][1]
        raise ProviderUnavailable("every embeddings provider failed: "
                                  + "; ".join(f"{name}: {error.message}" for name, error in failures))

    async def _embed_with(self, target: Target, texts: list[str], budget: Budget | None) -> Embeddings:
        provider = self._providers[target.provider]
        model = target.model or str(getattr(provider, "embedding_model", provider.default_model("embedding")))
        label = model if model.startswith(f"{provider.name}/") else f"{provider.name}/{model}"
        started = time.perf_counter()
        vectors: list[tuple[float, ...] | None] = [None] * len(texts)
        keys = [self._cache.embedding_key(provider=provider.name, model=model, text=t) for t in texts]
        if provider.is_model:
            for index, key in enumerate(keys):
                hit = await self._cache.get(key)
                if hit is not None and isinstance(hit.get("vector"), list):
                    vectors[index] = tuple(float(x) for x in hit["vector"])
        cached_count = sum(1 for v in vectors if v is not None)
        missing = [i for i, v in enumerate(vectors) if v is None]
        tokens = 0
        cost = 0.0
        for start in range(0, len(missing), _EMBED_BATCH):
            batch = missing[start:start + _EMBED_BATCH]
            batch_texts = [texts[i] for i in batch]
            bound = text_token_bound(batch_texts)
            reservation = reserve([budget, self.daily_budget], self._prices.cost(provider.name, model, bound, 0),
                                  bound if provider.is_model else 0,
                                  what=f"a {label} embeddings call for {len(batch)} texts")

            async def attempt(batch_texts: list[str] = batch_texts) -> EmbeddingReply:
                try:
                    async with asyncio.timeout(self.settings.timeout_seconds):
                        return await provider.embed(batch_texts, model, self.settings.timeout_seconds)
                except TimeoutError:
                    raise ProviderTimeout(provider.name, f"{provider.name} embeddings did not answer within "
                                                         f"{self.settings.timeout_seconds:g}s") from None

            try:
                reply = await call_with_retries(attempt, policy=self._policy, breaker=self._breakers[provider.name],
                                                sleep=self._sleep, what=f"{label}:embeddings")
            except BaseException as error:
                reservation.release()
                raise self._failure(error, provider, ProviderRequest(
                    messages=(), model=model, max_tokens=0, temperature=0.0, purpose="embeddings"), 0) from None
            batch_cost = self._prices.cost(provider.name, model, reply.input_tokens, 0)
            reservation.settle(batch_cost, reply.input_tokens, 0, label)
            tokens += reply.input_tokens
            cost += batch_cost
            for index, vector in zip(batch, reply.vectors, strict=True):
                vectors[index] = vector
                if provider.is_model:
                    await self._cache.put(keys[index], {"vector": list(vector)})
        if budget is not None and not missing and texts:
            budget.record_cached(label)
        model_name = model if provider.is_model else str(getattr(provider, "embedding_model", model))
        return Embeddings(vectors=tuple(v for v in vectors if v is not None), provider=provider.name,
                          model=model_name, input_tokens=tokens, cost_usd=cost,
                          latency_ms=(time.perf_counter() - started) * 1000,
                          cached=bool(texts) and not missing, cached_count=cached_count, is_model=provider.is_model)

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Closes provider HTTP clients and anything the factory opened (its cache)."""
        for provider in self._providers.values():
            await provider.close()
        for closer in self._closers:
            await closer()


def _with_schema(messages: tuple[Message, ...], schema: Schema | None) -> tuple[Message, ...]:
    """Appends the JSON instruction to the system message (or adds one)."""
    if schema is None:
        return messages
    instruction = schema_instruction(schema)
    if messages and messages[0].role == "system":
        return (Message.system(messages[0].content + "\n\n" + instruction), *messages[1:])
    return (Message.system(instruction), *messages)


def _validated(reply: ProviderReply, schema: Schema) -> Any:
    """The reply's JSON, valid for the schema (offline replies carry data already)."""
    if reply.data is not None:
        validate_json(reply.data, schema)
        return reply.data
    return parse_and_validate(reply.text, schema)


def _annotate(span: Span, result: Completion) -> None:
    span.set_attribute("gen_ai.system", result.provider)
    span.set_attribute("gen_ai.request.model", result.model)
    span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
    span.set_attribute("tdev.llm.cost_usd", result.cost_usd)
    span.set_attribute("tdev.llm.cached", result.cached)
    span.set_attribute("tdev.llm.is_model", result.is_model)
    span.set_attribute("tdev.llm.repaired", result.repaired)


__all__ = ["LLMClient"]
