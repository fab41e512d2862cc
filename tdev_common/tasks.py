"""Fire-and-forget tasks that never lose their failure: the exception is retrieved and logged when it ends."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, TypeVar

import structlog

F = TypeVar("F", bound="asyncio.Future[Any]")
log = structlog.get_logger(__name__)


def log_failure(future: asyncio.Future[Any], *, event: str, expected: tuple[type[BaseException], ...] = (),
                **fields: Any) -> None:
    """Done-callback: retrieves the future's exception so asyncio never reports it as "never retrieved", and
    logs it: ``expected`` ones (a lease lost to a cancel, say) at info without a traceback, others as errors.

    Use it through :func:`watch`, or as ``future.add_done_callback(partial(log_failure, event=...))``.
    """
    if future.cancelled():
        return
    error = future.exception()
    if error is None:
        return
    if isinstance(error, expected):
        log.info(event, error=f"{type(error).__name__}: {error}", **fields)
    else:
        log.error(event, exc_info=error, **fields)


def watch(future: F, *, event: str, expected: tuple[type[BaseException], ...] = (), **fields: Any) -> F:
    """Has ``future``'s failure retrieved and logged when it ends (see :func:`log_failure`); returns it."""
    future.add_done_callback(partial(log_failure, event=event, expected=expected, **fields))
    return future

