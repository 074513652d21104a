"""Claude Code (`claude -p`), reading its stream-json events.

Seen with 2.1.328 against a scripted Messages API: it calls `POST /v1/messages?beta=true` (SSE) with the
key in `x-api-key`, and ends with a `result` event (`total_cost_usd`, `usage`, `modelUsage`, `num_turns`,
`is_error`, `subtype`). When the API refuses, the last `assistant` event carries `error: "rate_limit"`
(429) or `"server_error"` (529) with `api_error_status` and `api_error_type`, and so does the `result`
event (`api_error_status`, `api_error_type`, `terminal_reason: "api_error"`); each retry it makes first
is a `system`/`api_retry` event with `error_status`. It honours `retry-after` for short waits and gives
up at once on long ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.agents.base import (
    PROMPT_FILE,
    AgentAdapter,
    AgentOptions,
    Endpoints,
    count,
    json_events,
    money,
    read_tail,
    sdk_env,
    text,
)
from runner.record.models import AgentReport, TokenUsage

RATE_LIMIT_STATUSES = {429, 529}
RATE_LIMIT_TYPES = {"rate_limit_error", "overloaded_error"}
RATE_LIMIT_ERRORS = {"rate_limit"}  # the assistant event's `error` for a 429 (a 529 is "server_error")
# A couple of quick retries for a blip; longer waits are the supervisor's backoff, driven by the gateway.
MAX_RETRIES = 2


class ClaudeCode(AgentAdapter):
    name = "claude-code"
    image = "harness-claude-code:latest"
    description = "Anthropic's Claude Code CLI"

    def command(self, options: AgentOptions, endpoints: Endpoints) -> list[str]:
        # stream-json needs --verbose in -p mode (it exits 1 without); options go through "$@", unquoted by no one.
        args = ["--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"]
        if options.model:
            args += ["--model", options.model]
        if options.max_turns is not None:
            args += ["--max-turns", str(options.max_turns)]
        return ["sh", "-c", f'exec claude -p "$(cat {PROMPT_FILE})" "$@"', "claude", *args]

    def env(self, options: AgentOptions, endpoints: Endpoints) -> dict[str, str]:
        sdk = sdk_env(endpoints)
        if "anthropic" in endpoints.subscriptions:
            # With an API key set the CLI ignores its subscription token: leave only the token's placeholder, so
            # that it runs as a subscriber does (its model, its limits and their events).
            sdk.pop("ANTHROPIC_API_KEY")
        return {
            **sdk,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, error reports or update checks
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(MAX_RETRIES),
        }

    def parse_output(self, log_path: Path) -> AgentReport | None:
        return parse_claude_events(read_tail(log_path))


def _is_rate_limit(status: object, kind: object, error: object = None) -> bool:
    return status in RATE_LIMIT_STATUSES or kind in RATE_LIMIT_TYPES or error in RATE_LIMIT_ERRORS


def _cost_of(entry: object) -> float:
    return (money(entry.get("costUSD")) if isinstance(entry, dict) else None) or 0.0


def parse_claude_events(lines: list[str]) -> AgentReport | None:
    model: str | None = None
    result: dict[str, Any] | None = None
    last_api_error: bool | None = None  # the latest word on the API: refused (True) or answered (False)
    seen = False
    for event in json_events(lines):
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            model = text(event.get("model")) or model
            seen = True
        elif kind == "system" and event.get("subtype") == "api_retry":
            last_api_error = _is_rate_limit(event.get("error_status"), None, event.get("error"))
            seen = True
        elif kind == "assistant":
            if event.get("is_api_error_message") is True:
                last_api_error = _is_rate_limit(
                    event.get("api_error_status"), event.get("api_error_type"), event.get("error")
                )
            else:
                last_api_error = False
            seen = True
        elif kind == "result":
            result = event
            seen = True
    if not seen:
        return None
    if result is None:  # cut short (timeout, kill, truncated log): only what the events said
        return AgentReport(model=model, rate_limited=bool(last_api_error))
    usage = result.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    model_usage = result.get("modelUsage")
    if model is None and isinstance(model_usage, dict) and model_usage:
        model = text(max(model_usage, key=lambda m: _cost_of(model_usage[m])))
    is_error = result.get("is_error")
    rate_limited = is_error is True and _is_rate_limit(result.get("api_error_status"), result.get("api_error_type"))
    turns = count(result.get("num_turns"))
    return AgentReport(
        usage=TokenUsage(
            input_tokens=count(usage.get("input_tokens")),
            output_tokens=count(usage.get("output_tokens")),
            cache_read_tokens=count(usage.get("cache_read_input_tokens")),
            cache_write_tokens=count(usage.get("cache_creation_input_tokens")),
        ),
        cost_usd=money(result.get("total_cost_usd")),
        num_turns=turns if "num_turns" in result else None,
        is_error=is_error if isinstance(is_error, bool) else None,
        subtype=text(result.get("subtype")),
        model=model,
        rate_limited=rate_limited or (is_error is True and bool(last_api_error)),
    )
