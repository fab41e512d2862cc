"""Where the client's connection settings come from: arguments, environment, profile, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdev_client import Connection, ConnectionError_

pytestmark = pytest.mark.unit

PROFILES = """
[default]
registry = "default-registry:50051"

[prod]
registry = "registry.prod:50051"
workflow = "workflow.prod:50052"
token_env = "PROD_TOKEN"
ca_file = "~/prod-ca.pem"
deadline_seconds = 10
"""


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(PROFILES)
    return path


def test_defaults_are_the_loopback_mesh_of_make_run(tmp_path: Path) -> None:
    connection = Connection.resolve(environ={}, profiles_file=tmp_path / "absent.toml")
    assert (connection.registry, connection.evolution, connection.token, connection.tls) == (
        "127.0.0.1:50051", "127.0.0.1:50054", None, False)


def test_the_default_profile_applies_when_none_is_named(profiles: Path) -> None:
    assert Connection.resolve(environ={}, profiles_file=profiles).registry == "default-registry:50051"


def test_a_named_profile_with_its_token_from_the_environment(profiles: Path) -> None:
    connection = Connection.resolve(environ={"TDEV_PROFILE": "prod", "PROD_TOKEN": "s3cret"}, profiles_file=profiles)
    assert (connection.profile, connection.registry, connection.workflow, connection.builder) == (
        "prod", "registry.prod:50051", "workflow.prod:50052", "127.0.0.1:50053")
    assert connection.token == "s3cret" and connection.deadline_seconds == 10.0
    assert connection.ca_file == Path("~/prod-ca.pem").expanduser()
    assert "s3cret" not in repr(connection)


def test_arguments_beat_the_environment_which_beats_the_profile(profiles: Path) -> None:
    env = {"PROD_TOKEN": "from-profile", "TDEV_TOKEN": "from-env", "TDEV_REGISTRY_ADDRESS": "env:1"}
    from_env = Connection.resolve(profile="prod", environ=env, profiles_file=profiles)
    assert (from_env.registry, from_env.token) == ("env:1", "from-env")
    explicit = Connection.resolve(profile="prod", environ=env, profiles_file=profiles, registry="arg:2",
                                  token="from-arg")
    assert (explicit.registry, explicit.token) == ("arg:2", "from-arg")


@pytest.mark.parametrize(("text", "profile", "env", "message"), [
    (PROFILES, "staging", {}, "no profile 'staging' in"),
    (PROFILES, "prod", {}, "takes its token from $PROD_TOKEN, which is not set"),
    ("[x]\nregistry_adress = 'a:1'\n", "x", {}, "unknown connection setting(s) registry_adress"),
    ("[x\n", "x", {}, "is unreadable"),
    (None, "prod", {}, "there is no profiles file"),
])
def test_unusable_settings_say_what_is_wrong(tmp_path: Path, text: str | None, profile: str,
                                             env: dict[str, str], message: str) -> None:
    path = tmp_path / "profiles.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConnectionError_) as raised:
        Connection.resolve(profile=profile, environ=env, profiles_file=path)
    assert message in str(raised.value)


def test_a_client_certificate_needs_its_key_and_a_ca(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConnectionError_, match="needs its key"):
        Connection(cert_file=cert).pem()
    with pytest.raises(ConnectionError_, match="set the CA too"):
        Connection(cert_file=cert, key_file=cert).pem()
    with pytest.raises(ConnectionError_, match="cannot read"):
        Connection(ca_file=tmp_path / "missing.pem").pem()


def test_the_typed_dicts_are_up_to_date_with_the_protos() -> None:
    from tdev_client import typegen

    assert typegen.TARGET.read_text() == typegen.render(), "run: python tdev_client/typegen.py"
