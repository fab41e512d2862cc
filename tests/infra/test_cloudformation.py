"""The CloudFormation templates: cfn-lint clean, wired together, and saying what the services need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from tdev_common.config import CommonSettings, clear_parameter_cache
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
# Secret names the code reads below TDEV_SECRETS_PREFIX (tdev_common/runtime.py, tdev_common/llm/settings.py).
SECRETS_READ_BY_CODE = ("auth/tokens", "auth/service-token", "api-keys/openai", "api-keys/anthropic")


@pytest.fixture(scope="module")
def templates() -> dict[str, dict[str, Any]]:
    return {name: load_template(name) for name in STACK_ORDER}


def services_renderer(templates: dict[str, dict[str, Any]]) -> Renderer:
    return Renderer(
        templates["services"],
        {"Env": ENV, "ImageUri": "img:1", "SubnetIds": "subnet-1"},
        region=REGION,
        account=ACCOUNT,
        imports={f"tdev-{ENV}-NamespaceName": "tdev.local"},
    )


def task_definition(templates: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    definition = templates["services"]["Resources"][f"{name.capitalize()}TaskDefinition"]
    rendered: dict[str, Any] = services_renderer(templates).render(definition["Properties"])
    return rendered


def container(templates: dict[str, dict[str, Any]], service: str) -> dict[str, Any]:
    rendered = task_definition(templates, service)
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

    box = container(templates, service)
    environment = {item["Name"]: item["Value"] for item in box["Environment"]}
    assert environment["TDEV_MODE"] == "production"
    assert box["Command"] == [f"{service}_svc"]
    assert box["PortMappings"] == [{"ContainerPort": PORTS[service], "Protocol": "tcp"}]
    assert box["HealthCheck"]["Command"] == ["CMD", "python", "/opt/tdev/health_probe.py", service]
    assert box["StopTimeout"] > float(environment["TDEV_GRACE_SECONDS"])
    assert box["LogConfiguration"]["LogDriver"] == "awslogs"
    assert {secret["Name"] for secret in box["Secrets"]} == {"TDEV_DATABASE_URL", "TDEV_REDIS_URL", "TDEV_TLS_PEM"}
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
    box = container(templates, service)
    environment = {item["Name"]: str(item["Value"]) for item in box["Environment"]}
    environment |= {"TDEV_DATABASE_URL": "postgresql://u:p@db:5432/tdev", "TDEV_REDIS_URL": "rediss://:t@c:6379/0",
                    "TDEV_TLS_PEM": "{}"}
    known, pending = known_setting_names()
    assert set(environment) - known <= pending
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
    assert settings.tls_required is True


def test_services_run_on_fargate_as_non_root_and_never_run_agent_code_weakly(
    templates: dict[str, dict[str, Any]]
) -> None:
    resources = templates["services"]["Resources"]
    renderer = services_renderer(templates)
    for service in SERVICES:
        box = container(templates, service)
        environment = {item["Name"]: item["Value"] for item in box["Environment"]}
        assert box["User"] == "10001:10001"
        assert not box["User"].startswith("0")
        assert "Capabilities" not in box["LinuxParameters"] and "Privileged" not in box
        assert environment["TDEV_SANDBOX_ALLOW_WEAK_ISOLATION"] == "false"
        assert environment["TDEV_SANDBOX_REMOTE_ADDRESSES"] == "sandbox.tdev.local:50060"
        assert environment["TDEV_TLS_REQUIRED"] == "true"
        name = service.capitalize()
        assert task_definition(templates, service)["RequiresCompatibilities"] == ["FARGATE"]
        strategy = renderer.render(resources[f"{name}Service"]["Properties"]["CapacityProviderStrategy"])
        assert strategy == [{"CapacityProvider": "FARGATE", "Weight": 1}]
        (tls,) = [secret for secret in box["Secrets"] if secret["Name"] == "TDEV_TLS_PEM"]
        assert tls["ValueFrom"] == f"<import:tdev-{ENV}-{name}TlsSecretArn>"
    assert "SandboxTier" not in templates["services"]["Parameters"]
    assert not [name for name, r in resources.items() if "Condition" in r]


def test_sandbox_tier_runs_on_ec2_with_no_role_no_secrets_and_only_its_tls_identity(
    templates: dict[str, dict[str, Any]]
) -> None:
    resources = templates["services"]["Resources"]
    renderer = services_renderer(templates)
    definition = task_definition(templates, "sandbox")
    assert "TaskRoleArn" not in definition
    assert definition["RequiresCompatibilities"] == ["EC2"]
    assert definition["ExecutionRoleArn"] == "<getatt:SandboxExecutionRole.Arn>"
    (box,) = definition["ContainerDefinitions"]
    assert box["Command"] == ["tdev_common.sandbox.worker"]
    assert box["PortMappings"] == [{"ContainerPort": 50060, "Protocol": "tcp"}]
    environment = {item["Name"]: str(item["Value"]) for item in box["Environment"]}
    assert environment["TDEV_SANDBOX_ALLOW_WEAK_ISOLATION"] == "false"
    assert environment["TDEV_TLS_REQUIRED"] == "true"
    # No way to the data, the configuration or the secrets of the mesh.
    for name in environment:
        assert not name.startswith(("TDEV_DATABASE", "TDEV_REDIS", "TDEV_AUTH", "TDEV_SERVICE_TOKEN",
                                    "TDEV_PARAMETER_STORE", "TDEV_SECRETS", "TDEV_LLM", "TDEV_AWS")), name
        assert not name.endswith("_ADDRESS"), name
    assert box["Secrets"] == [{"Name": "TDEV_TLS_PEM", "ValueFrom": f"<import:tdev-{ENV}-SandboxTlsSecretArn>"}]
    assert box["LinuxParameters"]["Capabilities"] == {"Add": ["SYS_ADMIN"]}
    service = renderer.render(resources["SandboxService"]["Properties"])
    assert service["CapacityProviderStrategy"] == [{"CapacityProvider": "<ref:SandboxCapacityProvider>", "Weight": 1}]
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"] == [
        f"<import:tdev-{ENV}-SandboxSecurityGroupId>"]
    provider = resources["SandboxCapacityProvider"]["Properties"]["AutoScalingGroupProvider"]
    assert provider["AutoScalingGroupArn"] == {"Ref": "SandboxAutoScalingGroup"}
    assert templates["services"]["Parameters"]["SandboxAmiId"]["Default"] == (
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
    (statement,) = _policy_statements(resources["SandboxExecutionRole"], renderer)
    assert statement["Resource"] == [f"<import:tdev-{ENV}-SandboxTlsSecretArn>"]


def test_sandbox_security_group_has_no_egress_and_ingress_only_from_the_services(
    templates: dict[str, dict[str, Any]]
) -> None:
    resources = templates["network"]["Resources"]
    group = resources["SandboxSecurityGroup"]["Properties"]
    (ingress,) = group["SecurityGroupIngress"]
    assert ingress["SourceSecurityGroupId"] == {"Ref": "ServicesSecurityGroup"}
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 50060, 50060)
    # The one egress rule matches nothing (ICMP type 252 to loopback): it only replaces the default allow-all.
    assert group["SecurityGroupEgress"] == [{"Description": "No egress", "IpProtocol": "icmp", "FromPort": 252,
                                             "ToPort": 86, "CidrIp": "127.0.0.1/32"}]
    for kind in ("AWS::EC2::SecurityGroupEgress", "AWS::EC2::SecurityGroupIngress"):
        for rule in resources_of_type(templates["network"], kind).values():
            if rule["Properties"]["GroupId"] == {"Ref": "SandboxSecurityGroup"}:
                raise AssertionError(f"extra {kind} on the sandbox group: {rule}")
    to_sandbox = resources["ServicesEgressToSandbox"]["Properties"]
    assert to_sandbox["DestinationSecurityGroupId"] == {"Ref": "SandboxSecurityGroup"}
    assert (to_sandbox["FromPort"], to_sandbox["ToPort"]) == (50060, 50060)


def test_sandbox_instances_block_metadata_for_tasks(templates: dict[str, dict[str, Any]]) -> None:
    launch = templates["services"]["Resources"]["SandboxLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert launch["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                         "HttpPutResponseHopLimit": 1}
    user_data = services_renderer(templates).render(launch["UserData"])
    assert "ECS_CLUSTER=<ref:Cluster>" in user_data
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data
    assert "ECS_CONTAINER_STOP_TIMEOUT=40s" in user_data


def _policy_statements(role: dict[str, Any], renderer: Renderer) -> list[dict[str, Any]]:
    statements = []
    for policy in renderer.render(role["Properties"].get("Policies", [])):
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


# What each service's code reads (tdev_common/runtime.py: the auth tokens; tdev_common/llm/settings.py: the API keys
# and the llm section, for the services that call a model; each settings class: its own section).
SECTIONS = {"registry": {"registry", "llm"}, "workflow": {"workflow"}, "builder": {"builder", "llm"},
            "evolution": {"evolution", "llm"}}
LLM_SERVICES = {"registry", "builder", "evolution"}


@pytest.mark.parametrize("service", SERVICES)
def test_each_task_role_reaches_only_its_own_parameters_and_secrets(
    templates: dict[str, dict[str, Any]], service: str
) -> None:
    renderer = services_renderer(templates)
    resources = templates["services"]["Resources"]
    name = service.capitalize()
    assert task_definition(templates, service)["TaskRoleArn"] == f"<getatt:{name}TaskRole.Arn>"
    parameters: set[str] = set()
    secrets: set[str] = set()
    for statement in _policy_statements(resources[f"{name}TaskRole"], renderer):
        assert statement["Effect"] == "Allow"
        actions = _actions(statement)
        for resource in statement["Resource"]:
            assert "*" not in resource, f"{service} reaches {resource}"
        if actions == ["ssm:GetParametersByPath"]:
            for resource in statement["Resource"]:
                path = resource.removeprefix(f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter")
                if path == CONFIG_PREFIX:
                    # The top level, and only non-recursively: a recursive read of it reaches every section.
                    assert statement["Condition"] == {"StringEquals": {"ssm:Recursive": "false"}}
                else:
                    assert "Condition" not in statement
                parameters.add(path)
        else:
            assert actions == ["secretsmanager:GetSecretValue"], actions
            secrets.update(statement["Resource"])
    assert parameters == {CONFIG_PREFIX} | {f"{CONFIG_PREFIX}/{section}" for section in SECTIONS[service]}
    expected = {"ServiceTokenSecretArn", "AuthTokensSecretArn"}
    if service in LLM_SERVICES:
        expected |= {"OpenAiApiKeySecretArn", "AnthropicApiKeySecretArn"}
    assert secrets == {f"<import:tdev-{ENV}-{export}>" for export in expected}


def test_execution_roles_inject_only_what_their_tasks_get(templates: dict[str, dict[str, Any]]) -> None:
    renderer = services_renderer(templates)
    resources = templates["services"]["Resources"]
    (statement,) = _policy_statements(resources["ExecutionRole"], renderer)
    assert _actions(statement) == ["secretsmanager:GetSecretValue"]
    injected = {secret["ValueFrom"] for service in SERVICES for secret in container(templates, service)["Secrets"]}
    assert set(statement["Resource"]) == injected
    assert len(injected) == 2 + len(SERVICES)
    roles = resources_of_type(templates["services"], "AWS::IAM::Role")
    assert set(roles) == {"SandboxInstanceRole", "ExecutionRole", "SandboxExecutionRole",
                          *(f"{s.capitalize()}TaskRole" for s in SERVICES)}


def _secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


def test_every_secret_the_code_reads_is_exported_and_every_parameter_reachable(
    templates: dict[str, dict[str, Any]]
) -> None:
    config = templates["config"]
    renderer = Renderer(config, {"Env": ENV})
    names = {renderer.render(secret["Properties"]["Name"]): logical
             for logical, secret in resources_of_type(config, "AWS::SecretsManager::Secret").items()}
    assert {SECRETS_PREFIX + name for name in SECRETS_READ_BY_CODE} <= set(names)
    exported = {renderer.render(output["Export"]["Name"]): output["Value"] for output in config["Outputs"].values()}
    for logical in names.values():
        assert exported[f"tdev-{ENV}-{logical}Arn"] == {"Ref": logical}
    for service in (*SERVICES, "sandbox"):
        assert SECRETS_PREFIX + f"tls/{service}" in names
    # Every seeded parameter is inside a path some role may read (its section, or the top level).
    allowed = {CONFIG_PREFIX} | {f"{CONFIG_PREFIX}/{s}" for sections in SECTIONS.values() for s in sections}
    for parameter in resources_of_type(config, "AWS::SSM::Parameter").values():
        name = renderer.render(parameter["Properties"]["Name"])
        assert name.rsplit("/", 1)[0] in allowed, name


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
    from tdev_common.auth import TokenTable

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

    from tdev_common.telemetry import configure_logging

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
