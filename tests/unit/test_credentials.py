"""Which host credential serves each provider, how the upstream gets it, and which a run will use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.base.errors import UsageError
from runner.gateway.credentials import OAUTH_BETA, host_credentials
from runner.gateway.upstreams import Upstream, upstreams_from_env
from runner.usecases.credentials import AIDER_OPENAI_DEFAULT, choose_credentials

TOKEN = "sk-ant-oat01-subscription-token"


def test_an_api_key_wins_over_a_subscription_token_as_the_cli_chooses() -> None:
    both = host_credentials({"ANTHROPIC_API_KEY": "sk-ant-key", "CLAUDE_CODE_OAUTH_TOKEN": TOKEN})
    assert (both["anthropic"].kind, both["anthropic"].variable) == ("api-key", "ANTHROPIC_API_KEY")
    token = host_credentials({"CLAUDE_CODE_OAUTH_TOKEN": TOKEN, "ANTHROPIC_API_KEY": "  "})
    assert (token["anthropic"].kind, token["anthropic"].variable) == ("subscription", "CLAUDE_CODE_OAUTH_TOKEN")
    assert host_credentials({}) == {}
    assert TOKEN not in repr(token) and token["anthropic"].describe() == "subscription token (CLAUDE_CODE_OAUTH_TOKEN)"


def test_a_subscription_token_goes_upstream_as_bearer_with_its_beta_flag_whatever_the_agent_sent() -> None:
    upstream = upstreams_from_env({"CLAUDE_CODE_OAUTH_TOKEN": TOKEN})["anthropic"]
    sent = {"x-api-key": "placeholder", "Authorization": "Bearer placeholder", "Anthropic-Beta": "fine-grained-x",
            "anthropic-version": "2023-06-01"}  # fmt: skip
    headers = upstream.request_headers(sent)
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert not {"x-api-key", "Authorization", "Anthropic-Beta"} & set(headers)
    assert headers["anthropic-beta"] == f"fine-grained-x,{OAUTH_BETA}" and headers["anthropic-version"] == "2023-06-01"
    already = upstream.request_headers({"anthropic-beta": f"{OAUTH_BETA},other"})
    assert already["anthropic-beta"] == f"{OAUTH_BETA},other"  # not added twice
    # Control: an API key goes as x-api-key, and the agent's betas pass as they are.
    key = Upstream("anthropic", "http://h", "sk-ant-key", "api-key", "ANTHROPIC_API_KEY")
    plain = key.request_headers({"x-api-key": "placeholder", "anthropic-beta": "fine-grained-x"})
    assert plain == {"anthropic-beta": "fine-grained-x", "x-api-key": "sk-ant-key"}


def test_no_credential_no_start_naming_what_would_serve() -> None:
    with pytest.raises(UsageError, match=r"ANTHROPIC_API_KEY .* or CLAUDE_CODE_OAUTH_TOKEN .*claude setup-token"):
        choose_credentials("claude-code", None, {})
    with pytest.raises(UsageError, match="--agent codex needs a model credential on the host: set OPENAI_API_KEY"):
        choose_credentials("codex", None, host_credentials({"CLAUDE_CODE_OAUTH_TOKEN": TOKEN}))
    with pytest.raises(UsageError, match=r"--agent aider .* ANTHROPIC_API_KEY or OPENAI_API_KEY"):
        choose_credentials("aider", None, {})
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        choose_credentials("aider", "gpt-5", host_credentials({"ANTHROPIC_API_KEY": "k"}))
    assert choose_credentials("demo", None, {}) == (None, [])
    assert choose_credentials("custom", None, {}) == (None, [])


def test_aiders_default_model_follows_the_hosts_credentials() -> None:
    openai_only = host_credentials({"OPENAI_API_KEY": "sk-proj"})
    model, used = choose_credentials("aider", None, openai_only)
    assert model == AIDER_OPENAI_DEFAULT and [c.provider for c in used] == ["openai"]
    both = host_credentials({"OPENAI_API_KEY": "sk-proj", "ANTHROPIC_API_KEY": "sk-ant"})
    assert choose_credentials("aider", None, both)[0] is None  # aider's own default: an Anthropic model
    assert choose_credentials("aider", "anthropic/claude-sonnet-4-5", both)[1][0].provider == "anthropic"
    assert choose_credentials("aider", "gpt-4.1", both)[1][0].provider == "openai"


def test_a_subscription_token_cannot_be_passed_into_the_container_with_env() -> None:
    from runner.usecases.options import secret_values

    for name in ("CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        with pytest.raises(UsageError, match="stay on the host"):
            secret_values([name])


def test_wait_on_limit_and_max_tokens_become_limits() -> None:
    from runner.cli.options import LimitFlags
    from runner.record.models import Limits

    assert LimitFlags(wait_on_limit="2h", max_tokens=5000).options().apply(Limits()).wait_on_limit_seconds == 7200
    never = LimitFlags(no_wait_on_limit=True).options().apply(Limits())
    assert never.wait_on_limit_seconds == 0.0
    assert LimitFlags(wait_on_limit="0").options().apply(Limits()).wait_on_limit_seconds == 0.0
    assert LimitFlags(max_tokens=5000).options().apply(Limits()).max_tokens == 5000
    assert Limits().wait_on_limit_seconds is None  # default: the rest of --max-time
    with pytest.raises(UsageError, match="not both"):
        LimitFlags(wait_on_limit="1h", no_wait_on_limit=True).given()
    with pytest.raises(UsageError, match="--wait-on-limit"):
        LimitFlags(wait_on_limit="soon").options().apply(Limits())
    with pytest.raises(UsageError, match="--max-tokens"):
        LimitFlags(max_tokens=0).options().apply(Limits())


def test_a_chatgpt_sign_in_serves_openai_when_no_key_is_set(tmp_path: Path) -> None:
    from runner.gateway.chatgpt import BASE_URL, jwt_expiry, read_tokens

    home = tmp_path / "codex"
    home.mkdir()
    auth = {"OPENAI_API_KEY": None, "tokens": {"id_token": "a.b.c", "access_token": "at-1", "refresh_token": "rt-1",
                                                "account_id": "acct-1"}}  # fmt: skip
    (home / "auth.json").write_text(json.dumps(auth))
    env = {"CODEX_HOME": str(home)}
    found = host_credentials(env)["openai"]
    assert found.kind == "subscription" and found.describe() == f"ChatGPT sign-in ({home / 'auth.json'})"
    upstream = upstreams_from_env(env)["openai"]
    assert upstream.base_url == BASE_URL and upstream.chatgpt is not None
    assert upstream.request_headers({"chatgpt-account-id": "placeholder", "authorization": "Bearer placeholder"}) == {
        "authorization": "Bearer at-1", "chatgpt-account-id": "acct-1"}  # fmt: skip
    # An API key wins, as in Codex; an auth.json that holds a key is not a sign-in.
    assert host_credentials({**env, "OPENAI_API_KEY": "sk-proj"})["openai"].kind == "api-key"
    (home / "auth.json").write_text(json.dumps({**auth, "OPENAI_API_KEY": "sk-in-file"}))
    assert read_tokens(home / "auth.json") is None and "openai" not in host_credentials(env)
    assert jwt_expiry("not-a-jwt") is None


def test_the_containers_sign_in_is_a_placeholder_codex_accepts() -> None:
    from runner.agents.codex import placeholder_auth_json
    from runner.gateway.chatgpt import jwt_expiry

    auth = json.loads(placeholder_auth_json())
    tokens = auth["tokens"]
    assert auth["OPENAI_API_KEY"] is None and len(tokens["id_token"].split(".")) == 3  # JWT-shaped, or Codex drops it
    assert (jwt_expiry(tokens["access_token"]) or 0) > 4e9  # never stale: Codex does not try to refresh it
    assert all("placeholder" in v or v.count(".") == 2 for v in tokens.values())


def test_auth_keeps_only_the_kind_asked_for() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant", "CLAUDE_CODE_OAUTH_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-proj"}
    assert host_credentials(env, "subscription")["anthropic"].variable == "CLAUDE_CODE_OAUTH_TOKEN"
    assert "openai" not in host_credentials(env, "subscription")  # a key is never used for a subscriber's night
    assert host_credentials(env, "api-key")["anthropic"].variable == "ANTHROPIC_API_KEY"
    assert host_credentials({"CLAUDE_CODE_OAUTH_TOKEN": TOKEN}, "api-key") == {}
