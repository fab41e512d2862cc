"""Prices, cost of a call, and the token upper bound used to reserve budget before a call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from tdev_common.llm.base import Message
from tdev_common.llm.settings import Price

log = structlog.get_logger(__name__)

# Chat formats add a few tokens per message and per reply; generous so reservations stay upper bounds.
_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_REQUEST = 16


class PriceTable:
    """Looks up ``provider:model``, then ``model``, then ``provider:*``; unknown models get a high price."""

    def __init__(self, prices: Mapping[str, Price], unknown: Price) -> None:
        self._prices = dict(prices)
        self._unknown = unknown
        self._warned: set[str] = set()

    def price(self, provider: str, model: str) -> Price:
        """The price of a model; warns once per unknown model."""
        for key in (f"{provider}:{model}", model, f"{provider}:*"):
            if key in self._prices:
                return self._prices[key]
        label = f"{provider}:{model}"
        if label not in self._warned:
            self._warned.add(label)
            log.warning("llm_price_unknown", provider=provider, model=model,
                        assumed_input_per_mtok=self._unknown.input_per_mtok,
                        assumed_output_per_mtok=self._unknown.output_per_mtok)
        return self._unknown

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> float:
        """US dollars for the given usage."""
        price = self.price(provider, model)
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000


def input_token_bound(messages: Sequence[Message]) -> int:
    """An upper bound on input tokens: BPE tokens cover at least one byte, so bytes bound them."""
    content = sum(len(message.content.encode("utf-8")) for message in messages)
    return content + _TOKENS_PER_MESSAGE * len(messages) + _TOKENS_PER_REQUEST


def text_token_bound(texts: Sequence[str]) -> int:
    """Upper bound on the tokens of embedding inputs."""
    return sum(len(text.encode("utf-8")) + 2 for text in texts)
