"""What the user service runs at login or boot (`harness service run-once`), driven directly on the real engine:
no reboot happens here, so `--booted-at now` stands for "the machine has just booted" (every supervisor that is
dead died before it). Sessions whose supervisor was killed (kill -9) or terminated (SIGTERM, as a shutdown does)
are resumed, detached, and complete; stopped and completed ones are not; one that keeps dying is left
`interrupted` with the reason once its restart budget is spent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from typing import Any

import pytest

from runner.record.journal import load_model
from runner.record.models import RunSummary
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import HOLD, GitRepo, exited, harness, release, remove_session_containers, run_args, wait_for

pytestmark = pytest.mark.docker

DONE = 'printf \'{"state": "done", "summary": "ok"}\' > "$HARNESS_STATUS_FILE"'
HELD = f"{HOLD}; {DONE}"  # holds each iteration until the test releases the session


def summary_of(repo: GitRepo, session: str) -> RunSummary:
    return load_model(repo.journal(session) / "run-summary.json", RunSummary)


def agent_running(session: str) -> bool:
    filters = [f"label=io.solo-harness.test={TEST_RUN_LABEL}", f"label=io.solo-harness.session={session}",
               "label=io.solo-harness.role=agent", "status=running"]  # fmt: skip
    args = [a for f in filters for a in ("--filter", f)]
    return bool(subprocess.run(["docker", "ps", "-q", *args], capture_output=True, text=True, check=True).stdout)


def start_held(repo: GitRepo, session: str, *extra: str) -> int:
    """A detached session whose agent holds its first iteration; its supervisor's pid once the agent runs."""
    r = harness(*run_args(session, "--detach", *extra, cmd=HELD, iterations=2), cwd=repo.path)
    assert r.code == 0, r.stderr
    wait_for(lambda: agent_running(session), 120, f"the agent of {session}")
    return int(r.json()["pid"])


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    os.kill(pid, sig)
    wait_for(lambda: exited(pid), 60, f"supervisor {pid} to end")


def run_once(repo: GitRepo, *extra: str) -> list[dict[str, object]]:
    r = harness("service", "run-once", "--json", *extra, cwd=repo.path)
    assert r.code == 0, r.stderr
    return list(r.json()["sessions"])


def test_the_sessions_the_machine_going_down_interrupted_are_resumed_and_complete(repo: GitRepo) -> None:
    done = harness(*run_args("ended", cmd=DONE, iterations=1), cwd=repo.path)
    assert done.code == 0, done.stderr
    start_held(repo, "stopped")
    assert harness("stop", "--session", "stopped", "--now", cwd=repo.path).code == 0
    wait_for(lambda: summary_of(repo, "stopped").status.value == "stopped", 120, "the stop")
    killed, terminated = start_held(repo, "killed"), start_held(repo, "terminated")
    try:
        kill(killed)  # power lost: the journal still says running
        kill(terminated, signal.SIGTERM)  # an orderly shutdown: the supervisor records it and ends
        assert (summary_of(repo, "terminated").status.value, summary_of(repo, "terminated").stop_reason) == (
            "interrupted", "terminated")  # fmt: skip

        # Both died after this machine booted (long ago): not the machine going down, nothing to resume.
        assert run_once(repo) == []
        resumed = run_once(repo, "--booted-at", "now")
        assert sorted((s["sessionId"], s["action"], s["reason"]) for s in resumed) == [
            ("killed", "resumed", "its supervisor died while it ran"),
            ("terminated", "resumed", "its supervisor was terminated (SIGTERM) while it ran"),
        ]
        for session in ("killed", "terminated"):
            release(repo, session)
        for session in ("killed", "terminated"):
            wait_for(lambda s=session: summary_of(repo, s).status.value == "completed", 180, f"{session} to complete")
            assert len(summary_of(repo, session).auto_resume.resumed_at) == 1
        assert summary_of(repo, "stopped").status.value == "stopped"  # never resumed: the user stopped it
        assert summary_of(repo, "ended").auto_resume.resumed_at == []
        assert run_once(repo, "--booted-at", "now") == []  # completed now: nothing more to do
    finally:
        for session in ("stopped", "killed", "terminated"):
            release(repo, session)
            remove_session_containers(session)


def test_a_session_that_waited_in_the_queue_is_resumed_too(repo: GitRepo) -> None:
    first = start_held(repo, "first", "--slots", "1")
    r = harness(*run_args("second", "--detach", "--slots", "1", cmd=DONE, iterations=1), cwd=repo.path)
    assert r.code == 0, r.stderr
    wait_for(lambda: summary_of(repo, "second").status.value == "queued", 60, "the second session to queue")
    try:
        kill(first)
        kill(int(r.json()["pid"]))
        resumed = run_once(repo, "--booted-at", "now")
        assert [(s["sessionId"], s["action"], s["reason"]) for s in resumed] == [
            ("first", "resumed", "its supervisor died while it ran"),
            ("second", "resumed", "its supervisor died while it waited in the queue"),
        ]
        release(repo, "first")
        for session in ("first", "second"):
            wait_for(lambda s=session: summary_of(repo, s).status.value == "completed", 180, f"{session} to complete")
    finally:
        release(repo, "first")
        remove_session_containers("first")
        remove_session_containers("second")


def race_record(repo: GitRepo, race: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo.journal(race) / "race.json").read_text())
    return data


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["power-lost", "shutdown"])
def test_a_killed_race_is_resumed_with_its_racers_never_a_racer_alone(repo: GitRepo, sig: signal.Signals) -> None:
    r = harness("race", "--session", "rr", "--objective", "x", "--n", "2", "--agent-cmd", HELD, "--check", "true",
                "--max-iterations", "2", "--detach", "--json", cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    try:
        for racer in ("rr-1", "rr-2"):
            wait_for(lambda s=racer: agent_running(s), 120, f"{racer}'s agent")
        race = race_record(repo, "rr")["supervisor"]["pid"]
        pids = {race, *(summary_of(repo, s).supervisor.pid for s in ("rr-1", "rr-2"))}  # type: ignore[union-attr]
        for pid in pids:  # a shutdown sends SIGTERM to every process: the race's supervisor stops no racer then
            with contextlib.suppress(ProcessLookupError):  # a racer its race stopped may be gone already
                kill(pid, sig)
        for racer in ("rr-1", "rr-2"):
            remove_session_containers(racer)  # what the machine going down took with it
            assert not json.loads((repo.journal(racer) / "control.json").read_text()).get("stopRequested"), racer
        assert race_record(repo, "rr")["state"] == "running"  # unfinished, whichever way it ended
        if sig is signal.SIGTERM:
            assert race_record(repo, "rr")["supervisor"] is None  # it recorded its end (kill -9 gives it no time)

        entries = run_once(repo, "--booted-at", "now")
        assert sorted((s["sessionId"], s["action"]) for s in entries) == [("rr-1", "resumed"), ("rr-2", "resumed")], (
            entries
        )
        for entry in entries:
            assert str(entry["reason"]).endswith("with its race 'rr'"), entry
        # One supervisor for the race (not one per racer), and each racer's resume counted against its budget.
        assert len({entry["pid"] for entry in entries}) == 1
        assert race_record(repo, "rr")["supervisor"]["pid"] == entries[0]["pid"]
        for racer in ("rr-1", "rr-2"):
            assert len(summary_of(repo, racer).auto_resume.resumed_at) == 1
            wait_for(lambda s=racer: agent_running(s), 120, f"{racer}'s agent, again")
            release(repo, racer)
        wait_for(lambda: race_record(repo, "rr")["state"] == "finished", 180, "the race to finish")
        assert race_record(repo, "rr")["winners"], race_record(repo, "rr")
        assert run_once(repo, "--booted-at", "now") == []  # ended now: nothing more to do
    finally:
        for racer in ("rr-1", "rr-2"):
            release(repo, racer)
            remove_session_containers(racer)


def test_a_session_that_keeps_dying_is_left_interrupted_with_the_reason(repo: GitRepo) -> None:
    pid = start_held(repo, "dies")
    try:
        for attempt in (1, 2):
            kill(pid)
            (entry,) = run_once(repo, "--booted-at", "now", "--budget", "2")
            assert (entry["sessionId"], entry["action"]) == ("dies", "resumed"), entry
            pid = int(str(entry["pid"]))
            wait_for(lambda: agent_running("dies") and summary_of(repo, "dies").supervisor is not None, 120,
                     f"resume {attempt} to run the agent")  # fmt: skip
        kill(pid)
        (entry,) = run_once(repo, "--booted-at", "now", "--budget", "2")
        assert entry["action"] == "gave-up"
        assert str(entry["reason"]).startswith("the service resumed it 2 times within 24h and it died again")
        st = harness("status", "--session", "dies", "--json", cwd=repo.path)
        assert st.code == 21 and st.json()["status"] == "interrupted" and st.json()["stopReason"] == "supervisor-gone"
        assert st.json()["autoResumeGaveUp"] == entry["reason"]
        shown = harness("status", "--session", "dies", cwd=repo.path).stdout
        assert "the service gave up: the service resumed it 2 times" in " ".join(shown.split())
        assert run_once(repo, "--booted-at", "now", "--budget", "2") == []  # left for the user
        release(repo, "dies")
        by_hand = harness("resume", "--session", "dies", "--json", cwd=repo.path)
        assert by_hand.code == 0 and by_hand.json()["status"] == "completed", by_hand.stderr
        assert by_hand.json()["autoResumeGaveUp"] is None  # a resume by hand starts the budget afresh
        assert summary_of(repo, "dies").auto_resume.resumed_at == []
    finally:
        release(repo, "dies")
        remove_session_containers("dies")
