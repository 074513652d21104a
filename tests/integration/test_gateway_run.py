"""The model gateway end to end: an `--agent-cmd` agent that uses the Anthropic API through the
relay and the gateway, from a `--network none` container, against a scripted upstream on loopback.
The real key lives only in the harness's environment."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_RUN_LABEL
from tests.helpers import HARNESS, GitRepo, harness, run_args, wait_for
from tests.upstreams import Error, Reply, ScriptedUpstream, Usage

pytestmark = pytest.mark.docker

REAL_KEY = "sk-ant-REAL-host-key-7f3e9a1c5b2d4e6f"

# The agent: one Messages API call (streamed) per run, through the SDK-style environment the
# harness gives every --agent-cmd; what it got goes into the copy, then it reports done.
AGENT = r"""
import json, os, subprocess, sys, time, urllib.request, urllib.error
base, key = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"]
with open("env-seen.txt", "w") as f:  # what the sandbox holds, for the host to check
    f.write("\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                f.write(open(f"/proc/{pid}/environ", "rb").read().decode("utf-8", "replace"))
            except OSError:
                pass
calls = int(os.environ.get("CALLS", "1"))
for i in range(calls):
    req = urllib.request.Request(base + "/v1/messages?beta=true", method="POST",
        data=json.dumps({"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                         "tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"})
    try:
        body = urllib.request.urlopen(req, timeout=60).read().decode()
    except urllib.error.HTTPError as exc:
        print(f"model call {i} refused: HTTP {exc.code} {exc.read().decode()}", flush=True)
        sys.exit(3)
    print(f"model call {i}: {len(body)} bytes", flush=True)
with open("answer.txt", "a") as f:
    f.write(body)
time.sleep(float(os.environ.get("LINGER", "0")))
json.dump({"state": "done", "summary": "asked the model"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


@pytest.fixture
def agent_repo(repo: GitRepo) -> GitRepo:
    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "agent")
    return repo


def _env(up: ScriptedUpstream) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": REAL_KEY}


def _run(repo: GitRepo, session: str, up: ScriptedUpstream, *extra: str, agent_env: str = "") -> dict:
    r = harness(*run_args(session, *extra, cmd=f"{agent_env} python3 agent.py", objective="talk to the model"),
                cwd=repo.path, env=_env(up))  # fmt: skip
    assert r.stdout, r.stderr
    return r.json()


def _iteration(repo: GitRepo, session: str, n: int) -> dict:
    return json.loads((repo.journal(session) / f"iteration-{n:04d}.json").read_text())


def _all_text_under(path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())


def test_an_agent_reaches_the_model_only_through_the_gateway_and_never_holds_the_key(agent_repo: GitRepo) -> None:
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=2000)
    with ScriptedUpstream(anthropic=[Reply(text="scripted answer", usage=usage, model="claude-sonnet-4-5")]) as up:
        # The container is inspected while the agent lingers: its configuration holds no key.
        proc = subprocess.Popen([*HARNESS, *run_args("gw", cmd="LINGER=4 python3 agent.py")], cwd=agent_repo.path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **_env(up)})  # fmt: skip
        inspected = ""
        deadline = time.monotonic() + 120
        while not inspected and time.monotonic() < deadline and proc.poll() is None:
            ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.solo-harness.test={TEST_RUN_LABEL}",
                                  "--filter", "label=io.solo-harness.role=agent"],
                                 capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
            if ids:
                inspected = subprocess.run(
                    ["docker", "inspect", *ids], capture_output=True, text=True, check=False
                ).stdout
            time.sleep(0.1)
        out, err = proc.communicate(timeout=240)
        seen = up.seen("/v1/messages")
    st = json.loads(out)
    assert st["status"] == "completed", err
    assert inspected and REAL_KEY not in inspected
    config = json.loads(inspected)[0]
    assert config["HostConfig"]["NetworkMode"] == "none"
    mounts = {m["Destination"]: m for m in config["Mounts"]}
    assert mounts["/harness-net"]["RW"] is False
    # The upstream saw the real key, swapped in by the gateway; the agent sent a placeholder.
    assert [r.headers["x-api-key"] for r in seen] == [REAL_KEY] and seen[0].query == "beta=true"
    env_seen = agent_repo.git("show", "harness/gw:env-seen.txt")
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8787" in env_seen and REAL_KEY not in env_seen
    assert "scripted answer" in agent_repo.git("show", "harness/gw:answer.txt")
    # Tokens and cost, per iteration and for the session: 1000*3 + 500*15 + 2000*0.3 per million.
    record = _iteration(agent_repo, "gw", 1)
    assert record["usage"]["requests"] == 1 and record["usage"]["tokens"]["inputTokens"] == 1000
    assert record["usage"]["tokens"]["cacheReadTokens"] == 2000
    assert record["usage"]["costUsd"] == pytest.approx(0.0111)
    assert st["usage"]["costUsd"] == pytest.approx(0.0111)
    gateway_log = [json.loads(line) for line in (agent_repo.journal("gw") / "gateway.log").read_text().splitlines()]
    assert gateway_log[-1]["status"] == 200 and gateway_log[-1]["outputTokens"] == 500
    # The key is in no journal file, no log and no file of the copy.
    assert REAL_KEY not in _all_text_under(agent_repo.journal("gw"))
    assert REAL_KEY not in agent_repo.git("log", "-p", "harness/gw")
    status = harness("status", "--session", "gw", cwd=agent_repo.path, env=_env(up))
    assert "1 request" in status.stdout and "$0.01" in status.stdout


def test_max_cost_ends_the_iteration_as_budget_and_resume_with_more_continues(agent_repo: GitRepo) -> None:
    dear = Usage(input_tokens=10_000, output_tokens=10_000)  # $0.18 a call on sonnet
    with ScriptedUpstream(anthropic=[Reply(text="one", usage=dear), Reply(text="two", usage=dear)] * 3) as up:
        st = _run(agent_repo, "budget", up, "--max-cost", "0.10", "--max-iterations", "3", agent_env="CALLS=3")
        assert (st["status"], st["stopReason"]) == ("stopped", "max-cost")
        first = _iteration(agent_repo, "budget", 1)
        assert first["outcome"] == "budget" and first["usage"]["refusedBudget"] >= 1
        assert len(up.seen("/v1/messages")) == 1  # the refused call never reached the upstream
        assert st["usage"]["costUsd"] == pytest.approx(0.18)

        again = harness("resume", "--session", "budget", "--json", cwd=agent_repo.path, env=_env(up))
        assert again.code != 0 and "--max-cost" in again.stderr and "Traceback" not in again.stderr

        more = harness("resume", "--session", "budget", "--max-cost", "5", "--json", cwd=agent_repo.path,
                       env=_env(up))  # fmt: skip
        assert more.json()["status"] == "completed", more.stderr
        assert _iteration(agent_repo, "budget", 2)["outcome"] == "done"
        assert more.json()["usage"]["costUsd"] == pytest.approx(0.18 * 4)


def test_an_upstream_429_backs_off_for_its_retry_after_without_using_an_iteration(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[Error(429, headers={"retry-after": "2"}), Reply(text="ok")]) as up:
        st = _run(agent_repo, "limited", up, "--max-iterations", "1")
    assert st["status"] == "completed" and st["iterationCount"] == 2
    first = _iteration(agent_repo, "limited", 1)
    assert first["outcome"] == "backoff" and first["backoffSeconds"] == 2.0
    assert first["usage"]["rateLimited"] == 1 and first["usage"]["retryAfterSeconds"] == 2.0


def test_a_429_without_retry_after_backs_off_exponentially_from_backoff_base(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[Error(429), Reply(text="ok")]) as up:
        started = time.monotonic()
        st = _run(agent_repo, "limited2", up, "--max-iterations", "1", "--backoff-base", "2s")
        took = time.monotonic() - started
    assert (st["status"], st["iterationCount"]) == ("completed", 2)  # 1 counted + 1 backoff
    assert took >= 2
    first = _iteration(agent_repo, "limited2", 1)
    assert first["outcome"] == "backoff" and first["backoffSeconds"] == 2 and first["failureClass"] is None
    summary = json.loads((agent_repo.journal("limited2") / "run-summary.json").read_text())
    assert summary["backoff"]["total"] == 1 and summary["backoff"]["totalWaitSeconds"] == 2
    assert summary["backoff"]["consecutive"] == 0


def test_an_agent_that_prints_429_and_fails_is_a_failure_not_a_backoff(repo: GitRepo) -> None:
    with ScriptedUpstream() as up:
        r = harness(*run_args("tests429", cmd="echo 'all 429 tests passed'; echo 'HTTP 429 Too Many Requests'; exit 1",
                              iterations=1), cwd=repo.path, env=_env(up))  # fmt: skip
    record = _iteration(repo, "tests429", 1)
    assert record["outcome"] == "agent-error" and record["backoffSeconds"] is None
    assert r.json()["status"] == "stopped"


EGRESS_AGENT = r"""
import http.client, json, os
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://")
host, port = proxy.split(":")
results = {}
for target in os.environ["TARGETS"].split():
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"http://{target}/hello", headers={"Host": target})
    resp = conn.getresponse()
    results[target] = [resp.status, resp.read().decode()[:300]]
json.dump(results, open("egress-results.json", "w"))
json.dump({"state": "done", "summary": "tried"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""


def test_network_allowlist_reaches_only_listed_hosts_and_logs_each(repo: GitRepo) -> None:
    """--network allowlist through the real CLI: the proxy env is set, a listed loopback port answers,
    an unlisted one is refused with a readable denial, and both are in the journal's egress log."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    hits: list[int] = []

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.server.server_address[1])
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the listed host")

        def log_message(self, *args: object) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Hello) for _ in range(2)]
    for server in servers:
        Thread(target=server.serve_forever, daemon=True).start()
    listed, unlisted = (s.server_address[1] for s in servers)
    (repo.path / "egress.py").write_text(EGRESS_AGENT)
    repo.git("add", "egress.py")
    repo.git("commit", "-q", "-m", "egress agent")
    try:
        with ScriptedUpstream() as up:
            r = harness(*run_args("egress", "--network", "allowlist", "--allow-host", f"127.0.0.1:{listed}",
                                  cmd=f"TARGETS='127.0.0.1:{listed} 127.0.0.1:{unlisted}' python3 egress.py"),
                        cwd=repo.path, env=_env(up))  # fmt: skip
    finally:
        for server in servers:
            server.shutdown()
    assert r.json()["status"] == "completed", r.stderr
    results = json.loads(repo.git("show", "harness/egress:egress-results.json"))
    assert results[f"127.0.0.1:{listed}"] == [200, "hello from the listed host"]
    status, body = results[f"127.0.0.1:{unlisted}"]
    assert status == 403 and json.loads(body)["error"] == "egress-refused"
    assert hits == [listed]  # the unlisted server never saw a connection
    log = [json.loads(line) for line in (repo.journal("egress") / "egress.log").read_text().splitlines()]
    decisions = {(entry["port"], entry["decision"]) for entry in log}
    assert decisions == {(listed, "allowed"), (unlisted, "refused")}


def test_network_options_are_checked_before_anything_is_created(repo: GitRepo) -> None:
    for args, needle in (
        (["--network", "host"], "not offered"),
        (["--allow-host", "example.com"], "needs --network allowlist"),
        (["--network", "allowlist"], "at least one --allow-host"),
        (["--network", "allowlist", "--allow-host", "exa mple.com"], "--allow-host"),
        (["--max-cost", "-1"], "--max-cost"),
    ):
        r = harness(*run_args("opts", *args, "--dry-run", cmd="true"), cwd=repo.path)
        assert r.code == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert not repo.journal("opts").exists()
    keys = {"ANTHROPIC_API_KEY": REAL_KEY, "ANTHROPIC_AUTH_TOKEN": "", "OPENAI_API_KEY": ""}
    plan = harness(*run_args("opts", "--network", "allowlist", "--allow-host", "API.example.com", "--max-cost", "3",
                             "--dry-run", cmd="true"), cwd=repo.path, env=keys).json()  # fmt: skip
    assert plan["network"] == "allowlist" and plan["allowHosts"] == ["api.example.com:443"]
    assert plan["gateway"]["keysPresent"] == ["anthropic"] and plan["gateway"]["maxCostUsd"] == 3.0
    assert REAL_KEY not in json.dumps(plan)
    # The Docker backend relays the gateway and the egress proxy from a read-only mount of their sockets.
    submitted = plan["submission"]
    net = [m for m in submitted["mounts"] if m["target"] == "/harness-net"]
    assert net == [{"type": "bind", "source": net[0]["source"], "target": "/harness-net", "readOnly": True}]
    assert submitted["command"][:5] == [
        "harness-relay", "--listen", "127.0.0.1:8787=/harness-net/gateway.sock",
        "--listen", "127.0.0.1:8788=/harness-net/egress.sock",
    ]  # fmt: skip
    assert [s["port"] for s in plan["services"]] == [8787, 8788]


def _gateway_answers(sock: Path, tmp: Path) -> bool:
    """True when something accepts connections on the gateway's socket (reached by a short link)."""
    import socket as _socket

    link = tmp / f"gw-{time.monotonic_ns()}"
    link.symlink_to(sock.parent)
    try:
        with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as client:
            client.connect(str(link / sock.name))
    except OSError:
        return False
    finally:
        link.unlink()
    return True


def test_the_gateway_lives_with_a_detached_supervisor_dies_with_kill_9_and_resume_restarts_it(
    agent_repo: GitRepo, tmp_path: Path
) -> None:
    import signal

    with ScriptedUpstream(anthropic=[Reply(text="first"), Reply(text="second")]) as up:
        # The first attempt lingers after its call (answer.txt is then in the copy); the resumed one does not.
        linger_first = "LINGER=$([ -e answer.txt ] && echo 0 || echo 120) python3 agent.py"
        r = harness(*run_args("k9gw", "--detach", cmd=linger_first), cwd=agent_repo.path, env=_env(up))
        pid = r.json()["pid"]
        summary_path = agent_repo.journal("k9gw") / "run-summary.json"
        sock = Path(json.loads(summary_path.read_text())["runDir"]) / "net" / "gateway.sock"
        # The agent's call went through the detached gateway.
        wait_for(lambda: up.seen("/v1/messages"), 120, "the detached run's agent to reach the model")
        assert _gateway_answers(sock, tmp_path)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _gateway_answers(sock, tmp_path), 30, "the gateway to end with its supervisor")

        resumed = harness("resume", "--session", "k9gw", "--json", cwd=agent_repo.path, env=_env(up))
        assert resumed.json()["status"] == "completed", resumed.stderr
        assert [s.headers["x-api-key"] for s in up.seen("/v1/messages")] == [REAL_KEY, REAL_KEY]
        assert "second" in agent_repo.git("show", "harness/k9gw:answer.txt")


def test_auth_subscription_serves_the_run_with_the_token_though_a_key_is_set(agent_repo: GitRepo) -> None:
    token = "sk-ant-oat01-REAL-night-token-3e9f"
    with ScriptedUpstream(anthropic=[Reply(text="on the plan")]) as up:
        env = {**_env(up), "CLAUDE_CODE_OAUTH_TOKEN": token}  # and the API key of _env
        r = harness(*run_args("sub", "--auth", "subscription", cmd="python3 agent.py"), cwd=agent_repo.path, env=env)
        seen = up.seen("/v1/messages")
    assert r.json()["status"] == "completed", r.stderr
    assert [s.headers.get("authorization") for s in seen] == [f"Bearer {token}"]
    assert all("x-api-key" not in s.headers for s in seen)  # the key the host also holds is never used
    summary = json.loads((agent_repo.journal("sub") / "run-summary.json").read_text())
    assert summary["auth"] == "subscription" and token not in _all_text_under(agent_repo.journal("sub"))
