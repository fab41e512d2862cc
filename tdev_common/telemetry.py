"""Logging (structlog JSON lines carrying trace ids, secrets masked) and OpenTelemetry tracing set-up."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult, TraceIdRatioBased

from tdev_common.redaction import redact, redact_processor

_tracer_provider: TracerProvider | None = None
_BODY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "openai", "anthropic")


# The call a log line belongs to: (request id, rpc). One ContextVar set per call, instead of one per key
# through structlog's bound_contextvars, which copies the whole context twice per call (8 us of 30 us of
# per-call overhead measured on GetAgent).
_CALL: ContextVar[tuple[str, str] | None] = ContextVar("tdev_call", default=None)


def bind_call(request_id: str, rpc: str) -> Token[tuple[str, str] | None]:
    """Labels this task's log lines (and those of tasks it starts) with the call's request id and rpc."""
    return _CALL.set((request_id, rpc))


def unbind_call(token: Token[tuple[str, str] | None]) -> None:
    """Undoes ``bind_call``."""
    try:
        _CALL.reset(token)
    except ValueError:  # an abandoned stream finalised from another context: nothing to restore there
        pass


def _add_call(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    call = _CALL.get()
    if call is not None:
        event_dict.setdefault("request_id", call[0])
        event_dict.setdefault("rpc", call[1])
    return event_dict


def _add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    # Last line of defence: a secret inside a repr()'d object is masked in the final text too.
    return redact(rendered) if isinstance(rendered, str) else rendered


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True, stream: Any = None) -> None:
    """Routes structlog and stdlib logging through one pipeline: context, trace ids, redaction.

    Args:
        service: name added to every line.
        level: minimum level.
        json_lines: JSON lines (production) or console lines (a person at a terminal).
        stream: where lines go; stderr by default.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_call,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer, _redact_rendered],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_tdev", False):
            root.removeHandler(existing)
    handler._tdev = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in _BODY_LOGGERS:
        # These log whole request/response bodies at DEBUG, secrets included, before we know them.
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    structlog.contextvars.bind_contextvars(service=service)


class _SwitchableSampler(Sampler):
    """Records nothing until an exporter is attached; then samples by ratio, following the caller's choice.

    Unrecorded spans still carry valid trace ids, so logs correlate and traceparent propagates, while a
    process without an exporter does not pay for building spans that nobody would ever read.
    """

    def __init__(self) -> None:
        self._delegate: Sampler = ParentBased(ALWAYS_OFF)
        self.recording = False

    def record(self, ratio: float) -> None:
        self._delegate = ParentBased(TraceIdRatioBased(ratio))
        self.recording = True

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self._delegate.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Switchable({self._delegate.get_description()})"


_sampler = _SwitchableSampler()


def configure_tracing(
    service: str,
    exporter: str = "none",
    *,
    otlp_endpoint: str | None = None,
    span_exporter: SpanExporter | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """Creates (once per process) the tracer provider and attaches the configured exporter.

    Args:
        service: ``service.name`` resource attribute.
        exporter: ``none``, ``console`` or ``otlp``.
        otlp_endpoint: collector address for ``otlp``.
        span_exporter: an explicit exporter (tests pass an in-memory one); exported synchronously.
        sample_ratio: fraction of new traces recorded once an exporter is attached.
    """
    global _tracer_provider
    if _tracer_provider is None:
        _tracer_provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=_sampler)
        trace.set_tracer_provider(_tracer_provider)
    if span_exporter is not None:
        _tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif exporter == "console":
        _tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        _tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    else:
        return _tracer_provider
    _sampler.record(sample_ratio)
    return _tracer_provider


def spans_exported() -> bool:
    """False until an exporter is attached: until then a span, sampled or not, reaches nobody."""
    return _sampler.recording


def tracer_provider() -> TracerProvider:
    """The process's tracer provider, created with no exporter if nothing configured one yet."""
    return _tracer_provider or configure_tracing("tdev")


def shutdown_tracing() -> None:
    """Flushes pending spans."""
    if _tracer_provider is not None:
        _tracer_provider.force_flush()
