"""Per-execution resource limits."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from .settings import MIB, SandboxSettings


@dataclass(frozen=True)
class Limits:
    """Limits of one execution (for a batch: of each input; memory and processes apply to the whole child).

    Raises:
        ValueError: a limit is out of range.
    """

    timeout_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_bytes: int = 512 * MIB
    max_output_bytes: int = 1 * MIB
    max_stdout_bytes: int = 64 * 1024
    max_file_bytes: int = 16 * MIB
    max_open_files: int = 64
    max_processes: int = 1

    def __post_init__(self) -> None:
        checks = {
            "timeout_seconds": self.timeout_seconds > 0,
            "cpu_seconds": self.cpu_seconds > 0,
            "memory_bytes": self.memory_bytes >= 64 * MIB,
            "max_output_bytes": self.max_output_bytes >= 2,
            "max_stdout_bytes": self.max_stdout_bytes >= 0,
            "max_file_bytes": self.max_file_bytes >= 0,
            "max_open_files": self.max_open_files >= 8,
            "max_processes": self.max_processes >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid sandbox limits: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> Limits:
        """The default limits configured by the operator."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: getattr(settings, name) for name in names})

    def replace(self, **changes: Any) -> Limits:
        return dataclasses.replace(self, **changes)

    @functools.cached_property
    def _wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_wire(self) -> dict[str, Any]:
        """The limits as a JSON object (computed once per instance; do not mutate)."""
        return self._wire
