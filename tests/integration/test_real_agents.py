"""The real agent CLIs in their harness images, driven by `harness run --agent NAME` under
`--network none`, against scripted model APIs on host loopback that the gateway forwards to.

Each script makes the agent edit a file, commit it and report done. The real key is set only in the
harness's environment; the upstream must see it, and nothing the agent could touch may hold it."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from runner.gateway.prices import BUILTIN
from tests.helpers import GitRepo, harness, run_args
from tests.upstreams import (
    Recorded,
    Reply,
    ScriptedUpstream,
    Step,
    ToolCall,
    Usage,
    aider_script,
    claude_code_script,
    codex_script,
)

pytestmark = pytest.mark.docker

ANTHROPIC_KEY = "sk-ant-REAL-host-key-31c9d0a7e4b2f6"
OPENAI_KEY = "sk-proj-REAL-host-key-8e2a6c4f1b9d07"
CLAUDE_TOKEN = "sk-ant-oat01-REAL-subscription-token-5d1e7a"  # as `claude setup-token` mints them
CHATGPT_ACCOUNT = "acct-REAL-4b8e1f"


def _jwt(exp: float, marker: str) -> str:
    """A JWT as ChatGPT's sign-in holds them (unsigned here: only its claims are read)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'exp': int(exp), 'jti': marker})}.c2lnbmF0dXJl"


CHATGPT_ACCESS = _jwt(time.time() + 30 * 86400, "REAL-access-7c2d")


def signed_in_home(root: Path, access: str, refresh: str = "rt-REAL-refresh-91ab") -> Path:
    """A host's Codex home holding a ChatGPT sign-in (what `codex login` leaves)."""
    home = root / "codex-home"
    home.mkdir()
    tokens = {"id_token": _jwt(time.time() + 3600, "REAL-id"), "access_token": access, "refresh_token": refresh,
              "account_id": CHATGPT_ACCOUNT}  # fmt: skip
    (home / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": None, "tokens": tokens, "last_refresh": "x"}))
    (home / "auth.json").chmod(0o600)
    return home


USAGE = Usage(input_tokens=2000, output_tokens=300, cache_read_tokens=4000)
# Every process's environment inside the agent's sandbox, into the copy for the host to read.
DUMP_ENV = "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done > env-seen.txt 2>/dev/null; true"


@dataclass(frozen=True)
class Case:
    agent: str
    model: str
    path: str  # the API path the agent calls
    steps: list[Step]
    env: dict[str, str]
    auth_header: str
    key: str


def _claude() -> list[Step]:
    dump = Reply(tool_calls=(ToolCall("Bash", {"command": DUMP_ENV, "description": "env"}),), usage=USAGE)
    return [dump, *claude_code_script(usage=USAGE)]


def _codex() -> list[Step]:
    dump = Reply(tool_calls=(ToolCall("exec_command", {"cmd": DUMP_ENV}),), usage=USAGE)
    return [dump, *codex_script(usage=USAGE)]


def _cases(url_of: str) -> dict[str, Case]:
    return {
        "claude-code": Case("claude-code", "claude-sonnet-4-5", "/v1/messages", _claude(),
                            {"ANTHROPIC_BASE_URL": url_of, "ANTHROPIC_API_KEY": ANTHROPIC_KEY},
                            "x-api-key", ANTHROPIC_KEY),
        "claude-code-subscription": Case("claude-code", "claude-sonnet-4-5", "/v1/messages", _claude(),
                                         {"ANTHROPIC_BASE_URL": url_of, "CLAUDE_CODE_OAUTH_TOKEN": CLAUDE_TOKEN},
                                         "authorization", f"Bearer {CLAUDE_TOKEN}"),
        "codex-chatgpt": Case("codex", "gpt-5", "/backend-api/codex/responses", _codex(),
                              {"OPENAI_BASE_URL": url_of + "/backend-api/codex"},
                              "authorization", f"Bearer {CHATGPT_ACCESS}"),
        "codex": Case("codex", "gpt-5", "/v1/responses", _codex(),
                      {"OPENAI_BASE_URL": url_of + "/v1", "OPENAI_API_KEY": OPENAI_KEY},
                      "authorization", f"Bearer {OPENAI_KEY}"),
        "aider": Case("aider", "gpt-4o", "/v1/chat/completions", aider_script(edit_format="diff", usage=USAGE),
                      {"OPENAI_BASE_URL": url_of + "/v1", "OPENAI_API_KEY": OPENAI_KEY},
                      "authorization", f"Bearer {OPENAI_KEY}"),
    }  # fmt: skip


def _texts(path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())


def _drive(repo: GitRepo, name: str, *extra: str, host_env: dict[str, str] | None = None,
           upstream: ScriptedUpstream | None = None, key: str | None = None) -> list[Recorded]:  # fmt: skip
    session = f"real-{name}"
    with contextlib.nullcontext(upstream) if upstream is not None else ScriptedUpstream() as up:
        case = _cases(up.url)[name]
        case = replace(case, key=key) if key is not None else case  # the credential the upstream must see
        agent = case.agent
        api = (
            "anthropic" if case.path == "/v1/messages" else "responses" if case.path.endswith("/responses") else "chat"
        )
        up.scripts[api] = case.steps  # type: ignore[index]
        env = {"ANTHROPIC_BASE_URL": "", "ANTHROPIC_API_KEY": "", "OPENAI_BASE_URL": "", "OPENAI_API_KEY": "",
               "ANTHROPIC_AUTH_TOKEN": "", "CLAUDE_CODE_OAUTH_TOKEN": "", "CODEX_HOME": "", **case.env,
               **(host_env or {})}  # fmt: skip
        r = harness(*run_args(session, "--model", case.model, "--iteration-timeout", "5m", *extra, agent=agent,
                              objective="Add hello.txt and commit it", iterations=2), cwd=repo.path, env=env,
                    timeout=900)  # fmt: skip
        seen = up.seen(case.path)
        # The model calls and any other route the gateway passes (a model listing); not its own token refresh.
        forwarded = len([r for r in up.requests if r.path != "/oauth/token"])
    log = (repo.journal(session) / "iteration-0001.log").read_text(errors="replace")
    assert r.code == 0 and r.json()["status"] == "completed", (r.stderr[-2000:], log[-3000:])

    # The agent's own commit is on the branch, its file as the script wrote it.
    assert repo.git("show", f"harness/{session}:hello.txt") == "hello from the scripted model"
    subjects = repo.git("log", "--format=%s", f"main..harness/{session}").splitlines()
    assert ("Add hello.txt" in subjects) if agent != "aider" else any(s.startswith("aider:") for s in subjects)

    # Every model call went through the gateway, which swapped in the real key; the model was passed on.
    assert seen and all(s.headers[case.auth_header] == case.key for s in seen)
    assert all(s.body.get("model") in {case.model, f"openai/{case.model}"} for s in seen if isinstance(s.body, dict))

    # Tokens and cost as the gateway counted them, per iteration and for the session.
    record = json.loads((repo.journal(session) / "iteration-0001.json").read_text())
    usage = record["usage"]
    assert usage["requests"] == forwarded and usage["unpricedRequests"] == 0
    assert usage["tokens"]["outputTokens"] == USAGE.output_tokens * len(seen)
    price = BUILTIN[case.model]
    per_call = (USAGE.input_tokens * price.input + USAGE.output_tokens * price.output
                + USAGE.cache_read_tokens * (price.cache_read or price.input)) / 1e6  # fmt: skip
    # A subscription (a token or a sign-in in the host's environment) is not billed per token.
    billed = not {"CLAUDE_CODE_OAUTH_TOKEN", "CODEX_HOME"} & {
        k for k, v in {**case.env, **(host_env or {})}.items() if v
    }
    assert usage["costUsd"] == pytest.approx(per_call * len(seen) if billed else 0.0, rel=1e-3)
    assert r.json()["usage"]["costUsd"] == pytest.approx(usage["costUsd"])
    assert record["agentReport"] is not None

    # The key is in no journal file (logs included), no file or commit of the copy, and no process
    # environment inside the sandbox (which held the placeholder instead).
    bare = case.key.removeprefix("Bearer ")
    assert bare not in _texts(repo.journal(session))
    assert bare not in repo.git("log", "-p", f"harness/{session}")
    if agent != "aider":
        env_seen = repo.git("show", f"harness/{session}:env-seen.txt")
        assert "sk-harness-placeholder-not-a-key" in env_seen and bare not in env_seen
    return seen


def test_claude_code_runs_for_real_through_the_gateway(repo: GitRepo) -> None:
    _drive(repo, "claude-code")
    record = json.loads((repo.journal("real-claude-code") / "iteration-0001.json").read_text())
    report = record["agentReport"]
    assert report["subtype"] == "success" and report["isError"] is False and report["numTurns"] >= 4
    assert report["costUsd"] > 0 and report["usage"]["outputTokens"] > 0


def test_claude_code_runs_on_a_subscription_token_it_never_holds(repo: GitRepo) -> None:
    """A subscriber's night: only CLAUDE_CODE_OAUTH_TOKEN on the host. The CLI runs in its subscription mode on a
    placeholder token, and the upstream sees the real token as bearer auth with its beta flag."""
    seen = _drive(repo, "claude-code-subscription")
    assert all("x-api-key" not in s.headers for s in seen)
    assert all("oauth-2025-04-20" in s.headers["anthropic-beta"].split(",") for s in seen)
    env_seen = repo.git("show", "harness/real-claude-code-subscription:env-seen.txt")
    assert "CLAUDE_CODE_OAUTH_TOKEN=sk-harness-placeholder-not-a-key" in env_seen
    assert "ANTHROPIC_API_KEY=" not in env_seen  # with a key set, the CLI would ignore its token


def test_codex_runs_on_a_chatgpt_sign_in_it_never_holds(repo: GitRepo, tmp_path: Path) -> None:
    """A ChatGPT plan's night: Codex signed in on the host, no API key. The container holds a placeholder
    sign-in; the ChatGPT backend sees the real access token and account, and nothing else of the sign-in leaks."""
    home = signed_in_home(tmp_path, CHATGPT_ACCESS)
    seen = _drive(repo, "codex-chatgpt", host_env={"CODEX_HOME": str(home)})
    assert all(s.headers["chatgpt-account-id"] == CHATGPT_ACCOUNT for s in seen)
    env_seen = repo.git("show", "harness/real-codex-chatgpt:env-seen.txt")
    assert "HARNESS_CODEX_AUTH=" in env_seen and "OPENAI_API_KEY=" not in env_seen
    assert CHATGPT_ACCOUNT not in env_seen and "rt-REAL-refresh-91ab" not in env_seen
    journal = _texts(repo.journal("real-codex-chatgpt"))
    assert "rt-REAL-refresh-91ab" not in journal and CHATGPT_ACCESS not in journal
    record = json.loads((repo.journal("real-codex-chatgpt") / "iteration-0001.json").read_text())
    assert record["usage"]["costUsd"] == 0.0  # a plan is not billed per token


def test_an_expired_chatgpt_token_is_refreshed_by_the_gateway_and_written_back(repo: GitRepo, tmp_path: Path) -> None:
    expired = _jwt(time.time() - 60, "REAL-expired")
    home = signed_in_home(tmp_path, expired, refresh="rt-REAL-old")
    fresh = _jwt(time.time() + 30 * 86400, "REAL-fresh")
    answer = {"access_token": fresh, "refresh_token": "rt-REAL-rotated", "id_token": _jwt(time.time() + 3600, "id2")}
    with ScriptedUpstream(token_answer=answer) as up:
        env = {"CODEX_HOME": str(home), "CODEX_REFRESH_TOKEN_URL_OVERRIDE": up.url + "/oauth/token"}
        seen = _drive(repo, "codex-chatgpt", host_env=env, upstream=up, key=f"Bearer {fresh}")
        refreshes = up.seen("/oauth/token")
    assert seen and all(s.headers["authorization"] == f"Bearer {fresh}" for s in seen)
    assert len(refreshes) == 1 and refreshes[0].body["refresh_token"] == "rt-REAL-old"
    assert refreshes[0].body["grant_type"] == "refresh_token" and refreshes[0].body["client_id"].startswith("app_")
    written = json.loads((home / "auth.json").read_text())
    assert written["tokens"]["access_token"] == fresh and written["tokens"]["refresh_token"] == "rt-REAL-rotated"
    assert written["tokens"]["account_id"] == CHATGPT_ACCOUNT and (home / "auth.json").stat().st_mode & 0o777 == 0o600
    assert repo.git("show", "harness/real-codex-chatgpt:hello.txt") == "hello from the scripted model"
    journal = _texts(repo.journal("real-codex-chatgpt"))
    assert "rt-REAL-rotated" not in journal and fresh not in journal and expired not in journal


def test_codex_runs_for_real_through_the_gateway(repo: GitRepo) -> None:
    _drive(repo, "codex")
    report = json.loads((repo.journal("real-codex") / "iteration-0001.json").read_text())["agentReport"]
    assert report["usage"]["outputTokens"] == USAGE.output_tokens * 5


def test_aider_runs_for_real_through_the_gateway(repo: GitRepo) -> None:
    _drive(repo, "aider")
    report = json.loads((repo.journal("real-aider") / "iteration-0001.json").read_text())["agentReport"]
    assert report["costUsd"] is not None and report["usage"]["inputTokens"] > 0


def test_claude_code_runs_under_gvisor(repo: GitRepo) -> None:
    _drive(repo, "claude-code", "--runtime", "runsc")
    summary = json.loads((repo.journal("real-claude-code") / "run-summary.json").read_text())
    assert summary["runtime"] == "runsc"


@pytest.fixture
def ordinary_image(tmp_path: Path) -> Iterator[str]:
    """An image not built on harness-base and with no Python in it: debian:bookworm-slim with git (copied from
    harness-base, so that building it reaches no package mirror). `--image` gets it as it is; the harness
    derives IMAGE + claude-code itself."""
    import subprocess
    import uuid

    from runner.sandbox.derive import derived_tag
    from tests.conftest import TEST_RUN_LABEL

    tag = f"harness-test-ordinary:{uuid.uuid4().hex[:8]}"
    copies = "".join(f"COPY --from=harness-base:latest {p} {p}\n"
                     for p in ("/usr/bin/git", "/usr/lib/git-core", "/usr/share/git-core"))  # fmt: skip
    (tmp_path / "Dockerfile").write_text(f"FROM debian:bookworm-slim\n{copies}")
    subprocess.run(["docker", "build", "-q", "--network", "none", "--label", f"io.solo-harness.test={TEST_RUN_LABEL}",
                    "-t", tag, str(tmp_path)], check=True, capture_output=True, timeout=300)  # fmt: skip
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", derived_tag(tag, "claude-code"), tag], capture_output=True, check=False)


def test_claude_code_runs_for_real_on_an_ordinary_image_without_python(repo: GitRepo, ordinary_image: str) -> None:
    import subprocess

    look = ["docker", "run", "--rm", "--network", "none", ordinary_image, "sh", "-c", "command -v python3 || echo no"]
    probe = subprocess.run(look, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "no"  # the trap: nothing in the image could run a Python relay
    _drive(repo, "claude-code", "--image", ordinary_image)
    summary = json.loads((repo.journal("real-claude-code") / "run-summary.json").read_text())
    assert summary["image"].startswith("harness-derived/claude-code:")
