"""Reading the infra/ files offline: CloudFormation YAML with its tags, a small intrinsic evaluator, Dockerfiles."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CFN_DIR = INFRA / "cloudformation"
# Deployment order: a stack may import only what an earlier one exports.
STACK_ORDER = ("config", "network", "data", "services", "observability")
SERVICES = ("registry", "workflow", "builder", "evolution")
PORTS = {"registry": 50051, "workflow": 50052, "builder": 50053, "evolution": 50054}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str) -> Any:
    """Imports a test-only dependency: skipped when missing, except under CI where that is a failure."""
    try:
        return __import__(name)
    except ImportError:
        message = f"{name} is not installed (add it to the dev extra)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


# Settings the services stack sets for the remote sandbox tier, which is built in parallel (tdev_common/sandbox
# worker and remote backend): allowed while no settings class reads them, and then checked like any other.
PENDING_SANDBOX_SETTINGS = frozenset({"TDEV_SANDBOX_REMOTE_ADDRESSES", "TDEV_SANDBOX_WORKER_PORT"})


def known_setting_names() -> tuple[set[str], set[str]]:
    """Environment names the settings classes read, and names still expected to appear in one."""
    from tdev_common.config import CommonSettings
    from tdev_common.sandbox.settings import SandboxSettings

    known = {f"TDEV_{name.upper()}" for name in CommonSettings.model_fields}
    known |= {f"TDEV_SANDBOX_{name.upper()}" for name in SandboxSettings.model_fields}
    return known, set(PENDING_SANDBOX_SETTINGS - known)


# ---- CloudFormation YAML ------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns the short-form tags (!Ref, !Sub, !GetAtt, ...) into their long JSON forms."""


def _construct_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(name: str) -> dict[str, Any]:
    """The parsed template ``infra/cloudformation/<name>.yaml``."""
    document: dict[str, Any] = yaml.load((CFN_DIR / f"{name}.yaml").read_text(), Loader=CfnLoader)
    return document


def resources_of_type(template: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource, for every resource of one type."""
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def walk(node: Any) -> Any:
    """Yields every dict and list inside ``node`` (depth first), ``node`` included."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# ---- a small evaluator of intrinsic functions ---------------------------------------------------------------

_NO_VALUE = object()


@dataclass
class Renderer:
    """Evaluates intrinsics the way CloudFormation would for given parameters (imports become markers)."""

    template: Mapping[str, Any]
    parameters: Mapping[str, str] = field(default_factory=dict)
    region: str = "eu-west-1"
    account: str = "123456789012"
    imports: Mapping[str, str] = field(default_factory=dict)

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return str(self.parameters[name])
        declared = self.template.get("Parameters", {}).get(name)
        if declared is None or "Default" not in declared:
            raise KeyError(f"no value for parameter {name}")
        return str(declared["Default"])

    def condition(self, name: str) -> bool:
        return bool(self.render(self.template["Conditions"][name]))

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::StackName": "stack",
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        return f"<ref:{name}>"

    def _sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else (value[0], value[1])
        rendered = {key: self.render(item) for key, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in rendered:
                return str(rendered[name])
            if "." in name:
                return f"<getatt:{name}>"
            return str(self._ref(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def render(self, node: Any) -> Any:
        """The value of ``node``; ``AWS::NoValue`` entries are dropped from lists and dicts."""
        if isinstance(node, list):
            return [item for item in (self.render(item) for item in node) if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), = node.items()
            if key == "Ref":
                return self._ref(value)
            if key == "Fn::Sub":
                return self._sub(value)
            if key == "Fn::If":
                return self.render(value[1] if self.condition(value[0]) else value[2])
            if key == "Fn::Equals":
                return self.render(value[0]) == self.render(value[1])
            if key == "Fn::Not":
                return not self.render(value[0])
            if key == "Fn::And":
                return all(self.render(item) for item in value)
            if key == "Fn::Or":
                return any(self.render(item) for item in value)
            if key == "Condition":
                return self.condition(value)
            if key == "Fn::FindInMap":
                table, first, second = (self.render(item) for item in value)
                return self.template["Mappings"][table][str(first)][second]
            if key == "Fn::ImportValue":
                name = self.render(value)
                return self.imports.get(name, f"<import:{name}>")
            if key == "Fn::GetAtt":
                return f"<getatt:{'.'.join(value)}>"
            if key == "Fn::Base64":
                return self.render(value)
            if key == "Fn::Join":
                return value[0].join(str(self.render(item)) for item in value[1])
        rendered = {key: self.render(value) for key, value in node.items()}
        return {key: value for key, value in rendered.items() if value is not _NO_VALUE}


def dashboard_json(body: str) -> Any:
    """Parses a rendered dashboard body."""
    return json.loads(body)


# ---- Dockerfiles ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    arguments: str
    stage: int

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of the arguments, or None in shell form."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1] if " CMD " in f" {text}" else text
        try:
            value = json.loads(text.strip())
        except ValueError:
            return None
        return value if isinstance(value, list) else None


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile, numbered by stage (0 before the first FROM)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    stage = 0
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, " ".join(arguments.split()), stage))
    return instructions
