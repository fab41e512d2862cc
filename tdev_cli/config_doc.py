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
# What callers read (tdev_client.connection); a variable added there without a line here fails the render.
CALLER_MEANINGS = {
    "registry": "Registry address the client and `tdev` call (else the profile's, else `127.0.0.1:50051`).",
    "workflow": "Workflow service address (else the profile's, else `127.0.0.1:50052`).",
    "builder": "Builder service address (else the profile's, else `127.0.0.1:50053`).",
    "evolution": "Evolution service address (else the profile's, else `127.0.0.1:50054`).",
    "ca_file": "PEM CA the services' certificates are checked against: TLS on (`tdev --ca`).",
    "cert_file": "PEM client certificate for an mTLS mesh (`tdev --cert`); needs the key and a CA.",
    "key_file": "PEM private key of the client certificate (`tdev --key`).",
    "deadline_seconds": "Deadline of unary calls, seconds (default 30).",
    "TDEV_TOKEN": "Bearer token sent on every call (`tdev --token`); else `TDEV_SERVICE_TOKEN`.",
    "TDEV_PROFILE": "Profile of the profiles file to use (`tdev --profile`); else `[default]` when there is one.",
    "TDEV_PROFILES_FILE": "The profiles file (TOML, docs/clients.md); default `~/.config/tdev/profiles.toml`.",
}


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


def _callers() -> list[str]:
    from tdev_client import connection

    lines = ["## Callers (the `tdev` command and `tdev_client`)", "",
             "Read by `Connection.resolve`: arguments win over these, these over the profile (docs/clients.md).", "",
             "| environment variable | default | meaning |", "|---|---|---|"]
    for setting, variable in connection._ENV.items():
        lines.append(f"| `{variable}` | unset | {CALLER_MEANINGS[setting]} |")
    for variable in ("TDEV_TOKEN", "TDEV_PROFILE", "TDEV_PROFILES_FILE"):
        lines.append(f"| `{variable}` | unset | {CALLER_MEANINGS[variable]} |")
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
    lines += _callers()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    DOC_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC_PATH}")
