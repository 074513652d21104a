"""Surviving the night on the real engine: detached runs, interrupts, stop --now, stuck agents, list, gc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runner.base.paths import repo_key
from runner.record.journal import load_model
from runner.record.models import IterationRecord, RunSummary
from runner.sandbox.container import labels
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import HARNESS, HOLD, GitRepo, containers, exited, harness, make_repo, release, run_args, wait_for

pytestmark = pytest.mark.docker


def report(state: str = "working") -> str:
    return f'printf \'{{"state": "{state}", "summary": "iteration %s"}}\' "$HARNESS_ITERATION" > "$HARNESS_STATUS_FILE"'


COMMIT_EACH = 'echo "$HARNESS_ITERATION" >> progress.txt; git add -A; git commit -qm "step $HARNESS_ITERATION"'


def committed_in_copy(repo: GitRepo, session: str, subject: str) -> bool:
    """Whether the agent has made the commit `subject` in the session's copy (not yet harvested)."""
    journal = repo.journal(session) / "run-summary.json"
    if not journal.is_file():
        return False
    workspace = Path(summary_of(repo, session).run_dir) / "workspace"
    log = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(workspace), "log", "--format=%s"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    return subject in log.stdout.splitlines()


def summary_of(repo: GitRepo, session: str) -> RunSummary:
    return load_model(repo.journal(session) / "run-summary.json", RunSummary)


def session_containers(session: str, role: str | None = None) -> list[str]:
    """The test run's containers of a session (only its agent's, or its helpers', with `role`)."""
    filters = [f"io.solo-harness.test={TEST_RUN_LABEL}", f"io.solo-harness.session={session}"]
    filters += [f"io.solo-harness.role={role}"] if role else []
    args = [a for f in filters for a in ("--filter", f"label={f}")]
    return subprocess.run(["docker", "ps", "-aq", *args], capture_output=True, text=True, check=True).stdout.split()


def test_detach_returns_at_once_and_the_run_goes_on(repo: GitRepo) -> None:
    started = time.monotonic()
    r = harness(*run_args("bg", "--detach", cmd=f"sleep 2; {COMMIT_EACH}; {report()}", iterations=2), cwd=repo.path)
    assert r.code == 0, r.stderr
    assert time.monotonic() - started < 30
    detached = r.json()
    assert detached["sessionId"] == "bg" and detached["pid"] > 0
    running = harness("status", "--session", "bg", "--json", cwd=repo.path)
    assert running.code == 20 and running.json()["status"] == "running" and running.json()["supervisorAlive"]
    info = summary_of(repo, "bg").supervisor
    assert info is not None and info.pid == detached["pid"]
    wait_for(lambda: summary_of(repo, "bg").status.value != "running", 120, "the detached run to end")
    final = harness("status", "--session", "bg", "--json", cwd=repo.path)
    assert final.code == 21 and final.json()["stopReason"] == "max-iterations"
    assert repo.git("show", "harness/bg:progress.txt").splitlines() == ["1", "2"]
    assert (repo.journal("bg") / "supervisor.log").exists()
    assert summary_of(repo, "bg").supervisor is None


def test_kill_9_of_the_supervisor_then_resume_keeps_every_commit(repo: GitRepo) -> None:
    agent = f'{COMMIT_EACH}; [ "$HARNESS_ITERATION" != 2 ] || {{ {HOLD}; }}; {report()}'
    r = harness(*run_args("k9", "--detach", cmd=agent, iterations=3), cwd=repo.path)
    assert r.code == 0, r.stderr
    pid = r.json()["pid"]
    # Inside iteration 2: its agent has committed "step 2" in the copy and holds.
    wait_for(lambda: committed_in_copy(repo, "k9", "step 2"), 120, "step 2 in the copy")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: exited(pid), 10, "the killed supervisor to exit")
    st = harness("status", "--session", "k9", "--json", cwd=repo.path)
    assert st.code == 21 and st.json()["status"] == "interrupted" and st.json()["stopReason"] == "supervisor-gone"
    assert repo.git("log", "--format=%s", "harness/k9").splitlines()[0] == "step 1"  # harvested before the kill

    release(repo, "k9")  # the orphan, if it still runs, and any later iteration 2 go on
    resumed = harness("resume", "--session", "k9", "--json", cwd=repo.path)
    assert resumed.code == 21, resumed.stderr
    assert resumed.json()["iterationCount"] == 3 and resumed.json()["stopReason"] == "max-iterations"
    subjects = repo.git("log", "--format=%s", "main..harness/k9").splitlines()
    assert subjects.count("step 1") == 1 and "step 2" in subjects and "step 3" in subjects
    assert session_containers("k9") == []  # the orphan of the killed supervisor was reaped


def test_ctrl_c_once_stops_gracefully_and_twice_at_once(repo: GitRepo) -> None:
    def args(session: str) -> list[str]:
        return [*HARNESS, *run_args(session, cmd=f"{COMMIT_EACH}; sleep 60", iterations=3)]

    once = subprocess.Popen(args("c1"), cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: committed_in_copy(repo, "c1", "step 1"), 60, "the agent's commit")  # then it sleeps
    once.send_signal(signal.SIGINT)
    out, err = once.communicate(timeout=60)
    assert once.returncode == 21, err
    st = json.loads(out)
    assert st["status"] == "stopped" and st["stopReason"] == "interrupted"
    record = load_model(repo.journal("c1") / "iteration-0001.json", IterationRecord)
    assert record.outcome.value == "interrupted" and record.commits  # the work was still harvested
    assert session_containers("c1") == []

    twice = subprocess.Popen(args("c2"), cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: committed_in_copy(repo, "c2", "step 1"), 60, "the agent's commit")
    twice.send_signal(signal.SIGINT)
    time.sleep(0.3)
    twice.send_signal(signal.SIGINT)
    _, err = twice.communicate(timeout=60)
    assert twice.returncode == 130, err
    assert summary_of(repo, "c2").status.value == "interrupted"
    wait_for(lambda: session_containers("c2") == [], 30, "the container to be removed")
    # Both are resumable: the hard stop left no record, so iteration 1 runs again.
    again = harness("resume", "--session", "c2", "--max-iterations", "1", "--iteration-timeout", "2s", "--json",
                    cwd=repo.path)  # fmt: skip
    assert again.code == 21, again.stderr
    assert again.json()["iterationCount"] == 1 and again.json()["lastOutcome"] == "timed-out"


def test_stop_now_stops_the_running_container(repo: GitRepo) -> None:
    run = subprocess.Popen([*HARNESS, *run_args("now", cmd="sleep 300", iterations=5)], cwd=repo.path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: bool(session_containers("now", "agent")), 60, "the agent container")
        started = time.monotonic()
        stop = harness("stop", "--session", "now", "--now", cwd=repo.path)
        assert stop.code == 0, stop.stderr
        out, _ = run.communicate(timeout=90)
        assert time.monotonic() - started < 45  # not the 300 s of the agent, nor its 30 min timeout
    finally:
        if run.poll() is None:
            run.kill()
    st = json.loads(out)
    assert st["status"] == "stopped" and st["stopReason"] == "stop-requested" and st["iterationCount"] == 1
    assert json.loads((repo.journal("now") / "iteration-0001.json").read_text())["outcome"] == "interrupted"


def test_an_agent_that_changes_nothing_is_stuck(repo: GitRepo) -> None:
    r = harness(*run_args("idle", "--stuck-after", "2", cmd=report(), iterations=10), cwd=repo.path)
    assert r.code == 21, r.stderr
    st = r.json()
    assert st["status"] == "stuck" and st["stopReason"] == "no-progress" and st["iterationCount"] == 2


def test_an_agent_that_cannot_start_fails_after_bounded_tries(repo: GitRepo) -> None:
    r = harness(*run_args("nostart", cmd="no-such-agent-binary", iterations=10), cwd=repo.path)
    assert r.code == 22, r.stderr
    st = r.json()
    assert st["status"] == "failed" and st["stopReason"] == "repeated-failures" and st["iterationCount"] == 3
    record = json.loads((repo.journal("nostart") / "iteration-0003.json").read_text())
    assert record["failureClass"] == "exit-nonzero" and record["exitCode"] == 127


def test_list_shows_sessions_of_every_repository_and_gc_reaps_orphans(tmp_path: Path, repo: GitRepo) -> None:
    other = make_repo(tmp_path / "other")
    for target, session in ((repo, "keep"), (other, "gone")):
        r = harness(*run_args(session, cmd=f"{COMMIT_EACH}; {report('done')}"), cwd=target.path)
        assert r.code == 0, r.stderr
    listed = harness("list", "--json", cwd=tmp_path)
    assert listed.code == 0
    rows = {(row["repo"], row["sessionId"]): row for row in listed.json()}
    assert rows[(str(repo.path), "keep")]["status"] == "completed"
    assert rows[(str(other.path), "gone")]["iterationCount"] == 1
    assert "keep" in harness("list", cwd=tmp_path).stdout

    # An orphan: a container of a session no supervisor drives, and a copy whose session was deleted by hand.
    orphan = labels("keep", repo_key(repo.path), "agent")
    # Another user's home (named for this test run: no other run's leftovers can answer to it) must survive.
    foreign = {**orphan, "io.solo-harness.home": f"another-user-{TEST_RUN_LABEL}"}
    for lab in (orphan, foreign):
        args = [a for k, v in lab.items() for a in ("--label", f"{k}={v}")]
        subprocess.run(["docker", "create", *args, "harness-base:latest", "true"], check=True, capture_output=True)
    gone_copy = Path(summary_of(other, "gone").run_dir)
    import shutil

    shutil.rmtree(other.path / "memory")
    r = harness("gc", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    result = r.json()
    assert str(gone_copy) in result["copies"] and not gone_copy.exists()
    assert len(result["containers"]) == 1 and len(session_containers("keep")) == 1  # the foreign one stays
    assert Path(summary_of(repo, "keep").run_dir).exists()  # resumable: kept
    assert any(k.endswith(":keep") for k in result["kept"])
    assert containers(f"io.solo-harness.home=another-user-{TEST_RUN_LABEL}") == session_containers("keep")
    subprocess.run(["docker", "rm", "-f", *session_containers("keep")], check=True, capture_output=True)


def test_hud_follows_a_running_session_and_leaves_when_it_ends(repo: GitRepo) -> None:
    r = harness(*run_args("hud", "--detach", cmd=f"{COMMIT_EACH}; sleep 2; {report()}", iterations=2), cwd=repo.path)
    assert r.code == 0, r.stderr
    live = harness("hud", "--session", "hud", "--interval", "0.3", cwd=repo.path, timeout=120)
    assert live.code == 0, live.stderr
    assert "max-iterations" in live.stdout and "iteration 2" in live.stdout  # its last frame: the run's end
    once = harness("hud", "--session", "hud", "--once", cwd=repo.path)
    assert once.code == 0 and "harness hud" in once.stdout and "stopped" in once.stdout
    assert [line.split()[:2] for line in once.stdout.splitlines() if line.strip()[:1] in {"1", "2"}] == [
        ["1", "working"],
        ["2", "working"],
    ]


def test_a_corrupt_journal_file_is_named_and_other_sessions_still_report(repo: GitRepo) -> None:
    for session in ("good", "bad"):
        r = harness(*run_args(session, agent="demo"), cwd=repo.path)
        assert r.code == 0, r.stderr
    summary = repo.journal("bad") / "run-summary.json"
    summary.write_text(summary.read_text()[:100])  # cut short, as a crash of a non-atomic writer would
    one = harness("status", "--session", "bad", "--json", cwd=repo.path)
    assert one.code == 8 and one.stdout == ""  # JOURNAL_ERROR, one clear line naming the file
    assert one.stderr.count("\n") == 1 and str(summary) in one.stderr and "not valid JSON" in one.stderr
    every = harness("status", "--json", cwd=repo.path)
    assert every.code == 0, every.stderr
    rows = {row["sessionId"]: row for row in every.json()}
    assert rows["good"]["status"] == "completed"
    assert str(summary) in rows["bad"]["error"]
    text = harness("status", cwd=repo.path)
    assert "good" in text.stdout and "unreadable" in text.stdout
    (repo.journal("good") / "control.json").write_text("{")
    assert harness("note", "--session", "good", "hi", cwd=repo.path).code == 8


def test_discard_throws_the_whole_run_away_but_not_while_it_runs(repo: GitRepo) -> None:
    r = harness(*run_args("gone", "--detach", cmd=f"{COMMIT_EACH}; {HOLD}; {report()}", iterations=1), cwd=repo.path)
    assert r.code == 0, r.stderr
    busy = harness("discard", "--session", "gone", cwd=repo.path)
    assert busy.code == 11 and "is running" in busy.stderr  # INVALID_STATE: stop it first
    release(repo, "gone")
    wait_for(lambda: summary_of(repo, "gone").status.value != "running", 60, "the run to end")
    copy = Path(summary_of(repo, "gone").run_dir)
    assert copy.exists() and repo.git("rev-parse", "--verify", "-q", "harness/gone", check=False)
    done = harness("discard", "--session", "gone", "--json", cwd=repo.path)
    assert done.code == 0, done.stderr
    assert str(copy) in done.json()["removed"] and "branch harness/gone" in done.json()["removed"]
    assert not copy.exists() and not (repo.path / "memory/context-db/sessions/gone").exists()
    assert repo.git("branch", "--list", "harness/gone") == "" and session_containers("gone") == []
    assert harness("status", "--session", "gone", cwd=repo.path).code == 7  # SESSION_NOT_FOUND


def test_logs_follow_a_detached_run_across_iterations_until_it_ends(repo: GitRepo) -> None:
    agent = f'echo "out of $HARNESS_ITERATION"; sleep 2; echo "end of $HARNESS_ITERATION"; {COMMIT_EACH}; {report()}'
    r = harness(*run_args("tail", "--detach", cmd=agent, iterations=2), cwd=repo.path)
    assert r.code == 0, r.stderr
    followed = harness("logs", "--session", "tail", "--follow", cwd=repo.path, timeout=120)
    assert followed.code == 0, followed.stderr
    assert summary_of(repo, "tail").status.value == "stopped"  # it returned because the run ended
    lines = [ln for ln in followed.stdout.splitlines() if ln.strip()]
    assert lines == ["out of 1", "end of 1", "--- iteration 2 ---", "out of 2", "end of 2"], lines
    missing = harness("logs", "--session", "tail", "--iteration", "9", cwd=repo.path)
    assert missing.code == 2 and "no iteration 9" in missing.stderr
