"""Notifications (--notify) of real runs on the real Docker engine: receivers on loopback and a command on the host
get the report's JSON; a failing receiver is tried again, one that is down changes nothing in the run; the
webhooks' secrets are nowhere in the journal, the supervisor's log, `status`, `report` or `--dry-run`."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import GitRepo, harness, run_args, wait_for
from tests.integration.test_usage_limits import AGENT, KEY, spent_window
from tests.notify_receiver import Receiver
from tests.upstreams import Reply, ScriptedUpstream

pytestmark = pytest.mark.docker


def agent(state: str) -> str:
    return f'printf \'{{"state": "{state}", "summary": "it is {state}"}}\' > "$HARNESS_STATUS_FILE"'


DONE, BLOCKED = agent("done"), agent("blocked")
# Each a secret of one target's URL; none may be seen anywhere the harness writes or prints.
SECRETS = ("GENERIC-PATH-s3cret", "QUERY-t0ken-value", "PASSW0RD-s3cret", "T0SLACKSECRET", "SLACK-t0ken-XYZ",
           "ntfy-topic-s3cret")  # fmt: skip


def status(repo: GitRepo, session: str) -> dict[str, Any]:
    result: dict[str, Any] = harness("status", "--session", session, "--json", cwd=repo.path).json()
    return result


def notifications(repo: GitRepo, session: str) -> list[dict[str, Any]]:
    path = repo.journal(session) / "notifications.json"
    found: list[dict[str, Any]] = json.loads(path.read_text())["notifications"] if path.exists() else []
    return found


def everything_written(repo: GitRepo, session: str) -> str:
    """Every file of the session's journal directory (the supervisor's log included), as text."""
    files = [p for p in repo.journal(session).rglob("*") if p.is_file()]
    assert any(p.name == "supervisor.log" for p in files) and any(p.name == "notifications.json" for p in files)
    return "\n".join(p.read_text(errors="replace") for p in files)


def test_the_end_of_a_run_reaches_every_kind_of_webhook_and_their_secrets_are_nowhere(repo: GitRepo) -> None:
    with Receiver() as generic, Receiver(500, 500, 200) as flaky, Receiver() as slack, Receiver() as ntfy:
        port = {name: r.url.rsplit(":", 1)[1] for name, r in
                {"generic": generic, "flaky": flaky, "slack": slack, "ntfy": ntfy}.items()}  # fmt: skip
        targets = [
            f"http://127.0.0.1:{port['generic']}/hooks/GENERIC-PATH-s3cret?token=QUERY-t0ken-value",
            f"http://harness:PASSW0RD-s3cret@127.0.0.1:{port['flaky']}/flaky",
            f"slack+http://127.0.0.1:{port['slack']}/services/T0SLACKSECRET/B000/SLACK-t0ken-XYZ",
            f"ntfy+http://127.0.0.1:{port['ntfy']}/ntfy-topic-s3cret",
        ]
        given = " ".join(targets)
        assert all(secret in given for secret in SECRETS)  # positive control: each secret is in what was given
        args = [a for t in targets for a in ("--notify", t)]
        r = harness(*run_args("night", *args, "--detach", cmd=DONE), cwd=repo.path)
        assert r.code == 0, r.stderr
        wait_for(lambda: len(notifications(repo, "night")) == 4, 180, "the four notifications to be recorded")

        (post,) = generic.received
        assert post.path == "/hooks/GENERIC-PATH-s3cret?token=QUERY-t0ken-value"  # the URL as given
        assert post.headers["content-type"] == "application/json" and post.headers["x-harness-event"] == "end"
        report = json.loads(post.body)
        assert (report["event"], report["kind"], report["sessionId"]) == ("end", "solo-harness.report", "night")
        assert (report["status"], report["stopReason"]) == ("completed", "agent-done")
        assert report["branch"] == "harness/night"
        assert [i["summary"] for i in report["iterations"]] == ["it is done"]
        # The same JSON as `harness report --json` prints, with the event.
        printed = harness("report", "--session", "night", "--json", cwd=repo.path).json()
        assert {k for k in report if k != "event"} == set(printed)

        assert len(flaky.received) == 3  # 500, 500, then taken
        assert flaky.received[-1].headers["authorization"] == "Basic " + base64.b64encode(
            b"harness:PASSW0RD-s3cret").decode()  # fmt: skip
        assert json.loads(flaky.received[-1].body)["sessionId"] == "night"
        text = json.loads(slack.received[0].body)["text"]  # Slack's incoming-webhook shape
        assert text.startswith("harness: night completed (end)") and "iterations 1/" in text
        assert ntfy.received[0].headers["title"] == "harness: night completed"
        assert ntfy.received[0].body.decode().startswith("harness: night completed")

    records = {n["target"]: n for n in notifications(repo, "night")}
    assert set(records) == {
        f"http://127.0.0.1:{port['generic']}/…", f"http://127.0.0.1:{port['flaky']}/…",
        f"slack+http://127.0.0.1:{port['slack']}/…", f"ntfy+http://127.0.0.1:{port['ntfy']}/…",
    }  # fmt: skip
    assert all(n["delivered"] and n["event"] == "end" and n["state"] == "completed" for n in records.values())
    assert records[f"http://127.0.0.1:{port['flaky']}/…"]["attempts"] == 3
    assert records[f"http://127.0.0.1:{port['generic']}/…"]["attempts"] == 1

    st = status(repo, "night")
    assert st["status"] == "completed"
    written = everything_written(repo, "night")
    assert "/…" in written  # control: the targets are in these files, shown by kind and host
    shown = [r.stdout, r.stderr, json.dumps(st), json.dumps(printed), written]
    for secret in SECRETS:
        assert not any(secret in text for text in shown), secret


def test_the_plan_shows_the_targets_by_kind_and_host_only(repo: GitRepo) -> None:
    targets = ["slack+https://hooks.slack.com/services/T0SLACKSECRET/B000/SLACK-t0ken-XYZ",
               "ntfy+https://ntfy.sh/ntfy-topic-s3cret", "cmd:notify-send QUERY-t0ken-value"]  # fmt: skip
    r = harness(*run_args("plan", *[a for t in targets for a in ("--notify", t)], "--notify-on", "blocked,budget",
                          "--dry-run", cmd=DONE), cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["notify"] == {
        "targets": ["slack+https://hooks.slack.com/…", "ntfy+https://ntfy.sh/…", "cmd:notify-send …"],
        "events": ["blocked", "budget"],
    }
    assert plan["options"]["notify"] == plan["notify"]["targets"] and plan["sources"]["notify"] == "cli"
    assert not any(secret in r.stdout + r.stderr for secret in SECRETS)
    bad = harness(*run_args("plan", "--notify", "hooks.slack.com/services/T0SLACKSECRET", "--dry-run", cmd=DONE),
                  cwd=repo.path)  # fmt: skip
    assert bad.code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "T0SLACKSECRET" not in bad.stderr


def test_a_receiver_that_is_down_changes_nothing_in_the_run_and_is_recorded(repo: GitRepo) -> None:
    with Receiver() as gone:
        url = f"{gone.url}/ntfy-topic-s3cret"  # nothing listens there once it is closed
    r = harness(*run_args("down", "--notify", url, cmd=DONE), cwd=repo.path)
    assert r.code == 0, r.stderr  # completed, as without a notification
    st = r.json()
    assert (st["status"], st["stopReason"], st["iterationCount"]) == ("completed", "agent-done", 1)
    (record,) = notifications(repo, "down")
    assert (record["delivered"], record["attempts"], record["event"]) == (False, 3, "end")
    assert "refused" in record["error"].lower() and "ntfy-topic-s3cret" not in json.dumps(record)
    assert "ntfy-topic-s3cret" in url  # control


RECEIVE = """
import json, os, sys
out = sys.argv[1]
open(os.path.join(out, "stdin.json"), "w").write(sys.stdin.read())
json.dump({k: v for k, v in os.environ.items() if k.startswith("HARNESS_")}, open(os.path.join(out, "env.json"), "w"))
print("received")
"""


def test_a_command_gets_the_report_on_stdin_and_the_state_in_its_variables(repo: GitRepo, tmp_path: Path) -> None:
    out = tmp_path / "received"  # on the host: no container mounts it
    out.mkdir()
    (tmp_path / "receive.py").write_text(RECEIVE)
    plain = f"cmd:{sys.executable} {tmp_path / 'receive.py'} {out}"  # no shell needed: run without one
    shell = f"cmd:cat > {out / 'by-shell.json'}"  # a redirection: run with /bin/sh -c
    r = harness(*run_args("cmd", "--notify", plain, "--notify", shell, cmd=BLOCKED), cwd=repo.path)
    assert r.code == 21, r.stderr  # blocked: needs attention
    report = json.loads((out / "stdin.json").read_text())
    assert (report["event"], report["sessionId"], report["status"]) == ("blocked", "cmd", "blocked")
    assert json.loads((out / "by-shell.json").read_text()) == report
    env = json.loads((out / "env.json").read_text())
    journal = repo.journal("cmd")
    assert {k: env[k] for k in ("HARNESS_EVENT", "HARNESS_SESSION", "HARNESS_STATE", "HARNESS_STOP_REASON",
                                "HARNESS_OUTCOME", "HARNESS_ITERATIONS", "HARNESS_BRANCH")} == {
        "HARNESS_EVENT": "blocked", "HARNESS_SESSION": "cmd", "HARNESS_STATE": "blocked",
        "HARNESS_STOP_REASON": "agent-blocked", "HARNESS_OUTCOME": "blocked", "HARNESS_ITERATIONS": "1",
        "HARNESS_BRANCH": "harness/cmd",
    }  # fmt: skip
    assert Path(env["HARNESS_JOURNAL_DIR"]).resolve() == journal.resolve()
    assert Path(env["HARNESS_REPO"]).resolve() == repo.path.resolve() and env["HARNESS_COST_USD"] == "0.0000"
    records = {n["target"]: n for n in notifications(repo, "cmd")}
    assert records["cmd:cat …"]["delivered"] and records["cmd:cat …"]["exitCode"] == 0
    assert records[f"cmd:{sys.executable} …"]["output"].strip() == "received"


def test_an_event_that_is_not_selected_sends_nothing(repo: GitRepo) -> None:
    with Receiver() as receiver:
        r = harness(*run_args("done", "--notify", receiver.url, "--notify-on", "blocked", cmd=DONE), cwd=repo.path)
        assert r.code == 0, r.stderr
        assert receiver.count() == 0 and notifications(repo, "done") == []
        # Control: the same selection, and an agent that is blocked.
        r = harness(*run_args("stuck", "--notify", receiver.url, "--notify-on", "blocked", cmd=BLOCKED),
                    cwd=repo.path)  # fmt: skip
        assert r.code == 21, r.stderr
        assert [json.loads(p.body)["event"] for p in receiver.received] == ["blocked"]


def test_a_usage_limit_wait_is_notified_when_it_begins(repo: GitRepo) -> None:
    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "agent")
    with Receiver() as receiver, ScriptedUpstream(anthropic=[spent_window(600), Reply(text="later")]) as up:
        r = harness(*run_args("limit", "--notify", receiver.url, "--notify-on", "usage-limit", "--detach",
                              cmd="python3 agent.py", objective="talk to the model"),
                    cwd=repo.path, env={"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": KEY})  # fmt: skip
        assert r.code == 0, r.stderr
        wait_for(lambda: receiver.count() == 1, 120, "the usage-limit notification")
        sent = json.loads(receiver.received[0].body)
        st = status(repo, "limit")
        # Sent while the run waits (the window reopens in ten minutes), not when the wait is over.
        assert (sent["event"], sent["status"], st["status"]) == ("usage-limit", "running", "running")
        assert st["usageLimit"]["until"] is not None
        harness("stop", "--session", "limit", "--now", cwd=repo.path)
        wait_for(lambda: status(repo, "limit")["status"] != "running", 120, "the run to stop")
        # The delivery is recorded by the sender's thread once the receiver has answered: a moment after it
        # counted the request, whatever the run did meanwhile.
        wait_for(lambda: notifications(repo, "limit"), 60, "the delivery to be recorded")
    (record,) = notifications(repo, "limit")
    assert (record["event"], record["delivered"], record["state"]) == ("usage-limit", True, "running")


def test_resume_keeps_the_sessions_targets_and_can_replace_them(repo: GitRepo) -> None:
    with Receiver() as first, Receiver() as second:
        r = harness(*run_args("again", "--notify", f"{first.url}/ntfy-topic-s3cret", cmd=BLOCKED), cwd=repo.path)
        assert r.code == 21, r.stderr
        assert [json.loads(p.body)["event"] for p in first.received] == ["blocked"]
        r = harness("resume", "--session", "again", "--max-iterations", "1", "--json", cwd=repo.path)
        assert r.code == 21, r.stderr  # blocked again: told to the same target, kept by the session
        assert first.count() == 2
        r = harness("resume", "--session", "again", "--max-iterations", "1", "--notify", second.url,
                    "--notify-on", "blocked", "--json", cwd=repo.path)  # fmt: skip
        assert r.code == 21, r.stderr
        assert (first.count(), second.count()) == (2, 1)  # replaced
    summary = json.loads((repo.journal("again") / "run-summary.json").read_text())
    assert summary["notify"] == {"targets": [f"http://127.0.0.1:{second.url.rsplit(':', 1)[1]}/…"],
                                 "events": ["blocked"]}  # fmt: skip
    bad = harness("resume", "--session", "again", "--max-iterations", "1", "--notify-on", "sometimes",
                  cwd=repo.path)  # fmt: skip
    assert bad.code == 2 and "'sometimes' is not an event to notify" in bad.stderr
