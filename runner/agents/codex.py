"""OpenAI's Codex CLI (`codex exec --json`) with a generated model provider pointing at the gateway.

Seen with 0.169.0: it reads no OPENAI_BASE_URL, only `$CODEX_HOME/config.toml`; with the provider below it
calls `POST /v1/responses` (SSE) with `authorization: Bearer <OPENAI_API_KEY>`. With an explicit `--model`
it offers plain function tools (`exec_command` with `{"cmd": ...}`); for its own default model it offers
one freeform JavaScript `exec` tool (`await tools.exec_command({cmd})`) that calls the others.
`CODEX_HOME` must be writable and not under /tmp (it refuses to create its helper binaries there); it
reads stdin unless given </dev/null. It has no turn limit to pass --max-turns to. Usage comes from its
`turn.completed` events (no cost); when the API refuses it prints `error` events ("Reconnecting... 1/N
(..., last status: 429 Too Many Requests)") and ends with `turn.failed`, whose `error.message` is the
only place the status appears.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from runner.agents.base import (
    PLACEHOLDER_KEY,
    PROMPT_FILE,
    AgentAdapter,
    AgentOptions,
    Endpoints,
    count,
    json_events,
    read_tail,
    sdk_env,
    text,
)
from runner.base.layout import HOME
from runner.record.models import AgentReport, TokenUsage

CODEX_HOME = f"{HOME}/.codex"
PLACEHOLDER = PLACEHOLDER_KEY
PROVIDER = "harness"
# Matched only inside Codex's own `turn.failed` error message, never in the agent's or tools' output.
RATE_LIMIT_MESSAGE = re.compile(
    r"\b(429|529)\b|too many requests|rate[ _-]?limit|usage[ _-]?limit|quota|overloaded", re.IGNORECASE
)
# One quick retry; longer waits are the supervisor's backoff, driven by the gateway.
MAX_RETRIES = 1


def config_toml(endpoints: Endpoints, *, signed_in: bool = False) -> str:
    """Codex's config: its provider is the gateway. Signed in with ChatGPT (`signed_in`), the provider takes
    the sign-in's tokens from auth.json instead of a key, and the ChatGPT backend's side calls (plugins, model
    list, account checks) also go to the gateway, which answers them 404 (measured: Codex goes on)."""
    q = json.dumps  # a JSON string is a TOML basic string
    gateway = endpoints.openai_base_url.removesuffix("/v1")
    top = [f"model_provider = {q(PROVIDER)}", "check_for_update_on_startup = false"]
    if signed_in:
        top.append(f"chatgpt_base_url = {q(gateway + '/backend-api/')}")
    auth = ["requires_openai_auth = true"] if signed_in else [f"env_key = {q('OPENAI_API_KEY')}"]
    return "\n".join([
        *top,
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[otel]",
        f"metrics_exporter = {q('none')}",
        "",
        f"[model_providers.{PROVIDER}]",
        f"name = {q('harness model gateway')}",
        f"base_url = {q(endpoints.openai_base_url)}",
        *auth,
        f"wire_api = {q('responses')}",
        f"request_max_retries = {MAX_RETRIES}",
        f"stream_max_retries = {MAX_RETRIES}",
        "",
    ])  # fmt: skip


def placeholder_auth_json() -> str:
    """A ChatGPT sign-in as Codex reads it, holding placeholders only (the gateway has the real tokens).

    Codex needs JWT-shaped tokens (it drops a sign-in whose id_token is not one, silently); the access token
    expires in 2100, so that Codex never tries to refresh it (its refresh URL points at the gateway anyway)."""

    def jwt(claims: dict[str, object]) -> str:
        def part(data: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.{PLACEHOLDER}"

    auth = {"chatgpt_account_id": PLACEHOLDER, "chatgpt_plan_type": "plus", "chatgpt_user_id": PLACEHOLDER}
    claims = {"exp": 4102444800, "email": "agent@harness.invalid", "https://api.openai.com/auth": auth}
    tokens = {"id_token": jwt(claims), "access_token": jwt(claims), "refresh_token": PLACEHOLDER,
              "account_id": PLACEHOLDER}  # fmt: skip
    return json.dumps({"OPENAI_API_KEY": None, "tokens": tokens, "last_refresh": "2026-01-01T00:00:00Z"})


class Codex(AgentAdapter):
    name = "codex"
    image = "harness-codex:latest"
    description = "OpenAI's Codex CLI"

    def command(self, options: AgentOptions, endpoints: Endpoints) -> list[str]:
        args = ["--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]
        if options.model:
            args += ["--model", options.model]
        # $1: the config for an API key, $2: for a ChatGPT sign-in (chosen by the iteration's environment, which
        # follows the credential the gateway holds now, not the one the session began with).
        script = (
            'mkdir -p "$CODEX_HOME" && if [ -n "${HARNESS_CODEX_AUTH:-}" ]; then '
            'printf "%s" "$2" > "$CODEX_HOME/config.toml" && '
            'printf "%s" "$HARNESS_CODEX_AUTH" > "$CODEX_HOME/auth.json"; '
            'else printf "%s" "$1" > "$CODEX_HOME/config.toml"; fi && shift 2 && '
            f'exec codex exec "$@" "$(cat {PROMPT_FILE})" </dev/null'
        )
        configs = (config_toml(endpoints), config_toml(endpoints, signed_in=True))
        return ["sh", "-c", script, "codex", *configs, *args]

    def env(self, options: AgentOptions, endpoints: Endpoints) -> dict[str, str]:
        env = {**sdk_env(endpoints), "CODEX_HOME": CODEX_HOME}
        if "openai" in endpoints.subscriptions:
            env.pop("OPENAI_API_KEY")  # a key would win over the sign-in
            env["HARNESS_CODEX_AUTH"] = placeholder_auth_json()
            # Codex's own refresh, should it try one, reaches the gateway (a 404), never OpenAI with a placeholder.
            env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = endpoints.openai_base_url.removesuffix("/v1") + "/oauth/token"
        return env

    def parse_output(self, log_path: Path) -> AgentReport | None:
        return parse_codex_events(read_tail(log_path))


def parse_codex_events(lines: list[str]) -> AgentReport | None:
    usage: TokenUsage | None = None
    failed: str | None = None  # the last turn's failure message, if it failed
    ended = False  # a turn completed or failed (not killed or cut short)
    seen = False
    for event in json_events(lines):
        kind = event.get("type")
        if kind == "turn.completed":
            seen = ended = True
            failed = None
            raw = event.get("usage")
            if isinstance(raw, dict):
                total_in = count(raw.get("input_tokens"))
                cached = min(count(raw.get("cached_input_tokens")), total_in)  # part of input_tokens
                turn = TokenUsage(
                    input_tokens=total_in - cached,
                    cache_read_tokens=cached,
                    cache_write_tokens=count(raw.get("cache_write_input_tokens")),
                    output_tokens=count(raw.get("output_tokens")),
                    reasoning_tokens=count(raw.get("reasoning_output_tokens")),
                )
                usage = turn if usage is None else usage + turn
        elif kind == "turn.failed":
            seen = ended = True
            error = event.get("error")
            failed = (text(error.get("message"), 1000) if isinstance(error, dict) else None) or ""
        elif kind in {"thread.started", "turn.started"}:
            seen = True
    if not seen:
        return None
    return AgentReport(
        usage=usage,
        is_error=(failed is not None) if ended else None,
        rate_limited=failed is not None and bool(RATE_LIMIT_MESSAGE.search(failed)),
    )
