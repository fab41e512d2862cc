"""Keys from Secrets Manager (moto): used for calls, never in logs or error messages."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from tdev_common.cache import LocalCache
from tdev_common.config import CommonSettings
from tdev_common.errors import Unavailable
from tdev_common.llm import DailyBudget, Message, ProviderRejected, build_llm
from tdev_common.secrets import SecretStore
from tests.llm.conftest import SleepRecorder, fast_settings
from tests.llm.llm_wire_server import CHAT, MESSAGES, Reply, WireServer, anthropic_message, error_body, openai_chat

pytestmark = pytest.mark.integration  # real databases, Redis or moto

PREFIX = "/t-developer/test/"
PLANTED_OPENAI = "sk-planted-openai-KEY-7f3a9c2e1b"
PLANTED_ANTHROPIC = "planted-anthropic-secret-5d8e2a"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's Secrets Manager holding both keys as the seed plan stores them."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=f"{PREFIX}api-keys/openai", SecretString=json.dumps({"api_key": PLANTED_OPENAI}))
        client.create_secret(Name=f"{PREFIX}api-keys/anthropic", SecretString=PLANTED_ANTHROPIC)
        yield


async def test_keys_from_secrets_manager_reach_providers_but_never_logs_or_errors(
        aws: None, wire: WireServer, logs: io.StringIO, sleeps: SleepRecorder) -> None:
    wire.script(CHAT, Reply(body=openai_chat("fine")),
                Reply(401, error_body(f"Incorrect API key provided: {PLANTED_OPENAI}.", "invalid_request_error")))
    wire.script(MESSAGES, Reply(body=anthropic_message("fine too")))
    settings = fast_settings(wire, default_route=["openai"], openai_key_required=True)
    client = await build_llm(settings, common=CommonSettings(), secrets=SecretStore(prefix=PREFIX, region="us-east-1"),
                             cache=LocalCache(), daily_budget=DailyBudget(None), sleep=sleeps)
    try:
        assert client.real_providers() == ["openai", "anthropic"]
        prompt = [Message.user("hi")]
        assert (await client.complete(prompt, purpose="review", max_tokens=10, temperature=0.3)).text == "fine"
        assert (await client.complete(prompt, purpose="review", max_tokens=10, temperature=0.3,
                                      model="anthropic:claude-test")).text == "fine too"
        with pytest.raises(ProviderRejected) as caught:
            await client.complete(prompt, purpose="review", max_tokens=10, temperature=0.3)
    finally:
        await client.close()
    assert wire.to(CHAT)[0].headers["authorization"] == f"Bearer {PLANTED_OPENAI}"
    assert wire.to(MESSAGES)[0].headers["authorization"] == f"Bearer {PLANTED_ANTHROPIC}"
    message = caught.value.message
    assert message == "LLM provider openai refused the request: openai answered HTTP 401: Incorrect API key " \
                      "provided: **********."
    assert PLANTED_OPENAI not in str(caught.value) and PLANTED_OPENAI not in repr(caught.value)
    captured = logs.getvalue()
    assert '"event": "llm_call"' in captured and '"event": "llm_request_body"' in captured
    assert PLANTED_OPENAI not in captured and PLANTED_ANTHROPIC not in captured
    assert PLANTED_OPENAI[:12] not in captured


async def test_unreadable_secrets_manager_fails_loudly_without_values(wire: WireServer, sleeps: SleepRecorder,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = SecretStore(prefix=PREFIX, region="us-east-1")

    async def broken(name: str, **_options: object) -> None:
        raise RuntimeError(f"AccessDenied for {PREFIX}{name}")

    monkeypatch.setattr(store, "get", broken)
    with pytest.raises(Unavailable) as caught:
        await build_llm(fast_settings(wire), common=CommonSettings(), secrets=store, cache=LocalCache(),
                        daily_budget=DailyBudget(None), sleep=sleeps)
    assert caught.value.message == ("cannot read LLM key 'api-keys/openai' from Secrets Manager (RuntimeError); "
                                    "check the task role and TDEV_SECRETS_PREFIX")


async def test_without_keys_only_offline_is_configured(wire: WireServer, sleeps: SleepRecorder) -> None:
    client = await build_llm(fast_settings(wire, openai_key_required=True), common=CommonSettings(),
                             secrets=SecretStore(prefix=None), cache=LocalCache(), daily_budget=DailyBudget(None),
                             sleep=sleeps)
    assert [p.name for p in client.configured_providers()] == ["offline"]
    assert (client.real_providers(), client.ensemble_available(), client.embeddings_available()) == ([], False, False)
    await client.close()
