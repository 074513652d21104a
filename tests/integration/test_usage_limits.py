"""A subscription's usage window, spent in the night: the run waits for it to reopen and goes on by itself.

An `--agent-cmd` agent calls the Messages API through the relay and the gateway, from a `--network none`
container, against a scripted upstream on loopback that answers as Anthropic does when a window is spent.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from typing import Any

import pytest

from tests.helpers import GitRepo, containers, harness, run_args, wait_for
from tests.upstreams import Error, Reply, ScriptedUpstream, anthropic_error

pytestmark = pytest.mark.docker

KEY = "sk-ant-api03-usage-limit-test-key"

# One Messages API call; a refusal ends the agent (as a CLI does when it gives up), an answer ends it done.
AGENT = r"""
import json, os, sys, urllib.request, urllib.error
req = urllib.request.Request(os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", method="POST",
    data=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "tools": [{"name": "Bash"}],
                     "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01",
             "content-type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=60).read()
except urllib.error.HTTPError as exc:
    print(f"API Error: {exc.code} {exc.read().decode()}", flush=True)
    sys.exit(3)
json.dump({"state": "done", "summary": "asked the model"}, open(os.environ["HARNESS_STATUS_FILE"], "w"))
"""

# An agent that only *says* it hit a usage limit: text is never a fact.
SAYS_LIMIT = "echo 'Claude usage limit reached. Your limit will reset at 5am'; exit 1"


@pytest.fixture
def agent_repo(repo: GitRepo) -> GitRepo:
    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "agent")
    return repo


def spent_window(seconds_ahead: float, *, window: str = "5h") -> Error:
    reset = str(int(time.time() + seconds_ahead))
    return Error(429, body=anthropic_error(429, "usage limit reached"), headers={
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": reset,
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        f"anthropic-ratelimit-unified-{window}-status": "rejected",
        f"anthropic-ratelimit-unified-{window}-reset": reset,
        "retry-after": str(int(seconds_ahead)),
    })  # fmt: skip


def run(repo: GitRepo, session: str, up: ScriptedUpstream, agent: str, *extra: str) -> Any:
    r = harness(*run_args(session, *extra, cmd=agent, objective="talk to the model"), cwd=repo.path,
                env={"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY})  # fmt: skip
    assert r.stdout, r.stderr
    return r


def iteration(repo: GitRepo, session: str, n: int) -> dict[str, Any]:
    return json.loads((repo.journal(session) / f"iteration-{n:04d}.json").read_text())


def test_a_spent_window_is_waited_out_and_the_run_goes_on_without_using_an_iteration(agent_repo: GitRepo) -> None:
    # Far enough ahead that the wait is still on when the container has started on a loaded machine.
    with ScriptedUpstream(anthropic=[spent_window(25), Reply(text="room again")]) as up:
        r = run(agent_repo, "lim", up, "python3 agent.py", "--max-iterations", "1", "--detach")
        assert r.code == 0, r.stderr

        def waiting() -> dict[str, Any] | None:
            st = harness("status", "--session", "lim", "--json", cwd=agent_repo.path).json()
            return st if (st.get("usageLimit") or {}).get("until") else None

        wait_for(waiting, 120, "the session to show that it waits for the limit")
        shown = waiting() or {}
        assert shown["status"] == "running" and shown["usageLimit"]["window"] == "5-hour"
        assert "waiting for the limit to reset at " in shown["verdict"] and "(5-hour window)" in shown["verdict"]
        resets_at = datetime.fromisoformat(shown["usageLimit"]["resetsAt"])
        listed = harness("list", cwd=agent_repo.path)
        assert "waiting for the limit to reset at" in listed.stdout, listed.stdout
        wait_for(lambda: harness("status", "--session", "lim", "--json", cwd=agent_repo.path).json()["status"]
                 != "running", 120, "the run to go on and end")  # fmt: skip
        seen = up.seen("/v1/messages")
    final = harness("status", "--session", "lim", "--json", cwd=agent_repo.path).json()
    assert (final["status"], final["iterationCount"]) == ("completed", 2), final
    first, second = iteration(agent_repo, "lim", 1), iteration(agent_repo, "lim", 2)
    assert first["outcome"] == "usage-limit" and first["failureClass"] is None
    assert first["usage"]["usageLimited"] == 1 and first["usage"]["usageLimit"]["window"] == "5-hour"
    assert second["outcome"] == "done"
    # It went on by itself, at the reset and not before: the second request came after it.
    assert len(seen) == 2
    second_started = datetime.fromisoformat(second["startedAt"])
    assert second_started >= resets_at
    assert (second_started - resets_at).total_seconds() < 60
    assert final["usageLimit"]["until"] is None and final["usageLimit"]["total"] == 1


def test_a_window_that_reopens_after_the_run_may_wait_ends_it_resumable(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[spent_window(3 * 3600, window="7d"), Reply(text="later")]) as up:
        r = run(agent_repo, "far", up, "python3 agent.py", "--max-time", "10m")
    st = r.json()
    assert (st["status"], st["stopReason"], st["iterationCount"]) == ("stopped", "usage-limit", 1), st
    assert "the usage limit resets at" in st["verdict"] and st["verdict"].endswith("resume then")
    assert iteration(agent_repo, "far", 1)["outcome"] == "usage-limit"
    assert r.code == 21  # needs attention: resumable, not failed


def test_an_overloaded_provider_is_an_ordinary_backoff_not_a_usage_limit(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[Error(529), Reply(text="fine now")]) as up:
        r = run(agent_repo, "busy", up, "python3 agent.py", "--backoff-base", "1s")
    st = r.json()
    assert st["status"] == "completed", st
    assert [iteration(agent_repo, "busy", n)["outcome"] for n in (1, 2)] == ["backoff", "done"]
    assert st.get("usageLimit") is None


def test_an_agent_that_only_prints_usage_limit_is_not_waited_for(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[Reply(text="unused")]) as up:
        r = run(agent_repo, "says", up, SAYS_LIMIT, "--max-iterations", "1")
    st = r.json()
    assert iteration(agent_repo, "says", 1)["outcome"] == "agent-error"
    assert st["status"] != "running" and st.get("usageLimit") is None and st["stopReason"] != "usage-limit"


def test_a_reset_beyond_wait_on_limit_ends_the_run_resumable_and_no_wait_on_limit_ends_it_at_once(
    agent_repo: GitRepo,
) -> None:
    with ScriptedUpstream(anthropic=[spent_window(90), Reply(text="resumed")]) as up:
        r = run(agent_repo, "cap", up, "python3 agent.py", "--wait-on-limit", "20s")
        st = r.json()
        assert (st["status"], st["stopReason"]) == ("stopped", "usage-limit"), st
        # Resumed (the user's choice, here with no cap): the window is tried again at once, and it has room.
        env = {"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY}
        resumed = harness("resume", "--session", "cap", "--json", cwd=agent_repo.path, env=env)
        assert resumed.json()["status"] == "completed", resumed.stderr
    with ScriptedUpstream(anthropic=[spent_window(5), Reply(text="unused")]) as up:
        r = run(agent_repo, "now", up, "python3 agent.py", "--no-wait-on-limit")
    st = r.json()
    assert (st["status"], st["stopReason"], st["iterationCount"]) == ("stopped", "usage-limit", 1), st
    both = harness(*run_args("both", "--no-wait-on-limit", "--wait-on-limit", "1h", cmd="true", as_json=False),
                   cwd=agent_repo.path)  # fmt: skip
    assert both.code == 2 and "not both" in both.stderr


def test_a_waiting_session_survives_a_killed_supervisor_and_goes_on_waiting_after_resume(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[spent_window(30), Reply(text="room again")]) as up:
        r = run(agent_repo, "k9", up, "python3 agent.py", "--detach")
        pid = r.json()["pid"]

        def status() -> dict[str, Any]:
            return harness("status", "--session", "k9", "--json", cwd=agent_repo.path).json()

        wait_for(lambda: (status().get("usageLimit") or {}).get("until"), 120, "the wait for the limit")
        until = status()["usageLimit"]["until"]
        # Nothing runs while it waits: no container of the session, only the supervisor asleep. The wait is
        # recorded first, and the checkpoint's resident helper removed a moment after (under load, after status
        # shows the wait): looked at until gone, while the session still waits and has asked nothing more.
        wait_for(lambda: containers("io.solo-harness.session=k9") == [], 20, "the waiting session to hold no container")
        assert status()["usageLimit"]["until"] == until and len(up.seen("/v1/messages")) == 1
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: status()["status"] != "running", 30, "status to see the supervisor gone")
        env = {"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY}
        resumed = harness("resume", "--session", "k9", "--detach", "--json", cwd=agent_repo.path, env=env)
        assert resumed.code == 0, resumed.stderr
        wait_for(lambda: status()["status"] == "running" and (status().get("usageLimit") or {}).get("until"), 60,
                 "the resumed supervisor to wait again")  # fmt: skip
        assert status()["usageLimit"]["until"] == until and len(up.seen("/v1/messages")) == 1  # no early retry
        wait_for(lambda: status()["status"] != "running", 120, "the run to go on after the reset")
        assert len(up.seen("/v1/messages")) == 2
    final = status()
    assert (final["status"], final["iterationCount"]) == ("completed", 2), final
    second = iteration(agent_repo, "k9", 2)
    assert datetime.fromisoformat(second["startedAt"]) >= datetime.fromisoformat(until)


NO_RESET = Error(429, body=anthropic_error(429, "usage limit reached"),
                 headers={"anthropic-ratelimit-unified-status": "rejected"})  # fmt: skip


def test_without_a_reset_the_cheapest_request_probes_for_room_instead_of_an_iteration(agent_repo: GitRepo) -> None:
    with ScriptedUpstream(anthropic=[NO_RESET, Reply(text="room again")], untaken={"anthropic": [NO_RESET]}) as up:
        r = run(agent_repo, "probe", up, "python3 agent.py", "--backoff-base", "1s", "--max-iterations", "1")
        seen = up.seen("/v1/messages")
    st = r.json()
    assert (st["status"], st["iterationCount"]) == ("completed", 2), st
    # The agent's refused call, two probes (still spent, then room), the agent's call that went through.
    probes = [s for s in seen if s.step is None]
    assert len(seen) == 4 and len(probes) == 2
    assert all(p.body["max_tokens"] == 1 and "tools" not in p.body for p in probes)
    assert all(p.headers["x-api-key"] == KEY for p in probes)
    lines = [json.loads(line) for line in (agent_repo.journal("probe") / "gateway.log").read_text().splitlines()]
    assert [line.get("usageLimit") is not None for line in lines if line.get("probe")] == [True, False]
    assert st["usageLimit"]["probes"] == 2 and st["usageLimit"]["total"] == 1  # one iteration, not three
