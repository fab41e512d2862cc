"""Ensemble merge: two providers' JSON answers combined, and every disagreement reported."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tdev_common.llm.base import Disagreement

# Free text always differs between models; merging keeps the primary's, and it is not a disagreement.
TEXT_KEYS = frozenset({"summary", "description", "message", "issues", "findings", "notes", "diagnosis",
                       "structure", "purpose"})
_MISSING = object()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _close(values: Sequence[float], tolerance: float) -> bool:
    low, high = min(values), max(values)
    scale = max(abs(low), abs(high), 1e-12)
    return high - low <= 1e-9 or (high - low) / scale <= tolerance


class _Merger:
    def __init__(self, labels: Sequence[str], tolerance: float) -> None:
        self.labels = list(labels)
        self.tolerance = tolerance
        self.disagreements: list[Disagreement] = []

    def note(self, path: str, values: Sequence[Any], resolution: str) -> None:
        leaf = path.rsplit(".", 1)[-1].split("[", 1)[0]
        if any(part in TEXT_KEYS for part in path.replace("[", ".").split(".")) or leaf in TEXT_KEYS:
            return
        shown = {label: value for label, value in zip(self.labels, values, strict=True) if value is not _MISSING}
        self.disagreements.append(Disagreement(path=path or "$", values=shown, resolution=resolution))

    def merge(self, values: list[Any], path: str) -> Any:
        present = [v for v in values if v is not _MISSING and v is not None]
        if not present:
            return None
        if len(present) < len(values):
            self.note(path, values, f"kept the value given by {self._who(values)}")
            return present[0]
        if all(isinstance(v, dict) for v in values):
            keys: list[str] = []
            for value in values:
                keys.extend(k for k in value if k not in keys)
            return {key: self.merge([v.get(key, _MISSING) for v in values], f"{path}.{key}" if path else key)
                    for key in keys}
        if all(_is_number(v) for v in values):
            if path.rsplit(".", 1)[-1] == "confidence":
                if not _close(values, self.tolerance):
                    self.note(path, values, "lowest")
                return min(values)
            mean = sum(values) / len(values)
            if not _close(values, self.tolerance):
                self.note(path, values, "mean")
            return round(mean) if all(isinstance(v, int) for v in values) else mean
        if all(isinstance(v, list) for v in values):
            merged: list[Any] = []
            seen: set[str] = set()
            for value in values:
                for item in value:
                    marker = _canonical(item)
                    if marker not in seen:
                        seen.add(marker)
                        merged.append(item)
            if len({_canonical(sorted(map(_canonical, v))) for v in values}) > 1:
                self.note(path, values, "union")
            return merged
        if len({_canonical(v) for v in values}) > 1:
            self.note(path, values, f"kept {self.labels[0]}'s value")
        return values[0]

    def _who(self, values: Sequence[Any]) -> str:
        return ", ".join(label for label, v in zip(self.labels, values, strict=True)
                         if v is not _MISSING and v is not None)


def merge_answers(answers: Sequence[Any], labels: Sequence[str], tolerance: float = 0.1
                  ) -> tuple[Any, tuple[Disagreement, ...]]:
    """Merges JSON answers (the first is primary): objects key by key, numbers by mean (confidence by
    minimum), lists by union, anything else the primary's; each difference is a Disagreement."""
    merger = _Merger(labels, tolerance)
    merged = merger.merge(list(answers), "")
    return merged, tuple(merger.disagreements)
