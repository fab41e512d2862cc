"""Work that has begun runs to its end: a caller's deadline or cancellation ends its wait, not the work.

Why: cancelling a coroutine in the middle of a database transaction can leave the transaction open. On SQLite
(the embedded mode) SQLAlchemy's asyncio adapter then closes the invalidated connection from a task that nothing
keeps alive; when that task is collected mid-close, the connection keeps its write lock until the garbage
collector finds it, and every later write waits out the busy timeout (30 s) and fails. Measured: eight
RegisterAgent calls with 1-50 ms deadlines wedged the registry's writes for 30-60 s in most runs of 40 such
rounds. So unary calls that may write (``handler_layers.completion_layer``) and the first write of a
streaming call (:func:`complete`) run in a task of their own that the caller's cancellation does not reach:
the write commits or rolls back, and a retry with the same request id gets its outcome.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Strong references: the event loop keeps only weak ones, and a task whose caller left must not be collected.
_RUNNING: set[asyncio.Task[Any]] = set()
# The running ones whose caller left: what a stop waits for (work of calls still waiting is not a stop's to end).
_ORPHANED: set[asyncio.Task[Any]] = set()


async def complete(work: Awaitable[T]) -> T:
    """``await work`` in a task of its own: cancelling the caller stops the wait, and ``work`` still runs to
    its end (:func:`drain` waits for what is left at shutdown)."""
    task = asyncio.ensure_future(work)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _ORPHANED.add(task)
            task.add_done_callback(_ORPHANED.discard)
            task.add_done_callback(_log_orphan)
        raise


def completes(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorator: every call runs to its end as with :func:`complete`. For fenced writes made by tasks that
    get cancelled (a run stopped by a cancel or a lost lease): a fenced write that lands late is refused, one
    cut off mid-way can wedge SQLite."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await complete(method(*args, **kwargs))

    return wrapper


def _log_orphan(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.info("completed_after_caller_left", outcome=type(error).__name__, error=str(error)[:300])


async def drain(timeout: float) -> int:
    """Wait up to ``timeout`` seconds for work whose callers left; returns how many were still running at
    the end (cancelled then: the process is stopping)."""
    pending = {task for task in _ORPHANED if not task.done()}
    if not pending:
        return 0
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        task.cancel()
    if still:
        log.warning("work_cancelled_at_shutdown", count=len(still))
    return len(still)
