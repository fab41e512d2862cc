"""The one retry helper for calls to other services that gRPC's own retry policy does not cover.

gRPC retries (tdev_common.grpc_client) apply only to methods whose proto declares an idempotency level. A create
or start is safe to repeat only because the caller passes the same ``request_id``; this helper retries
exactly those calls, on UNAVAILABLE, with exponential backoff and jitter (tenacity). Never wrap a call the
channel already retries: the attempts would multiply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from tdev_common.errors import from_rpc_error

log = structlog.get_logger(__name__)
T = TypeVar("T")


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


async def call_once(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Runs one call (the channel's retry policy may repeat it); a failure becomes the DomainError to raise.

    Raises:
        tdev_common.errors.DomainError: the answer's code kept, UNAVAILABLE naming ``what`` when it is down.
    """
    try:
        return await call()
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, context=what) from None


async def retry_keyed_write(
    call: Callable[[], Awaitable[T]], what: str, attempts: int, *, initial_seconds: float = 0.2,
    max_seconds: float = 2.0,
) -> T:
    """Runs a write made idempotent by its request id, retrying UNAVAILABLE up to ``attempts`` times.

    Raises:
        tdev_common.errors.DomainError: the last failure, its code kept (UNAVAILABLE when the service stayed down).
    """

    def before_sleep(state: RetryCallState) -> None:
        log.info("dependency_retry", call=what, attempt=state.attempt_number)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential_jitter(multiplier=initial_seconds, max=max_seconds, jitter=initial_seconds),
        retry=retry_if_exception(_unavailable),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:
        # tenacity awaits only coroutine functions; a stub call returns an awaitable Call object.
        return await call()

    try:
        return await retrying(attempt)
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, context=what) from None
