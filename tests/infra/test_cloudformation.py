"""The CloudFormation templates: cfn-lint clean, wired together, and saying what the services need."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from common.config import CommonSettings, clear_parameter_cache
from tests.infra.cfn import (
    CFN_DIR,
    PORTS,
    SERVICES,
    STACK_ORDER,
    Renderer,
    dashboard_json,
    known_setting_names,
    load_template,
    require_module,
    resources_of_type,
    walk,
)

pytestmark = pytest.mark.integration  # real databases, Redis or moto

ENV = "test"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
SECRETS_PREFIX = f"/t-developer/{ENV}/"
CONFIG_PREFIX = f"/t-developer/{ENV}/config"
# Secret names the code reads below TDEV_SECRETS_PREFIX (common/runtime.py, common/llm/settings.py).
SECRETS_READ_BY_CODE = ("auth/tokens", "auth/service-token", "api-keys/openai", "api-keys/anthropic")


@pytest.fixture(scope="module")
def templates() -> dict[str, dict[str, Any]]:
    return {name: load_template(name) for name in STACK_ORDER}


def services_renderer(templates: dict[str, dict[str, Any]], tier: str) -> Renderer:
    return Renderer(
        templates["services"],
        {"Env": ENV, "SandboxTier": tier, "ImageUri": "img:1", "SubnetIds": "subnet-1"},
        region=REGION,
        account=ACCOUNT,
        imports={f"tdev-{ENV}-NamespaceName": "tdev.local"},
    )


def container(templates: dict[str, dict[str, Any]], service: str, tier: str) -> dict[str, Any]:
    definition = templates["services"]["Resources"][f"{service.capitalize()}TaskDefinition"]
    rendered = services_renderer(templates, tier).render(definition["Properties"])
    (only,) = rendered["ContainerDefinitions"]
    return only


def test_every_template_file_is_a_known_stack() -> None:
    assert sorted(p.stem for p in CFN_DIR.glob("*.yaml")) == sorted(STACK_ORDER)


@pytest.mark.parametrize("stack", STACK_ORDER)
def test_cfn_lint_reports_nothing_for_stack(stack: str) -> None:
    require_module("cfnlint")
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(Path(CFN_DIR / f"{stack}.yaml"), ManualArgs(regions=["us-east-1"]))
    assert [str(match) for match in matches] == []


def test_imports_are_exported_by_an_earlier_stack(templates: dict[str, dict[str, Any]]) -> None:
    exported: dict[str, str] = {}
    for stack in STACK_ORDER:
        renderer = Renderer(templates[stack], {"Env": ENV})
        for node in walk(templates[stack]["Resources"]):
            if isinstance(node, dict) and "Fn::ImportValue" in node:
                name = renderer.render(node["Fn::ImportValue"])
                assert name in exported, f"{stack} imports {name}, which no earlier stack exports"
        for output in templates[stack].get("Outputs", {}).values():
            if "Export" in output:
                exported[renderer.render(output["Export"]["Name"])] = stack
    assert len(exported) >= 15


@pytest.mark.parametrize("service", SERVICES)
def test_service_has_task_definition_discovery_health_check_and_production_mode(
    templates: dict[str, dict[str, Any]], service: str
) -> None:
    resources = templates["services"]["Resources"]
    name = service.capitalize()
    discovery = resources[f"{name}Discovery"]
    assert discovery["Type"] == "AWS::ServiceDiscovery::Service"
    assert discovery["Properties"]["Name"] == service
    assert discovery["Properties"]["DnsConfig"]["DnsRecords"] == [{"Type": "A", "TTL": 10}]
    ecs_service = resources[f"{name}Service"]["Properties"]
    assert ecs_service["ServiceRegistries"] == [{"RegistryArn": {"Fn::GetAtt": [f"{name}Discovery", "Arn"]}}]
    assert ecs_service["TaskDefinition"] == {"Ref": f"{name}TaskDefinition"}
    assert ecs_service["ServiceName"] == service

    for tier in ("ec2", "fargate-weak"):
        box = container(templates, service, tier)
        environment = {item["Name"]: item["Value"] for item in box["Environment"]}
        assert environment["TDEV_MODE"] == "production"
        assert box["Command"] == [f"{service}_svc"]
        assert box["PortMappings"] == [{"ContainerPort": PORTS[service], "Protocol": "tcp"}]
        assert box["HealthCheck"]["Command"] == ["CMD", "python", "/opt/tdev/health_probe.py", service]
        assert box["StopTimeout"] > float(environment["TDEV_GRACE_SECONDS"])
        assert box["LogConfiguration"]["LogDriver"] == "awslogs"
        assert {secret["Name"] for secret in box["Secrets"]} == {"TDEV_DATABASE_URL", "TDEV_REDIS_URL"}
        for other, port in PORTS.items():
            assert environment[f"TDEV_{other.upper()}_ADDRESS"] == f"{other}.tdev.local:{port}"


@pytest.mark.parametrize("grace", ["10", "20", "30", "60"])
def test_stop_timeout_exceeds_grace_within_fargate_limit_for_grace(
    templates: dict[str, dict[str, Any]], grace: str
) -> None:
    seconds = templates["services"]["Mappings"]["StopTimeout"][grace]["Seconds"]
    assert float(grace) < seconds <= 120


@pytest.mark.parametrize("service", SERVICES)
def test_task_environment_is_valid_settings_for_service(
    templates: dict[str, dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = container(templates, service, "fargate-weak")
    environment = {item["Name"]: str(item["Value"]) for item in box["Environment"]}
    environment |= {"TDEV_DATABASE_URL": "postgresql://u:p@db:5432/tdev", "TDEV_REDIS_URL": "rediss://:t@c:6379/0"}
    known, pending = known_setting_names()
    assert set(environment) - known == pending
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # The prefix is set, so the settings also ask (an empty, mocked) Parameter Store.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    clear_parameter_cache()
    with mock_aws():
        settings = CommonSettings()
    clear_parameter_cache()
    assert settings.mode == "production"
    assert settings.host == "0.0.0.0"
    assert settings.parameter_store_prefix == CONFIG_PREFIX
    assert settings.secrets_prefix == SECRETS_PREFIX
    assert settings.aws_region == REGION
    assert settings.grace_seconds == 20.0
    assert settings.registry_address == "registry.tdev.local:50051"


def test_sandbox_tier_decides_capacity_isolation_and_user(templates: dict[str, dict[str, Any]]) -> None:
    for service in SERVICES:
        weak = container(templates, service, "fargate-weak")
        strong = container(templates, service, "ec2")
        env_weak = {item["Name"]: item["Value"] for item in weak["Environment"]}
        env_strong = {item["Name"]: item["Value"] for item in strong["Environment"]}
        assert env_weak["TDEV_SANDBOX_ALLOW_WEAK_ISOLATION"] == "true"
        assert env_strong["TDEV_SANDBOX_ALLOW_WEAK_ISOLATION"] == "false"
        assert "User" not in weak and "Capabilities" not in weak["LinuxParameters"]
        assert strong["User"] == "0"
        assert strong["LinuxParameters"]["Capabilities"] == {"Add": ["SYS_ADMIN"]}

    resources = templates["services"]["Resources"]
    ec2 = services_renderer(templates, "ec2")
    fargate = services_renderer(templates, "fargate-weak")
    for service in SERVICES:
        strategy = resources[f"{service.capitalize()}Service"]["Properties"]["CapacityProviderStrategy"]
        assert ec2.render(strategy) == [{"CapacityProvider": "<ref:SandboxCapacityProvider>", "Weight": 1}]
        assert fargate.render(strategy) == [{"CapacityProvider": "FARGATE", "Weight": 1}]
        requires = resources[f"{service.capitalize()}TaskDefinition"]["Properties"]["RequiresCompatibilities"]
        assert ec2.render(requires) == ["EC2"] and fargate.render(requires) == ["FARGATE"]
    ec2_only = {"SandboxInstanceRole", "SandboxInstanceProfile", "SandboxLaunchTemplate",
                "SandboxAutoScalingGroup", "SandboxCapacityProvider"}
    assert {name for name, r in resources.items() if r.get("Condition") == "OnEc2Tier"} == ec2_only
    # No default: deploying means choosing the isolation knowingly.
    assert "Default" not in templates["services"]["Parameters"]["SandboxTier"]


def test_sandbox_instances_block_metadata_for_tasks(templates: dict[str, dict[str, Any]]) -> None:
    launch = templates["services"]["Resources"]["SandboxLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert launch["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                         "HttpPutResponseHopLimit": 1}
    user_data = services_renderer(templates, "ec2").render(launch["UserData"])
    assert "ECS_CLUSTER=<ref:Cluster>" in user_data
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data
    assert "ECS_CONTAINER_STOP_TIMEOUT=40s" in user_data


def _policy_statements(role: dict[str, Any], renderer: Renderer) -> list[dict[str, Any]]:
    statements = []
    for policy in renderer.render(role["Properties"].get("Policies", [])):
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def test_role_policies_reach_only_the_environment_prefixes(templates: dict[str, dict[str, Any]]) -> None:
    renderer = services_renderer(templates, "fargate-weak")
    roles = resources_of_type(templates["services"], "AWS::IAM::Role")
    allowed = (
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{CONFIG_PREFIX}",
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{CONFIG_PREFIX}/*",
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{SECRETS_PREFIX}*",
    )
    checked = 0
    for name in ("TaskRole", "ExecutionRole"):
        for statement in _policy_statements(roles[name], renderer):
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), actions
            assert set(actions) <= {"ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter",
                                    "secretsmanager:GetSecretValue"}
            for resource in statement["Resource"]:
                assert resource in allowed, f"{name} reaches {resource}"
                checked += 1
    assert checked == 4
    task_actions = {a for s in _policy_statements(roles["TaskRole"], renderer) for a in s["Action"]}
    assert "ssm:GetParametersByPath" in task_actions


def _secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


def test_every_secret_and_parameter_is_readable_by_the_task_role(templates: dict[str, dict[str, Any]]) -> None:
    renderer = services_renderer(templates, "fargate-weak")
    task_role = templates["services"]["Resources"]["TaskRole"]
    patterns = [r for s in _policy_statements(task_role, renderer) for r in s["Resource"]]
    secret_names = []
    for stack in ("config", "data"):
        stack_renderer = Renderer(templates[stack], {"Env": ENV})
        for secret in resources_of_type(templates[stack], "AWS::SecretsManager::Secret").values():
            secret_names.append(stack_renderer.render(secret["Properties"]["Name"]))
        for parameter in resources_of_type(templates[stack], "AWS::SSM::Parameter").values():
            name = stack_renderer.render(parameter["Properties"]["Name"])
            arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"
            assert any(fnmatch.fnmatchcase(arn, p) for p in patterns), name
    for name in secret_names:
        assert any(fnmatch.fnmatchcase(_secret_arn(name), p) for p in patterns), name
    assert {SECRETS_PREFIX + name for name in SECRETS_READ_BY_CODE} <= set(secret_names)
    assert {SECRETS_PREFIX + "database/url", SECRETS_PREFIX + "cache/url"} <= set(secret_names)


def test_seed_parameters_have_the_plan_names_and_defaults(templates: dict[str, dict[str, Any]]) -> None:
    renderer = Renderer(templates["config"], {"Env": ENV})
    seeded = {
        renderer.render(p["Properties"]["Name"]): renderer.render(p["Properties"]["Value"])
        for p in resources_of_type(templates["config"], "AWS::SSM::Parameter").values()
    }
    assert seeded == {
        f"{CONFIG_PREFIX}/evolution/population_size": "50",
        f"{CONFIG_PREFIX}/evolution/mutation_rate": "0.1",
        f"{CONFIG_PREFIX}/workflow/max_nodes": "1000",
        f"{CONFIG_PREFIX}/max_agents": "10000",
    }


def test_mesh_token_is_accepted_by_the_seeded_token_document(templates: dict[str, dict[str, Any]]) -> None:
    resources = templates["config"]["Resources"]
    assert resources["ServiceTokenSecret"]["Properties"]["GenerateSecretString"]["PasswordLength"] >= 16
    document = Renderer(templates["config"], {"Env": ENV}).render(resources["AuthTokensSecret"]["Properties"])
    assert "{{resolve:secretsmanager:<ref:ServiceTokenSecret>}}" in document["SecretString"]
    from common.auth import TokenTable

    # A distinctive value: TokenTable registers tokens for log redaction process-wide.
    token = "infra-test-service-token-5c1f0b9e2d7a4e63"
    table = TokenTable.from_json(
        document["SecretString"].replace("{{resolve:secretsmanager:<ref:ServiceTokenSecret>}}", token)
    )
    principal = table.lookup(token)
    assert principal is not None
    assert all(principal.may(f"{service}:write") for service in SERVICES)


def test_security_groups_open_grpc_only_to_services_and_callers(templates: dict[str, dict[str, Any]]) -> None:
    resources = templates["network"]["Resources"]
    ingress = resources_of_type(templates["network"], "AWS::EC2::SecurityGroupIngress")
    to_services = [r["Properties"] for r in ingress.values()
                   if r["Properties"]["GroupId"] == {"Ref": "ServicesSecurityGroup"}]
    assert sorted(str(p["SourceSecurityGroupId"]) for p in to_services) == sorted(
        [str({"Ref": "ServicesSecurityGroup"}), str({"Ref": "CallerSecurityGroupId"})]
    )
    assert all((p["IpProtocol"], p["FromPort"], p["ToPort"]) == ("tcp", 50051, 50054) for p in to_services)
    assert "SecurityGroupIngress" not in resources["ServicesSecurityGroup"]["Properties"]
    for name, port in (("DatabaseSecurityGroup", 5432), ("CacheSecurityGroup", 6379)):
        (rule,) = resources[name]["Properties"]["SecurityGroupIngress"]
        assert rule["SourceSecurityGroupId"] == {"Ref": "ServicesSecurityGroup"}
        assert (rule["FromPort"], rule["ToPort"]) == (port, port)
    assert all("CidrIp" not in rule or rule["CidrIp"] != "0.0.0.0/0"
               for r in walk(resources) if isinstance(r, dict) and "SecurityGroupIngress" in r
               for rule in r["SecurityGroupIngress"])
    assert resources["Namespace"]["Type"] == "AWS::ServiceDiscovery::PrivateDnsNamespace"
    assert templates["network"]["Parameters"]["NamespaceName"]["Default"] == "tdev.local"


def test_data_tier_is_encrypted_and_private(templates: dict[str, dict[str, Any]]) -> None:
    resources = templates["data"]["Resources"]
    database = resources["Database"]["Properties"]
    assert database["StorageEncrypted"] is True
    assert database["PubliclyAccessible"] is False
    assert database["MultiAZ"] == {"Ref": "DbMultiAz"}
    assert resources["DatabaseParameterGroup"]["Properties"]["Parameters"] == {"rds.force_ssl": "1"}
    assert resources["Database"]["DeletionPolicy"] == "Snapshot"
    cache = resources["Cache"]["Properties"]
    assert cache["TransitEncryptionEnabled"] is True and cache["AtRestEncryptionEnabled"] is True
    renderer = Renderer(templates["data"], {"Env": ENV, "SubnetIds": "subnet-1"})
    url = renderer.render(resources["DatabaseUrlSecret"]["Properties"]["SecretString"])
    assert url.startswith("postgresql://") and url.endswith("/tdev?ssl=require")
    assert renderer.render(resources["CacheUrlSecret"]["Properties"]["SecretString"]).startswith("rediss://:")
    for name in ("DatabaseCredentialsSecret", "CacheAuthTokenSecret"):
        generated = resources[name]["Properties"]["GenerateSecretString"]
        assert generated["ExcludePunctuation"] is True  # the value goes into a URL unescaped


def test_dashboard_body_is_json_with_every_service(templates: dict[str, dict[str, Any]]) -> None:
    renderer = Renderer(templates["observability"], {"Env": ENV}, region=REGION)
    body = renderer.render(templates["observability"]["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    dashboard = dashboard_json(body)
    titles = [widget["properties"]["title"] for widget in dashboard["widgets"]]
    assert "CPU % per service" in titles and "Memory % per service" in titles
    assert "Error log lines per service" in titles
    for widget in dashboard["widgets"]:
        if "metrics" in widget["properties"]:
            assert widget["properties"]["region"] == REGION
    cpu = next(w for w in dashboard["widgets"] if w["properties"]["title"] == "CPU % per service")
    assert [row[-1] for row in cpu["properties"]["metrics"]] == list(SERVICES)


def test_every_service_has_error_metric_and_alarms(templates: dict[str, dict[str, Any]]) -> None:
    resources = templates["observability"]["Resources"]
    filters = resources_of_type(templates["observability"], "AWS::Logs::MetricFilter")
    assert len(filters) == len(SERVICES)
    alarms = resources_of_type(templates["observability"], "AWS::CloudWatch::Alarm")
    renderer = Renderer(templates["observability"], {"Env": ENV})
    for service in SERVICES:
        name = service.capitalize()
        assert resources[f"{name}ErrorLines"]["Properties"]["FilterPattern"] == (
            '{ $.level = "error" || $.level = "critical" }'
        )
        for kind in ("Cpu", "Memory", "Errors", "NoTasks"):
            alarm = renderer.render(alarms[f"{name}{kind}Alarm"]["Properties"])
            assert service in alarm["AlarmName"]
            assert "AlarmActions" not in alarm  # no topic given: no action, and no empty list
    with_topic = Renderer(templates["observability"], {"Env": ENV, "AlarmTopicArn": "arn:aws:sns:x:1:t"})
    assert with_topic.render(alarms["RegistryCpuAlarm"]["Properties"])["AlarmActions"] == ["arn:aws:sns:x:1:t"]


def _fargate_memory_choices(cpu: int) -> set[int]:
    steps = {256: [512, 1024, 2048], 512: range(1024, 4097, 1024), 1024: range(2048, 8193, 1024),
             2048: range(4096, 16385, 1024), 4096: range(8192, 30721, 1024)}
    return set(steps[cpu])


@pytest.mark.parametrize("service", SERVICES)
def test_default_task_size_is_a_valid_fargate_pair_for_service(
    templates: dict[str, dict[str, Any]], service: str
) -> None:
    parameters = templates["services"]["Parameters"]
    cpu = int(parameters[f"{service.capitalize()}Cpu"]["Default"])
    memory = int(parameters[f"{service.capitalize()}Memory"]["Default"])
    assert memory in _fargate_memory_choices(cpu)


def test_error_metric_filter_matches_the_services_log_lines(templates: dict[str, dict[str, Any]]) -> None:
    import io
    import json
    import re

    import structlog

    from common.telemetry import configure_logging

    pattern = templates["observability"]["Resources"]["RegistryErrorLines"]["Properties"]["FilterPattern"]
    levels = set(re.findall(r'\$\.level = "(\w+)"', pattern))
    dimension = templates["observability"]["Resources"]["RegistryErrorLines"]["Properties"][
        "MetricTransformations"][0]["Dimensions"][0]["Value"]
    stream = io.StringIO()
    configure_logging("registry", "INFO", json_lines=True, stream=stream)
    try:
        log = structlog.get_logger("tests.infra")
        log.info("fine")
        log.error("broken")
        log.critical("worse")
    finally:
        configure_logging("test", "INFO", json_lines=True)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    matched = [line for line in lines if line.get("level") in levels]
    assert [line["event"] for line in matched] == ["broken", "worse"]
    assert {line[dimension.removeprefix("$.")] for line in matched} == {"registry"}
