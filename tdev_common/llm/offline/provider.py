"""The offline provider: deterministic, no network, and not a model (its model names say so)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tdev_common.llm.base import EmbeddingReply, ProviderInfo, ProviderReply, ProviderRequest
from tdev_common.llm.errors import BadPayload, OfflineUnsupported
from tdev_common.llm.offline.analysis import analyse
from tdev_common.llm.offline.codegen import generate
from tdev_common.llm.offline.mutation import crossover, mutate
from tdev_common.llm.offline.planner import plan
from tdev_common.llm.offline.repair import repair
from tdev_common.llm.offline.requirements import analyse_requirements
from tdev_common.llm.offline.review import review
from tdev_common.llm.prompts import read_payload

NOT_A_MODEL = "(not a model)"
MODELS = {
    "analysis": f"offline/static-analyzer {NOT_A_MODEL}",
    "requirements": f"offline/rule-planner {NOT_A_MODEL}",
    "code_generation": f"offline/template-library {NOT_A_MODEL}",
    "code_repair": f"offline/program-repair {NOT_A_MODEL}",
    "mutation": f"offline/ast-mutator {NOT_A_MODEL}",
    "review": f"offline/static-reviewer {NOT_A_MODEL}",
}
EMBEDDING_MODEL = f"offline/hashed-bag-of-words {NOT_A_MODEL}"
GENERIC_MODEL = f"offline/rules {NOT_A_MODEL}"
EMBEDDING_DIMENSIONS = 256


def _field(payload: Mapping[str, Any], name: str, kind: type | tuple[type, ...], purpose: str) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind):
        raise BadPayload(f"{purpose} payload needs {name!r} ({getattr(kind, '__name__', kind)}); build the prompt "
                         "with tdev_common.llm.prompts")
    return value


def _analysis(payload: Mapping[str, Any]) -> dict[str, Any]:
    return analyse(_field(payload, "code", str, "analysis"))


def _requirements(payload: Mapping[str, Any]) -> dict[str, Any]:
    text = _field(payload, "requirements", str, "requirements")
    task = payload.get("task", "analyse")
    if task == "plan":
        catalogue = payload.get("catalogue") or []
        cases = payload.get("acceptance_cases") or []
        return plan(text, [dict(entry) for entry in catalogue if isinstance(entry, Mapping)],
                    [dict(case) for case in cases if isinstance(case, Mapping)])
    if task == "analyse":
        return analyse_requirements(text)
    raise BadPayload(f"requirements task must be 'analyse' or 'plan', not {task!r}")


def _codegen(payload: Mapping[str, Any]) -> dict[str, Any]:
    return generate(_field(payload, "spec", dict, "code_generation"))


def _repair(payload: Mapping[str, Any]) -> dict[str, Any]:
    spec = payload.get("spec")
    return repair(_field(payload, "code", str, "code_repair"), _field(payload, "failure", dict, "code_repair"),
                  spec if isinstance(spec, Mapping) else None)


def _mutation(payload: Mapping[str, Any]) -> dict[str, Any]:
    code = _field(payload, "code", str, "mutation")
    seed = int(payload.get("seed", 0))
    if payload.get("operation") == "crossover":
        return crossover(code, _field(payload, "other_code", str, "mutation"), seed=seed)
    return mutate(code, seed=seed, rate=float(payload.get("rate", 0.1)), max_edits=int(payload.get("max_edits", 3)))


def _review(payload: Mapping[str, Any]) -> dict[str, Any]:
    spec = payload.get("spec")
    return review(_field(payload, "code", str, "review"), spec if isinstance(spec, Mapping) else None)


_HANDLERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "analysis": _analysis, "requirements": _requirements, "code_generation": _codegen,
    "code_repair": _repair, "mutation": _mutation, "review": _review,
}


_HANDLER_LOCK = threading.Lock()


def _serialised(handler: Callable[[Mapping[str, Any]], dict[str, Any]], payload: Mapping[str, Any]) -> dict[str, Any]:
    with _HANDLER_LOCK:
        return handler(payload)


def hashed_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> tuple[float, ...]:
    """Feature-hashed, L2-normalised bag of lowercased words and word bigrams."""
    words = re.findall(r"[^\W_]+", text.lower())
    vector = [0.0] * dimensions
    for feature in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
        digest = hashlib.sha256(feature.encode("utf-8")).digest()
        index = int.from_bytes(digest[:4], "big") % dimensions
        vector[index] += 1.0 if digest[4] % 2 == 0 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return tuple(round(x / norm, 6) if norm else 0.0 for x in vector)


class OfflineProvider:
    """Answers every purpose with static analysis, rules and templates; same input, same output."""

    name = "offline"
    is_model = False
    supports_embeddings = True

    def default_model(self, purpose: str) -> str:
        """The offline component that serves a purpose, e.g. ``offline/static-analyzer (not a model)``."""
        return MODELS.get(purpose, GENERIC_MODEL)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """Reads the prompt's payload and answers in the purpose's JSON shape.

        Raises:
            BadPayload: the prompt carries no payload (or lacks a field).
            OfflineUnsupported: the purpose or input is outside what the rules and templates cover.
            InvalidArgument: the code in the payload does not parse (analysis, mutation).
        """
        handler = _HANDLERS.get(request.purpose)
        if handler is None:
            raise OfflineUnsupported(f"the offline provider has no rules for purpose {request.purpose!r}; it serves "
                                     + ", ".join(sorted(_HANDLERS)))
        # Off the event loop: planning a 20k-character requirement takes a few hundred milliseconds. One handler
        # at a time: CPython 3.11's ast module keeps its recursion depth per interpreter, not per thread, so two
        # threads building ASTs at once can fail with "SystemError: AST constructor recursion depth mismatch".
        result = await asyncio.to_thread(_serialised, handler, read_payload(request.messages))
        return ProviderReply(text=json.dumps(result, ensure_ascii=False), input_tokens=0, output_tokens=0,
                             model=self.default_model(request.purpose), finish_reason="stop", data=result)

    async def embed(self, texts: Sequence[str], model: str, timeout_seconds: float) -> EmbeddingReply:
        """Hashed bag-of-words vectors: lexical similarity only."""
        return EmbeddingReply(vectors=tuple(hashed_embedding(text) for text in texts), input_tokens=0,
                              model=EMBEDDING_MODEL)

    @property
    def embedding_model(self) -> str:
        """Name of the offline embedder."""
        return EMBEDDING_MODEL

    def info(self) -> ProviderInfo:
        """What this provider is."""
        return ProviderInfo(name=self.name, is_model=False, default_model=GENERIC_MODEL, embeddings=True,
                            models=(*MODELS.values(), EMBEDDING_MODEL))

    async def close(self) -> None:
        """Nothing to release."""
