"""Typed settings: defaults < environment (TDEV_*) < AWS Parameter Store under a configured prefix.

Parameter Store names follow the seed plan, ``/t-developer/{env}/config/<section>/<key>``; e.g.
``/t-developer/dev/config/evolution/population_size`` sets ``EvolutionSettings.population_size``.
Top-level parameters (``/t-developer/dev/config/max_agents``) reach every settings class that has a
field of that name.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Mode = Literal["embedded", "production"]


class _AwsBootstrap(BaseSettings):
    """Where Parameter Store lives; read from env only, before the real settings are built."""

    model_config = SettingsConfigDict(env_prefix="TDEV_", extra="ignore")

    parameter_store_prefix: str | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None


def _coerce(raw: str) -> Any:
    """Parameter values are strings; JSON ones (numbers, booleans, objects) become typed values."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def load_parameter_tree(
    prefix: str, region: str | None, endpoint_url: str | None, *, recursive: bool = True
) -> dict[str, Any]:
    """Reads the parameters under ``prefix`` (only its own level unless ``recursive``) into a nested dict."""
    import boto3  # local: boto3 costs ~100 ms to import and most processes never need it

    client = boto3.client("ssm", region_name=region or "us-east-1", endpoint_url=endpoint_url)
    base = prefix.rstrip("/") + "/"
    tree: dict[str, Any] = {}
    paginator = client.get_paginator("get_parameters_by_path")
    for page in paginator.paginate(Path=base.rstrip("/") or "/", Recursive=recursive,
                                   WithDecryption=True):
        for parameter in page["Parameters"]:
            relative = parameter["Name"][len(base) :].strip("/")
            if not relative:
                continue
            node = tree
            *parents, leaf = relative.split("/")
            for part in parents:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    break
                node = child
            else:
                node[leaf] = _coerce(parameter["Value"])
    return tree


@lru_cache(maxsize=8)
def _cached_parameter_tree(
    prefix: str, region: str | None, endpoint_url: str | None, recursive: bool
) -> dict[str, Any]:
    return load_parameter_tree(prefix, region, endpoint_url, recursive=recursive)


def clear_parameter_cache() -> None:
    """Forgets Parameter Store answers (tests and config reloads)."""
    _cached_parameter_tree.cache_clear()


class ParameterStoreSource(PydanticBaseSettingsSource):
    """Settings source reading AWS SSM Parameter Store; highest precedence when a prefix is set."""

    def __init__(self, settings_cls: type[BaseSettings], section: str | None) -> None:
        super().__init__(settings_cls)
        self._section = section

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ builds the whole mapping at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        boot = _AwsBootstrap()
        if not boot.parameter_store_prefix:
            return {}
        # Two reads, never one recursive read of the whole prefix: IAM cannot narrow a recursive
        # GetParametersByPath below the path it names, so each service's task role allows only the top level
        # (non-recursive, condition ssm:Recursive=false) and its own sections (infra/cloudformation/services.yaml).
        prefix = boot.parameter_store_prefix.rstrip("/")
        top = _cached_parameter_tree(prefix, boot.aws_region, boot.aws_endpoint_url, False)
        values = {key: value for key, value in top.items() if not isinstance(value, dict)}
        if self._section:
            values.update(_cached_parameter_tree(f"{prefix}/{self._section}", boot.aws_region,
                                                 boot.aws_endpoint_url, True))
        fields = self.settings_cls.model_fields
        return {key: value for key, value in values.items() if key in fields}


class LayeredSettings(BaseSettings):
    """Base of every settings class: adds Parameter Store above the environment."""

    ssm_section: ClassVar[str | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: explicit arguments, then Parameter Store, then env.
        return (init_settings, ParameterStoreSource(settings_cls, cls.ssm_section), env_settings)


class CommonSettings(LayeredSettings):
    """Process-wide settings shared by every service (env prefix ``TDEV_``)."""

    model_config = SettingsConfigDict(env_prefix="TDEV_", extra="ignore")

    env: str = Field("local", description="Deployment environment name: local, dev, staging, prod.")
    mode: Mode = Field("embedded", description="embedded (local defaults) or production (strict).")
    data_dir: Path = Field(Path(".tdev"), description="Where SQLite files and local state live.")
    host: str = Field("127.0.0.1", description="Interface the services bind to.")
    database_url: str | None = Field(
        None, description="Postgres DSN shared by services without their own; unset means SQLite."
    )
    redis_url: str | None = Field(None, description="Redis URL; unset means the in-process cache.")
    redis_timeout_seconds: float = Field(
        0.5, gt=0, description="Longest wait on Redis for any one connect, read or write; after a failure callers "
        "skip Redis until it answers a probe again (docs/registry.md, docs/workflow.md).")
    parameter_store_prefix: str | None = Field(
        None, description="SSM prefix, e.g. /t-developer/dev/config; unset disables Parameter Store."
    )
    secrets_prefix: str | None = Field(
        None, description="Secrets Manager prefix, e.g. /t-developer/dev/; unset means env only."
    )
    aws_region: str | None = Field(None, description="AWS region for SSM and Secrets Manager.")
    aws_endpoint_url: str | None = Field(None, description="Custom AWS endpoint (LocalStack, tests).")
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable console lines).")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="Trace exporter: none, console, or otlp (X-Ray through the ADOT collector)."
    )
    otlp_endpoint: str | None = Field(None, description="OTLP gRPC endpoint, e.g. http://127.0.0.1:4317.")
    otel_sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of new traces recorded.")
    registry_address: str = Field("127.0.0.1:50051", description="Address of the registry service.")
    workflow_address: str = Field("127.0.0.1:50052", description="Address of the workflow service.")
    builder_address: str = Field("127.0.0.1:50053", description="Address of the builder service.")
    evolution_address: str = Field("127.0.0.1:50054", description="Address of the evolution service.")
    grpc_max_message_mb: int = Field(32, description="Largest gRPC message accepted or sent, in MiB.")
    grace_seconds: float = Field(10.0, description="Drain time for in-flight calls on SIGTERM.")
    client_deadline_seconds: float = Field(30.0, description="Default deadline of unary calls.")
    auth_tokens: SecretStr | None = Field(
        None, description='Bearer tokens as JSON {"tokens": [...]}; else Secrets Manager {prefix}auth/tokens.'
    )
    service_token: SecretStr | None = Field(
        None, description="Token this service sends to the others; else Secrets Manager {prefix}auth/service-token."
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate: serve TLS instead of plaintext.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(None, description="PEM CA bundle: call the other services over TLS.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle of accepted client certificates: mTLS (tdev_common/tls.py has the policy)."
    )
    tls_require_client_auth: bool = Field(
        True, description="With a client CA, refuse clients without a certificate (false: only while rolling out)."
    )
    tls_client_cert_file: Path | None = Field(
        None, description="PEM certificate this process presents to the others; default tls_cert_file."
    )
    tls_client_key_file: Path | None = Field(None, description="PEM private key of tls_client_cert_file.")
    tls_pem: SecretStr | None = Field(
        None,
        description='TLS PEMs as JSON {"cert", "key", "ca", "client_ca", "client_cert", "client_key"} (files win).',
    )
    tls_required: bool = Field(False, description="Refuse to start without mTLS (the ECS task definitions set it).")

    def sqlite_url(self, service: str) -> str:
        """The SQLite URL a service uses when no DSN is configured."""
        path = (self.data_dir / f"{service}.sqlite").resolve()
        return f"sqlite+aiosqlite:///{path}"


class ServiceSettings(LayeredSettings):
    """Settings of one service; subclasses set the env prefix and the Parameter Store section."""

    model_config = SettingsConfigDict(extra="ignore")

    port: int = Field(0, description="Port to listen on; 0 picks a free one.")
    database_url: str | None = Field(None, description="This service's own Postgres DSN.")

    def resolved_database_url(self, common: CommonSettings, service: str) -> str:
        """This service's DSN, else the shared DSN, else its SQLite file."""
        return self.database_url or common.database_url or common.sqlite_url(service)


@lru_cache(maxsize=1)
def get_common_settings() -> CommonSettings:
    """The process's common settings, read once."""
    return CommonSettings()


G = TypeVar("G")
SETTING = "setting"  # dataclass field metadata key: the name of the setting a group field is read from


def settings_group(settings: BaseSettings, group: type[G], /, **given: Any) -> G:
    """A component's settings group (a dataclass) filled whole from a service's settings.

    Each field of ``group`` is taken from ``given``, else from the setting of the same name (or the name in the
    field's ``metadata={"setting": ...}``), else the field's default. The flat ``TDEV_*`` names stay the public
    contract; the components see only the group they own, so a new knob is one field in two places, never a
    third hand-copied argument in a composition root.

    Raises:
        TypeError: a field of the group has no setting, no default and was not given.
    """
    values: dict[str, Any] = {}
    missing = []
    for item in dataclasses.fields(group):  # type: ignore[arg-type]
        source = item.metadata.get(SETTING, item.name)
        if item.name in given:
            values[item.name] = given.pop(item.name)
        elif source in type(settings).model_fields:
            values[item.name] = getattr(settings, source)
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            missing.append(item.name)
    if missing or given:
        raise TypeError(f"{group.__name__} from {type(settings).__name__}: no setting for {missing}, "
                        f"unknown fields {sorted(given)}")
    return group(**values)
