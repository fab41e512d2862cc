"""What every service client shares: a call that turns failures into :class:`TdevError`, pages followed to
the end, and watch streams that reconnect and resume after the last event seen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from tdev_client.convert import from_dict, to_dict
from tdev_client.errors import TdevError, error_from_rpc

T = TypeVar("T")
# A dropped watch is reopened on these; anything else (NOT_FOUND, PERMISSION_DENIED, ...) is the caller's.
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a List call; pass ``next_page_token`` back for the next (empty: this was the last)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class WatchPolicy:
    """How a watch rides out a dropped stream: at most ``max_reconnects`` in a row with no event between,
    waiting ``backoff_seconds`` times the attempt number (capped at ``max_backoff_seconds``)."""

    max_reconnects: int = 30
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 2.0


class ServiceClient:
    """Base of the per-service clients: owns nothing but a stub on a channel the :class:`Mesh` owns."""

    def __init__(self, channel: grpc.aio.Channel, stub_class: Callable[[grpc.aio.Channel], Any],
                 *, watch_policy: WatchPolicy | None = None) -> None:
        self._stub = stub_class(channel)
        self._watch_policy = watch_policy or WatchPolicy()

    async def _call(self, method: str, request_class: type[Message], fields: dict[str, Any]) -> dict[str, Any]:
        """One unary call from plain values to plain values."""
        request = from_dict(fields, request_class)
        try:
            answer = await getattr(self._stub, method)(request)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, method) from None
        return to_dict(answer)

    async def _page(self, method: str, request_class: type[Message], items_field: str,
                    fields: dict[str, Any]) -> Page[dict[str, Any]]:
        answer = await self._call(method, request_class, fields)
        return Page(answer.get(items_field, []), answer.get("next_page_token", ""))

    async def _all_pages(self, method: str, request_class: type[Message], items_field: str,
                         fields: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        token = ""
        while True:
            page = await self._page(method, request_class, items_field, {**fields, "page_token": token})
            for item in page.items:
                yield item
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def _events(self, method: str, request_class: type[Message], fields: dict[str, Any],
                      after_sequence: int) -> AsyncIterator[dict[str, Any]]:
        """Events of a Watch stream, each once and in order, reopened after the last one when it drops."""
        last, failures, policy = after_sequence, 0, self._watch_policy
        while True:
            request = from_dict({**fields, "after_sequence": last}, request_class)
            try:
                async for answer in getattr(self._stub, method)(request):
                    failures = 0
                    for event in _events_of(answer):
                        last = int(event.get("sequence", last))
                        yield event
                return
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RESUMABLE or failures >= policy.max_reconnects:
                    raise error_from_rpc(error, method) from None
                failures += 1
                await asyncio.sleep(min(policy.backoff_seconds * failures, policy.max_backoff_seconds))

    async def _stream(self, method: str, request_class: type[Message],
                      fields: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A one-shot server stream (Execute/BuildService): not resumed here, the caller watches by id instead."""
        request = from_dict(fields, request_class)
        try:
            async for answer in getattr(self._stub, method)(request):
                for event in _events_of(answer):
                    yield event
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, method) from None


def _events_of(answer: Any) -> list[dict[str, Any]]:
    """The events of one streamed response: several when the service batched them (``events``, asked for with
    ``batch_events``: far fewer messages for a fast stream), else its one ``event``."""
    batched = getattr(answer, "events", None)
    if batched:
        return [to_dict(event) for event in batched]
    return [to_dict(answer.event)]


__all__ = ["Page", "ServiceClient", "TdevError", "WatchPolicy"]
