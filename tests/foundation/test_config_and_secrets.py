"""Config precedence (defaults < env < Parameter Store) and secrets that never reach the logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import boto3
import pytest
import structlog
from moto import mock_aws

from evolution_svc.config import EvolutionSettings
from registry_svc.config import RegistrySettings
from tdev_common.config import CommonSettings, clear_parameter_cache
from tdev_common.secrets import SecretNotFoundError, SecretStore
from tdev_common.telemetry import configure_logging
from workflow_svc.config import WorkflowSettings

pytestmark = pytest.mark.integration  # real databases, Redis or moto

PREFIX = "/t-developer/test/config"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clear_parameter_cache()
    with mock_aws():
        yield
    clear_parameter_cache()


def put_parameter(name: str, value: str) -> None:
    boto3.client("ssm", region_name="us-east-1").put_parameter(Name=name, Value=value, Type="String")


def test_defaults_apply_when_nothing_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TDEV_EVOLUTION_POPULATION_SIZE", raising=False)
    monkeypatch.delenv("TDEV_PARAMETER_STORE_PREFIX", raising=False)
    settings = EvolutionSettings()
    assert settings.population_size == 50
    assert settings.mutation_rate == 0.1
    assert WorkflowSettings().max_nodes == 1000


def test_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TDEV_PARAMETER_STORE_PREFIX", raising=False)
    monkeypatch.setenv("TDEV_EVOLUTION_POPULATION_SIZE", "80")
    monkeypatch.setenv("TDEV_REDIS_URL", "redis://cache:6379/0")
    assert EvolutionSettings().population_size == 80
    assert CommonSettings().redis_url == "redis://cache:6379/0"


def test_parameter_store_overrides_env_and_defaults(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    put_parameter(f"{PREFIX}/evolution/population_size", "120")
    put_parameter(f"{PREFIX}/evolution/mutation_rate", "0.25")
    put_parameter(f"{PREFIX}/workflow/max_nodes", "300")
    put_parameter(f"{PREFIX}/max_agents", "42")
    put_parameter(f"{PREFIX}/redis_url", "redis://from-ssm:6379/1")
    monkeypatch.setenv("TDEV_PARAMETER_STORE_PREFIX", PREFIX)
    monkeypatch.setenv("TDEV_AWS_REGION", "us-east-1")
    monkeypatch.setenv("TDEV_EVOLUTION_POPULATION_SIZE", "80")  # env loses to Parameter Store
    monkeypatch.setenv("TDEV_EVOLUTION_GENERATIONS", "7")  # env wins where SSM is silent

    evolution = EvolutionSettings()
    assert evolution.population_size == 120
    assert evolution.mutation_rate == 0.25
    assert evolution.generations == 7
    assert evolution.crossover_rate == 0.5  # default where both are silent
    assert WorkflowSettings().max_nodes == 300
    assert RegistrySettings().max_agents == 42
    assert CommonSettings().redis_url == "redis://from-ssm:6379/1"


def test_explicit_arguments_win_over_every_source(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    put_parameter(f"{PREFIX}/evolution/population_size", "120")
    monkeypatch.setenv("TDEV_PARAMETER_STORE_PREFIX", PREFIX)
    assert EvolutionSettings(population_size=9).population_size == 9


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("test", "DEBUG", json_lines=True, stream=stream)
    yield stream
    configure_logging("test", "INFO", json_lines=True)


async def test_secret_from_secrets_manager_is_read_cached_and_never_logged(
    aws: None, captured_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = "sk-planted-7f3a9c2e1b-secret"
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(
        Name="/t-developer/test/api-keys/openai", SecretString=json.dumps({"api_key": planted})
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = SecretStore(prefix="/t-developer/test/", region="us-east-1")

    secret = await store.require("api-keys/openai", env_var="OPENAI_API_KEY", key="api_key")
    assert secret.get_secret_value() == planted
    assert planted not in repr(secret) and planted not in str(secret)

    client.delete_secret(SecretId="/t-developer/test/api-keys/openai", ForceDeleteWithoutRecovery=True)
    cached = await store.require("api-keys/openai", env_var="OPENAI_API_KEY", key="api_key")
    assert cached.get_secret_value() == planted  # answered from the cache, no second round trip

    log = structlog.get_logger("leaky")
    log.info("careless", value=secret.get_secret_value(), nested={"key": f"Bearer {planted}"})
    logging.getLogger("stdlib.leaky").warning("token is %s", planted)
    try:
        raise RuntimeError(f"boom with {planted}")
    except RuntimeError:
        log.exception("failure")
    output = captured_logs.getvalue()
    assert output.count("**********") >= 4
    assert planted not in output


async def test_env_var_wins_over_secrets_manager(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key-123456")
    store = SecretStore(prefix="/t-developer/test/", region="us-east-1")
    secret = await store.require("api-keys/anthropic", env_var="ANTHROPIC_API_KEY", key="api_key")
    assert secret.get_secret_value() == "env-key-123456"


async def test_missing_secret_error_names_where_it_looked(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = SecretStore(prefix="/t-developer/test/", region="us-east-1")
    assert await store.get("api-keys/openai", env_var="OPENAI_API_KEY") is None
    with pytest.raises(
        SecretNotFoundError, match="env OPENAI_API_KEY or Secrets Manager /t-developer/test/api-keys"
    ):
        await store.require("api-keys/openai", env_var="OPENAI_API_KEY")
