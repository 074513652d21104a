"""The end of a race, told at least once (race.json's `endNotice`), and the race's notifications no other test
sends: a race supervisor killed with `kill -9` while the end is being sent leaves it owed, and `resume --session S`
tells it (and does nothing else); a pooled budget spent is told as `budget`; Ctrl-C of a race is told once, as an
`end` the race `stopped`; Slack and ntfy get a race's one line. Real Docker engine, real git, receivers on
loopback; each test counts what every receiver got."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

import pytest

from tests.helpers import HARNESS, HOLD, GitRepo, exited, harness, wait_for
from tests.integration.test_race import _end_what_the_race_left, race_args, racers, record  # noqa: F401 - fixture
from tests.notify_receiver import Receiver

pytestmark = pytest.mark.docker


def notifications(repo: GitRepo, session: str) -> list[dict[str, Any]]:
    path = repo.journal(session) / "notifications.json"
    found: list[dict[str, Any]] = json.loads(path.read_text())["notifications"] if path.exists() else []
    return found


def race_json(repo: GitRepo, race: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((repo.journal(race) / "race.json").read_text())
    return found


def test_a_race_supervisor_killed_while_it_tells_the_end_leaves_it_to_resume_which_tells_it_once(
    repo: GitRepo,
) -> None:
    with Receiver(stall=True) as hook:
        r = harness(*race_args("rk", racers("2"), "--notify", f"{hook.url}/hook", n=2), "--detach", "--json",
                    cwd=repo.path)  # fmt: skip
        assert r.code == 0, r.stderr
        pid = r.json()["pid"]  # the race's supervisor
        try:
            # The racers end by themselves; the race records its end, then connects to tell it: the seam.
            wait_for(hook.stalled.is_set, 180, "the race's end to be sent")
            rec = race_json(repo, "rk")
            assert (rec["state"], rec["winners"], rec["endReason"]) == ("finished", ["rk-2"], "all-ended")
            assert rec["endNotice"] == {"event": "end", "state": "pending", "owed": [0], "sends": 0}
        finally:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: exited(pid), 30, "the race's supervisor to die")
        hook.let_go()  # the connection it had made is closed unread: nothing arrived
        assert hook.received == [] and notifications(repo, "rk") == []
        racers_before = {k: (repo.journal(f"rk-{k}") / "run-summary.json").read_text() for k in (1, 2)}
        finished_at = rec["finishedAt"]

        resumed = harness("resume", "--session", "rk", "--json", cwd=repo.path)
        assert resumed.code == 0, resumed.stderr  # the race's status, as `status` prints it: won
        assert (resumed.json()["state"], resumed.json()["winners"]) == ("finished", ["rk-2"])
        (post,) = hook.received  # exactly one end arrived
        sent = json.loads(post.body)
        assert post.path == "/hook" and post.headers["x-harness-event"] == "end"
        assert (sent["event"], sent["kind"], sent["sessionId"], sent["winners"], sent["endReason"]) == (
            "end", "solo-harness.race-report", "rk", ["rk-2"], "all-ended")  # fmt: skip
        (told,) = notifications(repo, "rk")
        assert (told["event"], told["delivered"], told["raceEnd"], told["winners"]) == ("end", True, "all-ended",
                                                                                         ["rk-2"])  # fmt: skip
        rec = race_json(repo, "rk")
        assert rec["endNotice"] == {"event": "end", "state": "delivered", "owed": [], "sends": 1}
        # Nothing else: the race is as it ended, no racer was touched, no supervisor started.
        assert (rec["state"], rec["finishedAt"], rec["supervisor"]) == ("finished", finished_at, None)
        assert {k: (repo.journal(f"rk-{k}") / "run-summary.json").read_text() for k in (1, 2)} == racers_before

        again = harness("resume", "--session", "rk", "--json", cwd=repo.path)  # told: nothing is owed any more
        assert again.code == 11 and "race 'rk' is finished" in again.stderr, again.stderr
        assert len(hook.received) == 1 and len(notifications(repo, "rk")) == 1


def test_a_pooled_budget_spent_is_told_once_as_budget_to_every_kind_of_target(repo: GitRepo) -> None:
    from tests.integration.test_gateway_run import AGENT, REAL_KEY
    from tests.upstreams import Reply, ScriptedUpstream, Usage

    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "agent")
    dear = Usage(input_tokens=10_000, output_tokens=10_000)  # $0.18 a call on sonnet: one call an iteration
    with (
        ScriptedUpstream(anthropic=[Reply(text="hi", usage=dear)] * 40) as up,
        Receiver() as hook, Receiver() as slack, Receiver() as ntfy,
    ):  # fmt: skip
        targets = [f"{hook.url}/hook", f"slack+{slack.url}/services/T0/B0/x", f"ntfy+{ntfy.url}/topic"]
        key = {"ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": REAL_KEY}
        r = harness("race", "--session", "rb", "--objective", "talk to the model", "--n", "2",
                    "--agent-cmd", "LINGER=1 python3 agent.py", "--check", "false", "--max-iterations", "5",
                    "--budget", "pooled", "--max-cost", "0.30", *[a for t in targets for a in ("--notify", t)],
                    "--json", cwd=repo.path, env=key)  # fmt: skip
        assert r.code == 21, r.stderr
        assert (r.json()["endReason"], r.json()["winners"]) == ("max-cost", [])
        # Exactly one notification to each target, the race's, as `budget` (the racers tell no end of theirs).
        assert [len(x.received) for x in (hook, slack, ntfy)] == [1, 1, 1]
        assert {x.received[0].headers["x-harness-event"] for x in (hook, slack, ntfy)} == {"budget"}
        sent = json.loads(hook.received[0].body)
        assert (sent["event"], sent["sessionId"], sent["endReason"], sent["winners"]) == ("budget", "rb", "max-cost",
                                                                                          [])  # fmt: skip
        assert sent["verdict"].endswith("the pooled --max-cost was spent before a racer passed the check")
        line = f"harness: race rb ended, no winner (budget): {sent['verdict'].partition('  ')[2]}"
        cost = f"2 racers, cost ${sent['costUsd']:.2f}, ended: max-cost"
        assert json.loads(slack.received[0].body) == {"text": f"{line}\n{cost}"}
        headers = ntfy.received[0].headers
        assert (headers["title"], headers["priority"], headers["tags"]) == (
            "harness: race rb ended, no winner", "high", "robot")  # fmt: skip
        assert ntfy.received[0].body.decode() == json.loads(slack.received[0].body)["text"]
    told = notifications(repo, "rb")
    assert sorted((n["event"], n["raceEnd"], n["delivered"]) for n in told) == [("budget", "max-cost", True)] * 3
    assert notifications(repo, "rb-1") == [] and notifications(repo, "rb-2") == []
    assert race_json(repo, "rb")["endNotice"] == {"event": "budget", "state": "delivered", "owed": [], "sends": 1}


def test_ctrl_c_of_a_race_is_told_once_as_its_end_stopped_and_by_no_racer(repo: GitRepo) -> None:
    with Receiver() as hook:
        # Every event chosen: the racers would tell any of theirs but their end. Both hold their iteration.
        args = race_args("ri", racers("9", others=f"{HOLD};"), "--notify", hook.url, "--notify-on", "all", n=2)
        race = subprocess.Popen([*HARNESS, *args, "--json"], cwd=repo.path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            for k in (1, 2):
                wait_for((repo.journal(f"ri-{k}") / "iteration-0001.log").exists, 90, f"ri-{k}'s first iteration")
            assert hook.count() == 0
            race.send_signal(signal.SIGINT)  # Ctrl-C, to the race's foreground process only
            out, err = race.communicate(timeout=180)
        finally:
            if race.poll() is None:
                race.kill()
        assert race.returncode == 21, err  # the race's status: finished, no winner
        st = json.loads(out)
        assert (st["state"], st["endReason"], st["winners"]) == ("finished", "stopped", [])
        assert [(row["status"], row["stoppedByRace"]) for row in st["racers"]] == [("stopped", True)] * 2
        (post,) = hook.received  # one notification in all: the race's end
        sent = json.loads(post.body)
        assert (sent["event"], sent["sessionId"], sent["endReason"], post.headers["x-harness-event"]) == (
            "end", "ri", "stopped", "end")  # fmt: skip
        assert sent["verdict"].endswith("the race was stopped before a racer passed the check")
    assert [(n["event"], n["raceEnd"], n["delivered"]) for n in notifications(repo, "ri")] == [("end", "stopped", True)]
    assert notifications(repo, "ri-1") == [] and notifications(repo, "ri-2") == []
    assert race_json(repo, "ri")["endNotice"] == {"event": "end", "state": "delivered", "owed": [], "sends": 1}


def test_slack_and_ntfy_get_the_one_line_of_a_won_race(repo: GitRepo) -> None:
    with Receiver() as slack, Receiver() as ntfy:
        r = harness(*race_args("rl", racers("2"), "--notify", f"slack+{slack.url}/services/T0/B0/x", "--notify",
                               f"ntfy+{ntfy.url}/topic", n=2), "--json", cwd=repo.path)  # fmt: skip
        assert r.code == 0, r.stderr
        st = r.json()
        assert st["winners"] == ["rl-2"]
        assert (len(slack.received), len(ntfy.received)) == (1, 1)
        post = slack.received[0]
        assert (post.path, post.headers["content-type"], post.headers["x-harness-event"]) == (
            "/services/T0/B0/x", "application/json", "end")  # fmt: skip
        line = f"harness: race rl won by rl-2 (end): 2 of 2 racers ended, ${st['costUsd']:.2f}: rl-2 won"
        assert json.loads(post.body) == {"text": f"{line}\n2 racers, cost ${st['costUsd']:.2f}, ended: all-ended"}
        note = ntfy.received[0]
        assert note.path == "/topic" and note.body.decode() == json.loads(post.body)["text"]
        shown = [note.headers[h] for h in ("title", "priority", "tags", "x-harness-event")]
        assert shown == ["harness: race rl won by rl-2", "default", "robot", "end"]
    notice = record(repo, "rl").end_notice
    assert notice is not None and (notice.state, notice.owed, notice.sends) == ("delivered", [], 1)
