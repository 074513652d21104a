"""The end of a session, told at least once (run-summary.json's `endNotice`, written with the end): a session
supervisor killed with `kill -9` while the end is being sent leaves it owed; `resume` tells it exactly once (and, for
a completed session, does nothing else; with `--max-iterations` it tells it and then runs on), and the user service
(`harness service run-once`) tells the owed ends it finds, a session's and a race's, once, resuming nothing. Real
Docker engine, real git, a webhook on loopback that takes the first connection and never reads it (the send is in
progress when the supervisor is killed: tests/integration/test_race_notify_end.py); each test counts what it got."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from tests.helpers import GitRepo, exited, harness, run_args, wait_for
from tests.integration.test_race import _end_what_the_race_left, race_args, racers  # noqa: F401 - fixture
from tests.integration.test_race_notify_end import notifications as told_of
from tests.integration.test_race_notify_end import race_json
from tests.notify_receiver import Receiver

pytestmark = pytest.mark.docker

DONE = 'printf \'{"state": "done", "summary": "ok"}\' > "$HARNESS_STATUS_FILE"'
PENDING = {"event": "end", "state": "pending", "owed": [0], "sends": 0}
DELIVERED = {"event": "end", "state": "delivered", "owed": [], "sends": 1}


def summary_json(repo: GitRepo, session: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((repo.journal(session) / "run-summary.json").read_text())
    return found


def killed_while_it_tells(repo: GitRepo, hook: Receiver, session: str) -> dict[str, Any]:
    """Run `session` detached to its end (completed after one iteration), kill -9 its supervisor while it sends the
    end to `hook` (connected, no answer yet), and let that connection go unread: nothing arrived. Its summary."""
    r = harness(*run_args(session, "--detach", "--notify", f"{hook.url}/hook", cmd=DONE, iterations=3), cwd=repo.path)
    assert r.code == 0, r.stderr
    pid = int(r.json()["pid"])
    try:
        wait_for(hook.stalled.is_set, 180, f"the end of {session} to be sent")
        summary = summary_json(repo, session)  # the end and what it owes: one write, before the send
        assert (summary["status"], summary["iterationCount"], summary["endNotice"]) == ("completed", 1, PENDING)
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: exited(pid), 30, "the session's supervisor to die")
    hook.let_go()
    assert hook.received == [] and told_of(repo, session) == []
    return summary


def test_a_session_killed_while_it_tells_its_end_leaves_it_to_resume_which_tells_it_once(repo: GitRepo) -> None:
    with Receiver(stall=True) as hook:
        before = killed_while_it_tells(repo, hook, "sk")
        owed = harness("status", "--session", "sk", "--json", cwd=repo.path)
        assert owed.code == 0 and owed.json()["endOwed"] == 1, owed.stderr
        assert owed.json()["verdict"].endswith("; its end was not told to 1 --notify target: resume tells it")

        resumed = harness("resume", "--session", "sk", "--json", cwd=repo.path)
        assert resumed.code == 0, resumed.stderr  # the session's status, as `status` prints it: completed
        assert (resumed.json()["status"], resumed.json()["iterationCount"]) == ("completed", 1)
        (post,) = hook.received  # exactly one end arrived
        sent = json.loads(post.body)
        assert post.path == "/hook" and post.headers["x-harness-event"] == "end"
        assert (sent["event"], sent["sessionId"], sent["status"], sent["iterationCount"]) == (
            "end",
            "sk",
            "completed",
            1,
        )
        (told,) = told_of(repo, "sk")
        assert (told["event"], told["delivered"], told["state"]) == ("end", True, "completed")
        after = summary_json(repo, "sk")
        assert after["endNotice"] == DELIVERED
        # Nothing else: no iteration ran, no supervisor started, the end is the one recorded.
        assert (after["status"], after["iterationCount"], after["finishedAt"], after["supervisor"]) == (
            "completed", 1, before["finishedAt"], None)  # fmt: skip
        assert not (repo.journal("sk") / "iteration-0002.json").exists()
        told_now = harness("status", "--session", "sk", "--json", cwd=repo.path).json()
        assert told_now["endOwed"] == 0 and "not told" not in told_now["verdict"]

        again = harness("resume", "--session", "sk", "--json", cwd=repo.path)  # told: nothing is owed any more
        assert again.code == 11 and "session 'sk' is completed" in again.stderr, again.stderr
        assert len(hook.received) == 1 and len(told_of(repo, "sk")) == 1


def test_resume_with_more_iterations_tells_the_owed_end_first_then_runs_on(repo: GitRepo) -> None:
    with Receiver(stall=True) as hook:
        killed_while_it_tells(repo, hook, "sm")
        r = harness("resume", "--session", "sm", "--max-iterations", "1", "--json", cwd=repo.path)
        assert r.code == 0, r.stderr
        assert (r.json()["status"], r.json()["iterationCount"]) == ("completed", 2)
        # The end owed (told after iteration 1, before the run went on), then the new one: each once.
        sent = [json.loads(post.body) for post in hook.received]
        assert [(s["event"], s["iterationCount"]) for s in sent] == [("end", 1), ("end", 2)]
    assert [(n["event"], n["iteration"], n["delivered"]) for n in told_of(repo, "sm")] == [("end", 1, True),
                                                                                          ("end", 2, True)]  # fmt: skip
    assert summary_json(repo, "sm")["endNotice"] == DELIVERED  # the new end's


def test_the_service_tells_the_owed_ends_of_a_session_and_of_a_race_once_and_resumes_nothing(repo: GitRepo) -> None:
    with Receiver(stall=True) as hook, Receiver(stall=True) as race_hook:
        killed_while_it_tells(repo, hook, "sv")
        r = harness(*race_args("rv", racers("2"), "--notify", f"{race_hook.url}/hook", n=2), "--detach", "--json",
                    cwd=repo.path)  # fmt: skip
        assert r.code == 0, r.stderr
        pid = int(r.json()["pid"])  # the race's supervisor
        try:
            wait_for(race_hook.stalled.is_set, 180, "the race's end to be sent")
            assert race_json(repo, "rv")["endNotice"] == PENDING
        finally:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: exited(pid), 30, "the race's supervisor to die")
        race_hook.let_go()
        assert race_hook.received == []
        racers_before = {k: summary_json(repo, f"rv-{k}") for k in (1, 2)}

        ran = harness("service", "run-once", "--json", "--booted-at", "now", cwd=repo.path)
        assert ran.code == 0, ran.stderr
        found = sorted((s["sessionId"], s["action"], s["pid"]) for s in ran.json()["sessions"])
        assert found == [("rv", "told", None), ("sv", "told", None)]  # the race once, though two racers lead to it
        (post,) = hook.received
        assert (json.loads(post.body)["sessionId"], json.loads(post.body)["event"]) == ("sv", "end")
        (race_post,) = race_hook.received
        assert (json.loads(race_post.body)["sessionId"], json.loads(race_post.body)["winners"]) == ("rv", ["rv-2"])
        assert summary_json(repo, "sv")["endNotice"] == DELIVERED and race_json(repo, "rv")["endNotice"] == DELIVERED
        # Nothing resumed: the session is as it ended, the racers untouched.
        assert (summary_json(repo, "sv")["iterationCount"], summary_json(repo, "sv")["supervisor"]) == (1, None)
        assert {k: summary_json(repo, f"rv-{k}") for k in (1, 2)} == racers_before

        again = harness("service", "run-once", "--json", "--booted-at", "now", cwd=repo.path)
        assert again.code == 0 and again.json()["sessions"] == [], again.stdout  # told: nothing owed any more
        assert (len(hook.received), len(race_hook.received)) == (1, 1)
