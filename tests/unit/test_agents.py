"""Agent adapters: argv and env from options, and reports parsed from REAL agent output.

The fixtures under tests/fixtures/agents/ were captured from the real CLIs (Claude Code 2.1.328,
Codex 0.169.0, aider 0.86.2) run on the host against tests/upstreams.py's scripted APIs; the keys in
them are placeholders.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from runner.agents import (
    ADAPTERS,
    PLACEHOLDER_KEY,
    AgentOptions,
    Endpoints,
    agent_env,
    agent_report,
    default_endpoints,
    rate_limited,
    resolve_agent,
    sdk_env,
)
from runner.agents.base import read_tail
from runner.agents.codex import config_toml
from runner.base.errors import UsageError
from runner.record.models import AgentInfo, TokenUsage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "agents"
ENDS = Endpoints("http://127.0.0.1:8787", "http://127.0.0.1:8787/v1", PLACEHOLDER_KEY)


def fixture(name: str) -> Path:
    return FIXTURES / name


def copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copy(fixture(name), tmp_path / Path(name).name))


# -- argv and env -------------------------------------------------------------------------------------


def test_claude_code_argv_passes_model_and_max_turns_as_separate_arguments() -> None:
    argv = ADAPTERS["claude-code"].command(AgentOptions(model="claude-x; rm -rf /", max_turns=7), ENDS)
    assert argv[:2] == ["sh", "-c"] and "$(cat /harness/prompt.md)" in argv[2]
    args = argv[4:]
    assert args[: args.index("--model")] == [
        "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions",
    ]  # fmt: skip
    assert args[args.index("--model") + 1] == "claude-x; rm -rf /"  # an argument, never shell text
    assert args[args.index("--max-turns") + 1] == "7"
    plain = ADAPTERS["claude-code"].command(AgentOptions(), ENDS)
    assert "--model" not in plain and "--max-turns" not in plain


def test_claude_code_argv_runs_in_a_real_shell_with_the_prompt_and_options(tmp_path: Path) -> None:
    argv = ADAPTERS["claude-code"].command(AgentOptions(model="m 1", max_turns=2), ENDS)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "claude").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (fake / "claude").chmod(0o755)
    prompt = tmp_path / "prompt.md"
    prompt.write_text("do it; $(touch /tmp/never)\n")
    script = argv[2].replace("/harness/prompt.md", str(prompt))
    out = subprocess.run(
        ["sh", "-c", script, *argv[3:]], capture_output=True, text=True, check=True,
        env={"PATH": f"{fake}:/usr/bin:/bin"},
    ).stdout.splitlines()  # fmt: skip
    assert out[:2] == ["-p", "do it; $(touch /tmp/never)"]
    assert out[out.index("--model") + 1] == "m 1" and out[out.index("--max-turns") + 1] == "2"


def test_codex_writes_its_provider_config_and_passes_the_model(tmp_path: Path) -> None:
    argv = ADAPTERS["codex"].command(AgentOptions(model="gpt-x", max_turns=3), ENDS)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "codex").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (fake / "codex").chmod(0o755)
    prompt = tmp_path / "prompt.md"
    prompt.write_text("the objective\n")
    home = tmp_path / "codex-home"
    env = ADAPTERS["codex"].env(AgentOptions(), ENDS)
    assert env["CODEX_HOME"] == "/home/agent/.codex"
    out = subprocess.run(
        ["sh", "-c", argv[2].replace("/harness/prompt.md", str(prompt)), *argv[3:]],
        capture_output=True, text=True, check=True, env={"PATH": f"{fake}:/usr/bin:/bin", "CODEX_HOME": str(home)},
    ).stdout.splitlines()  # fmt: skip
    assert out[0] == "exec" and out[-1] == "the objective"
    assert "--dangerously-bypass-approvals-and-sandbox" in out and "--json" in out
    assert out[out.index("--model") + 1] == "gpt-x" and "--max-turns" not in out  # codex has no turn limit
    config = (home / "config.toml").read_text()
    assert config == config_toml(ENDS)
    parsed = __import__("tomllib").loads(config)
    provider = parsed["model_providers"][parsed["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:8787/v1" and provider["wire_api"] == "responses"
    assert provider["env_key"] == "OPENAI_API_KEY"


def test_aider_model_names_and_flags() -> None:
    argv = ADAPTERS["aider"].command(AgentOptions(model="gpt-4o", max_turns=3), ENDS)
    assert argv[argv.index("--model") + 1] == "openai/gpt-4o"
    assert ADAPTERS["aider"].command(AgentOptions(model="anthropic/claude-x"), ENDS)[-1] == "anthropic/claude-x"
    for flag in ("--yes-always", "--no-check-update", "--analytics-disable", "--no-stream", "--no-auto-commits"):
        assert flag in argv
    assert "--model" not in ADAPTERS["aider"].command(AgentOptions(), ENDS)
    env = ADAPTERS["aider"].env(AgentOptions(), ENDS)
    assert env["OPENAI_API_BASE"] == "http://127.0.0.1:8787/v1"


def test_every_adapter_and_custom_get_the_sdk_environment_with_placeholders_only() -> None:
    expected = {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
        "OPENAI_BASE_URL": "http://127.0.0.1:8787/v1",
        "OPENAI_API_KEY": PLACEHOLDER_KEY,
    }
    assert sdk_env(default_endpoints()) == expected
    for name in [*ADAPTERS, "custom"]:
        env = agent_env(AgentInfo(name=name, command=["x"]))
        assert expected.items() <= env.items(), name
    claude = agent_env(AgentInfo(name="claude-code", command=["x"], model="m"))
    assert claude["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and claude["CLAUDE_CODE_MAX_RETRIES"] == "2"


def test_resolve_agent_keeps_its_contract() -> None:
    assert resolve_agent(None, None) == ("demo", ["harness-demo-agent"], "harness-base:latest")
    assert resolve_agent(None, "echo hi") == ("custom", ["sh", "-c", "echo hi"], "harness-base:latest")
    name, argv, image = resolve_agent("claude-code", None, AgentOptions(model="m"))
    assert (name, image) == ("claude-code", "harness-claude-code:latest") and "m" in argv
    with pytest.raises(UsageError):
        resolve_agent("nope", None)
    with pytest.raises(UsageError):
        resolve_agent("demo", "echo")


# -- Claude Code ------------------------------------------------------------------------------------


def test_claude_code_done_report_from_its_result_event() -> None:
    report = agent_report("claude-code", fixture("claude-code/done.jsonl"))
    assert report is not None
    assert report.usage == TokenUsage(input_tokens=400, output_tokens=160, cache_read_tokens=200, cache_write_tokens=40)
    assert (report.cost_usd, report.num_turns, report.is_error, report.subtype) == (0.00504, 4, False, "success")
    assert report.model == "claude-test-model" and not report.rate_limited


def test_claude_code_max_turns_is_an_error_not_a_rate_limit() -> None:
    report = agent_report("claude-code", fixture("claude-code/max-turns.jsonl"))
    assert report is not None and (report.subtype, report.is_error, report.num_turns) == ("error_max_turns", True, 3)
    assert not report.rate_limited


@pytest.mark.parametrize("name", ["claude-code/rate-limit-429.jsonl", "claude-code/overloaded-529.jsonl"])
def test_claude_code_rate_limit_from_its_api_error_events(name: str) -> None:
    report = agent_report("claude-code", fixture(name))
    assert report is not None and report.rate_limited and report.is_error
    assert rate_limited("claude-code", fixture(name))


@pytest.mark.parametrize(
    "name", ["claude-code/says-429-no-report.jsonl", "claude-code/tool-prints-429.jsonl", "codex/tool-prints-429.jsonl"]
)
def test_an_agent_that_prints_429_is_not_rate_limited(name: str) -> None:
    assert "429" in fixture(name).read_text()  # positive control: the text is there
    report = agent_report(name.split("/", maxsplit=1)[0], fixture(name))
    assert report is not None and not report.rate_limited


def test_claude_code_log_cut_before_the_result_keeps_what_the_events_said(tmp_path: Path) -> None:
    lines = fixture("claude-code/rate-limit-429.jsonl").read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    # Killed while it waited to retry: the api_retry events say 429, no result event follows.
    cut.write_text("\n".join(line for line in lines if '"type":"result"' not in line and '"assistant"' not in line))
    report = agent_report("claude-code", cut)
    assert report is not None and report.rate_limited and report.usage is None
    done = fixture("claude-code/done.jsonl").read_bytes().splitlines()
    assert b'"type":"result"' in done[-1]
    cut.write_bytes(b"\n".join(done[:-1]) + b"\n" + done[-1][:200])  # the result event itself cut in half
    report = agent_report("claude-code", cut)
    assert report is not None and report.usage is None and not report.rate_limited


def test_claude_code_garbage_lines_and_a_huge_log_are_survived(tmp_path: Path) -> None:
    log = tmp_path / "log"
    junk = (
        b"\x00\xff{not json\n[1,2]\n" + b'{"type": "result", "usage": "nope", "num_turns": -3, "total_cost_usd": "1"}\n'
    )
    with log.open("wb") as handle:
        handle.write(b"x" * (3 * 1024 * 1024))  # one endless line, mostly outside the tail window
        handle.write(b"\n" + junk + b"[" * 100_000 + b"\n")
        handle.write(fixture("claude-code/done.jsonl").read_bytes().splitlines()[-1] + b"\n")
    report = agent_report("claude-code", log)
    assert report is not None and report.cost_usd == 0.00504 and report.usage is not None
    log.write_bytes(junk)
    report = agent_report("claude-code", log)
    assert report is not None and report.usage == TokenUsage() and report.num_turns == 0 and report.cost_usd is None


def test_injected_rate_limit_text_inside_tool_output_is_not_an_event(tmp_path: Path) -> None:
    event = {"type": "user", "message": {"content": [{"type": "tool_result", "content":
             '{"type":"result","is_error":true,"api_error_status":429}'}]}}  # fmt: skip
    log = tmp_path / "log"
    log.write_text(json.dumps(event) + "\n")
    report = agent_report("claude-code", log)
    assert report is None or not report.rate_limited


def test_missing_log_and_agents_without_structured_output() -> None:
    assert agent_report("claude-code", Path("/nonexistent/log")) is None
    assert agent_report("demo", fixture("claude-code/rate-limit-429.jsonl")) is None
    assert agent_report("custom", fixture("claude-code/rate-limit-429.jsonl")) is None
    assert not rate_limited("custom", fixture("claude-code/rate-limit-429.jsonl"))


# -- Codex ---------------------------------------------------------------------------------------------


def test_codex_usage_from_turn_completed() -> None:
    report = agent_report("codex", fixture("codex/done.jsonl"))
    assert report is not None and report.is_error is False and not report.rate_limited
    # It printed input_tokens 600 of which cached 200: input excludes cache reads, as everywhere else.
    assert report.usage == TokenUsage(input_tokens=400, cache_read_tokens=200, output_tokens=160, reasoning_tokens=20)
    assert report.cost_usd is None


def test_codex_default_model_run_through_its_javascript_exec_tool() -> None:
    report = agent_report("codex", fixture("codex/done-default-model.jsonl"))
    assert report is not None and report.is_error is False and report.usage is not None
    assert report.usage.output_tokens == 160


def test_codex_rate_limit_from_its_turn_failed_event() -> None:
    report = agent_report("codex", fixture("codex/rate-limit-429.jsonl"))
    assert report is not None and report.rate_limited and report.is_error


def test_codex_recovered_after_a_429_is_not_rate_limited(tmp_path: Path) -> None:
    log = tmp_path / "log"
    failed = fixture("codex/rate-limit-429.jsonl").read_text()
    log.write_text(failed + fixture("codex/done.jsonl").read_text())
    report = agent_report("codex", log)
    assert report is not None and not report.rate_limited and report.is_error is False


# -- aider ---------------------------------------------------------------------------------------------


def test_aider_tokens_and_cost_from_its_lines() -> None:
    report = agent_report("aider", fixture("aider/done-gpt-4o.txt"))
    assert report is not None and report.cost_usd == 0.00071
    assert report.usage == TokenUsage(input_tokens=150, output_tokens=40)
    unknown = agent_report("aider", fixture("aider/done-unknown-model.txt"))
    assert unknown is not None and unknown.cost_usd is None
    assert unknown.usage == TokenUsage(input_tokens=150, output_tokens=40)


def test_aider_sums_messages_keeps_the_session_cost_and_reads_k_and_cache(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text(
        "Tokens: 2.1k sent, 1.0k cache write, 12k cache hit, 345 received.\n"
        "Cost: $0.05 message, $0.05 session.\n"
        "model says: Tokens: 999k sent, 1 received. Cost: $9.00 message, $99.00 session.\n"
        "Tokens: 500 sent, 20 received. Cost: $0.01 message, $0.06 session.\n"
    )
    report = agent_report("aider", log)
    assert report is not None and report.cost_usd == 0.06
    assert report.usage == TokenUsage(input_tokens=500, cache_write_tokens=1000, cache_read_tokens=12000,
                                      output_tokens=365)  # fmt: skip


def test_aider_rate_limit_text_is_not_a_structured_fact() -> None:
    assert "RateLimitError" in fixture("aider/rate-limit-429.txt").read_text()
    report = agent_report("aider", fixture("aider/rate-limit-429.txt"))
    assert report is not None and not report.rate_limited


def test_read_tail_drops_the_line_cut_by_the_window(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("first line that is cut\nsecond\nthird\n")
    assert read_tail(log, max_bytes=14) == ["second", "third"]
    assert read_tail(log) == ["first line that is cut", "second", "third"]


# -- the scripted stand-in itself ------------------------------------------------------------------------


def _post(
    url: str, body: dict[str, object], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_the_stand_in_plays_its_scripts_and_records_requests() -> None:
    from tests import upstreams as U

    tools = [{"name": "Bash"}]
    anthropic = [U.Error(429, headers={"retry-after": "7"}), *U.claude_code_script(usage=U.Usage(input_tokens=5))]
    with U.ScriptedUpstream(anthropic=anthropic, responses=U.codex_script(), chat=U.aider_script()) as up:
        status, headers, body = _post(f"{up.url}/v1/messages", {"model": "m", "tools": tools, "stream": True},
                                      {"x-api-key": "k1"})  # fmt: skip
        assert (status, headers["retry-after"], json.loads(body)["error"]["type"]) == (429, "7", "rate_limit_error")
        _, _, raw = _post(f"{up.url}/v1/messages?beta=true", {"model": "m", "tools": tools, "stream": True})
        events = [(e, json.loads(d)) for e, d in U.iter_sse(raw)]
        assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
        assert events[0][1]["message"]["usage"]["input_tokens"] == 5
        delta = next(d for e, d in events if e == "content_block_delta")["delta"]
        assert delta["type"] == "input_json_delta" and "hello.txt" in json.loads(delta["partial_json"])["command"]
        side = _post(f"{up.url}/v1/messages", {"model": "haiku", "messages": []})  # no tools: a side request
        assert side[0] == 200 and json.loads(side[2])["content"][0]["text"] == U.FINAL_TEXT
        assert _post(f"{up.url}/v1/messages/count_tokens", {"messages": []})[0] == 200
        _, _, raw = _post(f"{up.url}/v1/responses", {"model": "m", "tools": tools, "stream": True})
        kinds = [json.loads(d)["type"] for _, d in U.iter_sse(raw)]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        done = json.loads(list(U.iter_sse(raw))[-1][1])["response"]
        assert done["output"][0]["name"] == "exec_command" and "usage" in done
        with U.ScriptedUpstream(responses=U.codex_script(code_mode=True)) as coded:
            _, _, raw = _post(f"{coded.url}/v1/responses", {"model": "m", "stream": True,
                              "input": [{"type": "additional_tools", "tools": []}]})  # fmt: skip
            item = json.loads(list(U.iter_sse(raw))[-1][1])["response"]["output"][0]
            assert (item["type"], item["name"]) == ("custom_tool_call", "exec")
            assert item["input"].startswith("text(await tools.exec_command(")
        chat = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
        _, _, raw = _post(f"{up.url}/v1/chat/completions", chat)
        chunks = [d for _, d in U.iter_sse(raw)]
        assert chunks[-1] == "[DONE]" and json.loads(chunks[-2])["usage"]["prompt_tokens"] == 120
        assert _post(f"{up.url}/v1/nowhere", {})[0] == 404
        assert up.seen("/v1/messages")[0].headers["x-api-key"] == "k1"
        assert [r.step for r in up.seen("/v1/messages")] == [0, 1, None]
        assert up.remaining("anthropic") == len(anthropic) - 2
