"""The config stack deployed into moto's CloudFormation, then read back by the services' own settings code.

moto's CloudFormation creates the SSM parameters (it skips Secrets Manager, Cloud Map, RDS and the rest),
so this checks the part that a name typo would silently break: the seeded values reach the settings.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import boto3
import pytest

from evolution_svc.config import EvolutionSettings
from registry_svc.config import RegistrySettings
from tdev_common.config import clear_parameter_cache, load_parameter_tree
from tests.infra.cfn import CFN_DIR, require_module
from workflow_svc.config import WorkflowSettings

pytestmark = pytest.mark.integration  # real databases, Redis or moto

REGION = "eu-west-1"


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require_module("openapi_spec_validator")  # moto[cloudformation] pulls it in; without it moto cannot parse
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("TDEV_EVOLUTION_POPULATION_SIZE", "TDEV_EVOLUTION_MUTATION_RATE", "TDEV_WORKFLOW_MAX_NODES",
                 "TDEV_REGISTRY_MAX_AGENTS", "TDEV_AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    clear_parameter_cache()
    with mock_aws(), warnings.catch_warnings():
        # moto warns for each resource type its CloudFormation does not model (the secrets here).
        warnings.simplefilter("ignore", UserWarning)
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName="tdev-test-config",
            TemplateBody=(CFN_DIR / "config.yaml").read_text(),
            Parameters=[{"ParameterKey": "Env", "ParameterValue": "test"}],
        )
        stack = cloudformation.describe_stacks(StackName="tdev-test-config")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        yield outputs["ConfigPrefix"]
    clear_parameter_cache()


def test_seeded_parameters_reach_every_service_settings(deployed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert deployed == "/t-developer/test/config"
    assert load_parameter_tree(deployed, REGION, None) == {
        "evolution": {"population_size": 50, "mutation_rate": 0.1},
        "workflow": {"max_nodes": 1000},
        "max_agents": 10000,
    }
    monkeypatch.setenv("TDEV_PARAMETER_STORE_PREFIX", deployed)
    monkeypatch.setenv("TDEV_AWS_REGION", REGION)
    # Env loses to Parameter Store: these must be overridden by the stack's values.
    monkeypatch.setenv("TDEV_EVOLUTION_POPULATION_SIZE", "7")
    monkeypatch.setenv("TDEV_WORKFLOW_MAX_NODES", "7")
    evolution = EvolutionSettings()
    assert (evolution.population_size, evolution.mutation_rate) == (50, 0.1)
    assert WorkflowSettings().max_nodes == 1000
    assert RegistrySettings().max_agents == 10000


def test_parameters_stay_inside_the_environment_prefix(deployed: str) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    names = {p["Name"] for p in ssm.describe_parameters()["Parameters"]}
    assert len(names) == 4
    assert all(name.startswith(deployed + "/") for name in names)


def test_settings_read_only_the_paths_their_task_role_allows(
    deployed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings ask for the top level non-recursively and for their own section: the two reads the
    per-service task roles allow (tests/infra/test_cloudformation.py checks the roles' side)."""
    import botocore.client

    calls: list[tuple[str, bool]] = []
    original = botocore.client.BaseClient._make_api_call

    def recording(self: botocore.client.BaseClient, operation: str, params: dict[str, object]) -> object:
        if operation == "GetParametersByPath":
            calls.append((str(params["Path"]), bool(params.get("Recursive"))))
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    monkeypatch.setenv("TDEV_PARAMETER_STORE_PREFIX", deployed)
    monkeypatch.setenv("TDEV_AWS_REGION", REGION)
    assert WorkflowSettings().max_nodes == 1000
    assert set(calls) == {(deployed, False), (f"{deployed}/workflow", True)}
    assert load_parameter_tree(deployed, REGION, None, recursive=False) == {"max_agents": 10000}
