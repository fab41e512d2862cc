"""Renders every setting of the mesh (env var, default, meaning) as the Markdown of docs/configuration.md."""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# (title, module, class) in the order the reference lists them.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("Shared by every service", "tdev_common.config", "CommonSettings"),
    ("Registry service", "registry_svc.config", "RegistrySettings"),
    ("Workflow service", "workflow_svc.config", "WorkflowSettings"),
    ("Builder service", "builder_svc.config", "BuilderSettings"),
    ("Evolution service", "evolution_svc.config", "EvolutionSettings"),
    ("Agent sandbox (every service that runs agent code)", "tdev_common.sandbox.settings", "SandboxSettings"),
    ("Sandbox tier worker (python -m tdev_common.sandbox.worker)", "tdev_common.sandbox.settings",
     "SandboxWorkerSettings"),
    ("LLM layer", "tdev_common.llm.settings", "LLMSettings"),
    ("Web console (tdev console; environment only)", "tdev_console.config", "ConsoleSettings"),
)
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    text = str(value.value) if hasattr(value, "value") else str(value)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:37]}...`"


def _section(title: str, cls: type[BaseSettings]) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    section = getattr(cls, "ssm_section", None)
    where = f" — Parameter Store section `{section}`" if section else ""
    lines = [f"## {title}", "", f"Environment prefix `{prefix}`{where}.", "",
             "| environment variable | default | meaning |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {meaning} |")
    return [*lines, ""]


def render() -> str:
    """The whole reference page."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings classes by `python -m tdev_cli.config_doc` (a test keeps it current).",
        "Precedence: defaults < environment < AWS Parameter Store under `TDEV_PARAMETER_STORE_PREFIX`",
        "(`/t-developer/{env}/config/<section>/<key>`; top-level keys reach every class with that field).",
        "",
    ]
    for title, module, name in SETTINGS:
        lines += _section(title, getattr(importlib.import_module(module), name))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    DOC_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC_PATH}")
