"""Routing: which provider (and model) serves a purpose, in fallback order."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from tdev_common.llm.errors import NoProviderConfigured


@dataclass(frozen=True)
class Target:
    """A provider and, optionally, a model (None: the provider's default for the purpose)."""

    provider: str
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """``"openai"`` or ``"openai:gpt-4.1"``."""
        provider, _, model = text.partition(":")
        return cls(provider.strip(), model.strip() or None)


class Router:
    """Resolves a purpose to configured targets; unconfigured providers in a route are skipped."""

    def __init__(self, routes: Mapping[str, Sequence[str]], default_route: Sequence[str],
                 configured: Collection[str]) -> None:
        self._routes = {purpose: [Target.parse(t) for t in targets] for purpose, targets in routes.items()}
        self._default = [Target.parse(t) for t in default_route]
        self._configured = set(configured)

    def route(self, purpose: str) -> list[Target]:
        """The configured targets for a purpose, in order (duplicates removed)."""
        targets: list[Target] = []
        for target in self._routes.get(purpose, self._default):
            if target.provider in self._configured and target not in targets:
                targets.append(target)
        return targets

    def targets(self, purpose: str, model: str | None = None) -> list[Target]:
        """Targets for one call. An explicit model means that model only, with no fallback:
        ``"provider:model"`` names both; a bare model applies to the first configured target's provider.

        Raises:
            NoProviderConfigured: nothing configured can serve the purpose (or the named provider).
        """
        if model:
            if ":" in model:
                target = Target.parse(model)
                if target.provider not in self._configured:
                    raise NoProviderConfigured(f"LLM provider {target.provider!r} is not configured "
                                               f"(configured: {', '.join(sorted(self._configured))})")
                return [target]
            route = self.route(purpose)
            if not route:
                raise NoProviderConfigured(f"no configured LLM provider serves purpose {purpose!r}")
            return [Target(route[0].provider, model)]
        route = self.route(purpose)
        if not route:
            raise NoProviderConfigured(f"no configured LLM provider serves purpose {purpose!r}; configured: "
                                       f"{', '.join(sorted(self._configured))}")
        return route
