"""Each in-memory fake has its port's shape: the same methods, parameters, defaults and type hints.

The module-level assignments also let mypy check the fakes structurally against the Protocols
(``.venv/bin/mypy tests/unit``).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

import builder_svc.ports as builder_ports
import evolution_svc.ports as evolution_ports
import registry_svc.ports as registry_ports
import workflow_svc.ports as workflow_ports
from builder_svc.service import WorkerControl
from tests.unit.fakes import builder, evolution, registry, workflow

# Structural checks for mypy: each line fails type checking when a fake drifts from its Protocol.
_registry_repository: registry_ports.Repository = registry.FakeRepository()
_registry_inspector: registry_ports.CodeInspector = registry.FakeInspector()
_registry_embedder: registry_ports.Embedder = registry.FakeEmbedder()
_registry_listener: registry_ports.ChangeListener = registry.RecordingListener()
_workflow_repository: workflow_ports.Repository = workflow.FakeRepository()
_workflow_registry: workflow_ports.Registry = workflow.FakeRegistry()
_workflow_runner: workflow_ports.AgentRunner = workflow.FakeRunner({})
_builder_repository: builder_ports.Repository = builder.FakeRepository()
_builder_worker: WorkerControl = builder.RecordingWorker()
_evolution_repository: evolution_ports.RunRepository = evolution.FakeRunRepository()
_evolution_registry: evolution_ports.Registry = evolution.FakeRegistry()
_evolution_runner: evolution_ports.CandidateRunner = evolution.InProcessRunner()
_evolution_cache: evolution_ports.MeasurementCache = evolution.MemoryCache()
_evolution_model: evolution_ports.ModelClient = evolution.TransformModel(0.0)

PAIRS: list[tuple[type[Any], type[Any]]] = [
    (registry_ports.Repository, registry.FakeRepository),
    (registry_ports.CodeInspector, registry.FakeInspector),
    (registry_ports.Embedder, registry.FakeEmbedder),
    (registry_ports.ChangeListener, registry.RecordingListener),
    (workflow_ports.Repository, workflow.FakeRepository),
    (workflow_ports.Registry, workflow.FakeRegistry),
    (workflow_ports.AgentRunner, workflow.FakeRunner),
    (builder_ports.Repository, builder.FakeRepository),
    (WorkerControl, builder.RecordingWorker),
    (evolution_ports.RunRepository, evolution.FakeRunRepository),
    (evolution_ports.Registry, evolution.FakeRegistry),
    (evolution_ports.CandidateRunner, evolution.InProcessRunner),
    (evolution_ports.MeasurementCache, evolution.MemoryCache),
    (evolution_ports.ModelClient, evolution.ScriptedModel),
    (evolution_ports.ModelClient, evolution.TransformModel),
]


def _members(protocol: type[Any]) -> list[str]:
    own = set(vars(protocol)) | set(typing.get_type_hints(protocol))
    return sorted(name for name in own if not name.startswith("_"))


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def _hints(function: Any) -> dict[str, Any]:
    return typing.get_type_hints(function)


@pytest.mark.parametrize(("protocol", "fake"), PAIRS, ids=[f"{f.__module__}.{f.__name__}" for _, f in PAIRS])
def test_fake_has_the_ports_methods_with_the_same_signatures(protocol: type[Any], fake: type[Any]) -> None:
    members = _members(protocol)
    assert members, f"{protocol.__name__} declares nothing"
    for name in members:
        assert hasattr(fake, name), f"{fake.__name__} lacks {protocol.__name__}.{name}"
        declared = inspect.getattr_static(protocol, name, None)
        if isinstance(declared, property):
            assert isinstance(inspect.getattr_static(fake, name), property), f"{name} must be a property"
            assert _hints(declared.fget) == _hints(inspect.getattr_static(fake, name).fget)
            continue
        if not callable(declared):
            continue  # a plain attribute (e.g. Embedder.name): present is all a Protocol asks
        implemented = getattr(fake, name)
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared), name
        assert _parameters(implemented) == _parameters(declared), f"{fake.__name__}.{name} parameters"
        assert _hints(implemented) == _hints(declared), f"{fake.__name__}.{name} type hints"
