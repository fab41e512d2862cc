"""Search text of agents, query terms, token-overlap matching with reasons, and the blended search score."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TEXT_WEIGHT, QUALITY_WEIGHT, SUCCESS_WEIGHT = 0.7, 0.2, 0.1
# An agent nobody has analysed yet is neither good nor bad.
NEUTRAL_QUALITY = 0.5
FIELD_WEIGHTS = {"name": 1.0, "capabilities": 0.85, "description": 0.8}
_FIELD_VERBS = {"name": "name matches", "capabilities": "capabilities mention", "description": "description mentions"}
_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
STOPWORDS = frozenset(
    "a an and any are as at be by can could do does for from get give given has have i in into is it its "
    "me my need needs of on one or our please should some something that the their them then this those "
    "to turns use uses using want wants which will with would you your agent agents".split()
)


def stem(word: str) -> str:
    """A light English stemmer: enough to match "words"/"word", "counting"/"count", "sorted"/"sort"."""
    for suffix, replacement, min_length in (("ies", "y", 5), ("sses", "ss", 5), ("ing", "", 6),
                                            ("ed", "", 5), ("ly", "", 5), ("es", "", 5), ("s", "", 4)):
        if word.endswith(suffix) and len(word) >= min_length and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + replacement
    return word


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text``, splitting snake_case and camelCase."""
    return _WORD.findall(_CAMEL.sub(" ", text).lower())


def query_terms(query: str) -> list[str]:
    """Distinct meaningful words of a query, in order (stop words dropped, unless nothing else is left)."""
    all_words = words(query)
    kept = [w for w in all_words if w not in STOPWORDS] or all_words
    return list(dict.fromkeys(kept))


def flatten_text(value: Any) -> str:
    """Every key and string value of a JSON-like value, space separated."""
    parts: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, Mapping):
            for key, child in item.items():
                parts.append(str(key))
                walk(child)
        elif isinstance(item, list | tuple):
            for child in item:
                walk(child)
        elif isinstance(item, str):
            parts.append(item)

    walk(value)
    return " ".join(parts)


def capabilities_text(declared: Mapping[str, Any], analysed: Mapping[str, Any] | None = None) -> str:
    """What the capability filter and search read: declared and analysed capabilities as text."""
    text = flatten_text(declared)
    if analysed:
        text = f"{text} {flatten_text(analysed)}"
    return text[:20_000]


def search_text(name: str, description: str, capabilities: str) -> str:
    """The document searched: name (split into words), description and capabilities."""
    return f"{' '.join(words(name))} {description} {capabilities}"[:30_000]


def _stems(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


def overlap(terms: Sequence[str], fields: Mapping[str, str]) -> tuple[float, tuple[str, ...]]:
    """Share of query terms found in the fields, weighted by field, and a reason per matched term."""
    if not terms:
        return 0.0, ()
    field_stems = {field: _stems(text) for field, text in fields.items()}
    total = 0.0
    reasons: list[str] = []
    for term in terms:
        wanted = stem(term)
        best = max((FIELD_WEIGHTS.get(f, 0.5) for f, stems in field_stems.items() if wanted in stems), default=0.0)
        if best:
            field = next(f for f in FIELD_WEIGHTS if f in field_stems and wanted in field_stems[f])
            reasons.append(f"{_FIELD_VERBS[field]} '{term}'")
            total += best
    return round(total / len(terms), 4), tuple(reasons)


def cosine(left: Iterable[float], right: Iterable[float]) -> float:
    """Cosine similarity of two vectors, 0 when either is zero."""
    a, b = list(left), list(right)
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def success_estimate(successes: int, executions: int) -> float:
    """Laplace-smoothed success rate: an agent with no runs scores 0.5, not 0."""
    return (successes + 1) / (executions + 2)


def blended_score(text_score: float, quality: float | None, successes: int, executions: int) -> float:
    """Ranking score: mostly text match, then quality, then observed success."""
    quality_part = NEUTRAL_QUALITY if quality is None else quality
    return round(TEXT_WEIGHT * text_score + QUALITY_WEIGHT * quality_part
                 + SUCCESS_WEIGHT * success_estimate(successes, executions), 6)
