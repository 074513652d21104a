"""End to end on the real Docker engine and real git: `harness run` as a user would type it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from runner.base.paths import EXCLUDE_LINE
from runner.record.journal import load_model
from runner.record.models import ControlFile, IterationRecord, RunSummary
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import HARNESS, HOLD, GitRepo, containers, harness, release, run_args

pytestmark = pytest.mark.docker

REPORT_DONE = """printf '{"state": "done", "summary": "%s"}' "$1" > "$HARNESS_STATUS_FILE" """


def agent_cmd(body: str, state: str = "done", summary: str = "ok") -> str:
    report = f'printf \'{{"state": "{state}", "summary": "{summary}"}}\' > "$HARNESS_STATUS_FILE"'
    return f"{body}\n{report}"


def test_demo_run_end_to_end(repo: GitRepo) -> None:
    r = harness(*run_args("demo", "--worktree", agent="demo", objective="Record two steps", iterations=3),
                cwd=repo.path)  # fmt: skip
    assert r.code == 0, r.stderr
    st = r.json()
    assert st["status"] == "completed" and st["stopReason"] == "agent-done"
    assert st["iterationCount"] == 2 and st["lastOutcome"] == "done"
    assert st["lastSummary"] == "wrote step 2 to DEMO_PROGRESS.md"
    assert st["branch"] == "harness/demo" and st["commitsAhead"] == 2

    # The agent's real commits are on the branch, on top of the user's base.
    assert repo.git("log", "--format=%s", "main..harness/demo").splitlines() == ["demo: step 2", "demo: step 1"]
    progress = repo.git("show", "harness/demo:DEMO_PROGRESS.md")
    assert "- step 1 (iteration 1" in progress and "- step 2 (iteration 2" in progress
    assert repo.git("rev-parse", "harness/demo") == st["headCommit"]

    journal = repo.journal("demo")
    assert sorted(p.name for p in journal.iterdir() if not p.name.startswith(".")) == [
        "control.json", "iteration-0001.json", "iteration-0001.log", "iteration-0002.json", "iteration-0002.log",
        "objective.md", "run-summary.json",
    ]  # fmt: skip
    assert (journal / "objective.md").read_text() == "Record two steps\n"
    summary = load_model(journal / "run-summary.json", RunSummary)
    assert summary.iteration_count == 2 and summary.supervisor is None
    first = load_model(journal / "iteration-0001.json", IterationRecord)
    second = load_model(journal / "iteration-0002.json", IterationRecord)
    assert (first.outcome.value, second.outcome.value) == ("working", "done")
    assert first.exit_code == 0 and len(first.commits) == 1 and second.commits == [st["headCommit"]]
    assert first.diff_stat.insertions >= 1
    # The prompt was handed over: the agent saw it and iteration 2's prompt carried iteration 1's summary.
    assert "prompt starts with '# Objective'" in (journal / "iteration-0001.log").read_text()
    assert "demo agent: committed step 2" in (journal / "iteration-0002.log").read_text()
    assert containers(f"io.solo-harness.test={TEST_RUN_LABEL}") == []  # every container removed

    again = harness("status", "--session", "demo", "--json", cwd=repo.path)
    assert again.code == 0 and again.json()["status"] == "completed"
    text = harness("status", "--session", "demo", cwd=repo.path)
    assert "completed" in text.stdout and "harness/demo" in text.stdout


def test_agent_cmd_runs_a_shell_command_in_the_container(repo: GitRepo) -> None:
    cmd = agent_cmd(
        'echo "from the agent as $(id -u)"; echo "$HARNESS_SESSION $HARNESS_ITERATION" > where.txt',
        summary="wrote where.txt",
    )
    r = harness(*run_args("cmd", cmd=cmd), cwd=repo.path)
    assert r.code == 0, r.stderr
    assert r.json()["status"] == "completed"
    log = (repo.journal("cmd") / "iteration-0001.log").read_text()
    assert "from the agent as 10001" in log
    # Left uncommitted by the agent, checkpointed by the harness, harvested onto the branch.
    assert repo.git("show", "harness/cmd:where.txt") == "cmd 1"
    assert repo.git("log", "-1", "--format=%s", "harness/cmd") == "harness: checkpoint after iteration 1"
    assert not (repo.path / "where.txt").exists()


def test_an_agent_past_its_iteration_timeout_is_stopped(repo: GitRepo) -> None:
    started = time.monotonic()
    r = harness(*run_args("slow", "--iteration-timeout", "3s", cmd="echo started; sleep 600", iterations=1),
                cwd=repo.path)  # fmt: skip
    assert time.monotonic() - started < 120
    assert r.code == 21, r.stderr  # needs attention: stopped at the iteration limit
    assert r.json()["stopReason"] == "max-iterations"
    record = json.loads((repo.journal("slow") / "iteration-0001.json").read_text())
    assert record["outcome"] == "timed-out" and record["timedOut"] is True and record["failureClass"] == "timeout"
    assert "started" in (repo.journal("slow") / "iteration-0001.log").read_text()


def test_an_agent_over_its_memory_limit_is_recorded_as_oom_killed(repo: GitRepo) -> None:
    hog = "python3 -c 'b = bytearray(1); b = b\"x\" * (512 * 1024 * 1024); print(len(b))'"
    r = harness(*run_args("hog", "--memory", "64m", cmd=hog, iterations=1), cwd=repo.path)
    assert r.code == 21, r.stderr
    record = json.loads((repo.journal("hog") / "iteration-0001.json").read_text())
    assert record["oomKilled"] is True and record["outcome"] == "oom-killed" and record["failureClass"] == "oom"


def test_stop_then_resume_continues_the_numbering(repo: GitRepo) -> None:
    body = f'echo "$HARNESS_ITERATION" >> progress.txt; {HOLD}'  # iteration 1 still runs when stopped
    run = subprocess.Popen([*HARNESS, *run_args("sr", cmd=agent_cmd(body, state="working"), iterations=5)],
                           cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (repo.journal("sr") / "iteration-0001.log").exists():
            assert time.monotonic() < deadline and run.poll() is None, "iteration 1 never started"
            time.sleep(0.1)
        stop = harness("stop", "--session", "sr", "--note", "bedtime", cwd=repo.path)
        assert stop.code == 0, stop.stderr
        release(repo, "sr")  # this iteration and the resumed ones go on
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 21, err
    st = json.loads(out)
    assert st["status"] == "stopped" and st["stopReason"] == "stop-requested" and st["iterationCount"] == 1
    control = load_model(repo.journal("sr") / "control.json", ControlFile)
    assert control.stop_requested and control.stop_note == "bedtime"

    r = harness("resume", "--session", "sr", "--max-iterations", "2", "--json", cwd=repo.path)
    assert r.code == 21, r.stderr
    st = r.json()
    assert st["iterationCount"] == 3 and st["stopReason"] == "max-iterations"
    numbers = [json.loads(p.read_text())["iteration"] for p in sorted(repo.journal("sr").glob("iteration-*.json"))]
    assert numbers == [1, 2, 3]
    # The same copy went on: the file holds every iteration's line, and the branch has them all.
    assert repo.git("show", "harness/sr:progress.txt").splitlines() == ["1", "2", "3"]
    assert not load_model(repo.journal("sr") / "control.json", ControlFile).stop_requested


def _snapshot(repo: GitRepo) -> dict[str, object]:
    git_dir = repo.path / ".git"
    files = {
        str(p.relative_to(repo.path)): p.read_bytes()
        for p in sorted(repo.path.rglob("*"))
        if p.is_file() and ".git" not in p.parts and "memory" not in p.parts
    }
    hooks = {p.name: p.read_bytes() for p in sorted((git_dir / "hooks").iterdir())}
    refs = [
        line
        for line in repo.git("for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if not line.startswith("refs/heads/harness/")
    ]
    return {
        "files": files, "hooks": hooks, "refs": refs, "head": (git_dir / "HEAD").read_bytes(),
        "config": (git_dir / "config").read_bytes(), "index": (git_dir / "index").read_bytes(),
        "exclude": (git_dir / "info" / "exclude").read_text(),
        "status": repo.git("-c", "core.fsmonitor=false", "status", "--porcelain", "--untracked-files=all"),
    }  # fmt: skip


def test_the_users_repository_is_unchanged_but_for_the_branch_and_exclude_entry(repo: GitRepo) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    (repo.path / "app.py").write_text("print('uncommitted work')\n")  # a dirty working tree
    (repo.path / "notes.txt").write_text("untracked\n")
    repo.git("config", "user.signingkey", "ABC")
    (repo.path / ".git/hooks/pre-commit").write_text("#!/bin/sh\nexit 0\n")
    before = _snapshot(repo)

    cmd = agent_cmd("echo changed > app.py; git add -A; git commit -qm 'agent commit'; git branch side")
    r = harness(*run_args("clean", cmd=cmd), cwd=repo.path)
    assert r.code == 0, r.stderr

    after = _snapshot(repo)
    exclude_before, exclude_after = before.pop("exclude"), after.pop("exclude")
    assert after == before
    assert exclude_after == f"{exclude_before}{EXCLUDE_LINE}\n"
    assert repo.git("for-each-ref", "--format=%(refname)", "refs/heads/harness/") == "refs/heads/harness/clean"
    assert repo.git("log", "-1", "--format=%s", "harness/clean") == "agent commit"
    assert "side" not in repo.git("branch", "--list")  # the agent's own branches stay in its copy


def test_the_copy_is_a_no_local_clone_owned_by_the_agent_uid(repo: GitRepo, harness_home: Path) -> None:
    r = harness(*run_args("own", cmd=agent_cmd("true")), cwd=repo.path)
    assert r.code == 0, r.stderr
    summary = load_model(repo.journal("own") / "run-summary.json", RunSummary)
    workspace = Path(summary.worktree.path)
    assert workspace.is_relative_to(harness_home) and not workspace.is_relative_to(repo.path)
    assert workspace.stat().st_uid == 10001 and (workspace / ".git").stat().st_uid == 10001
    # No object shares an inode with the user's repository (a plain local clone would hard-link them).
    user_inodes = {p.stat().st_ino for p in (repo.path / ".git/objects").rglob("*") if p.is_file()}
    copy_objects = [p for p in (workspace / ".git/objects").rglob("*") if p.is_file()]
    assert copy_objects and not ({p.stat().st_ino for p in copy_objects} & user_inodes)
    assert "[remote" not in (workspace / ".git/config").read_text()  # no way back to the user's repository


def test_check_must_pass_in_the_container_before_done_completes(repo: GitRepo) -> None:
    cmd = agent_cmd("echo ready > ok.txt", summary="wrote ok.txt")
    check = "test -f ok.txt && echo CHECKED as $(id -u) && ! touch /workspace/probe 2>/dev/null"
    r = harness(*run_args("chk", "--check", check, cmd=cmd), cwd=repo.path)
    assert r.code == 0, r.stderr
    assert r.json()["status"] == "completed"
    record = json.loads((repo.journal("chk") / "iteration-0001.json").read_text())
    assert record["outcome"] == "done" and record["check"]["passed"] is True
    # It ran as the agent, on the agent's copy, which it could not modify.
    assert "CHECKED as 10001" in (repo.journal("chk") / record["check"]["logFile"]).read_text()

    cmd = agent_cmd('grep -c "The check failed" /harness/prompt.md || true', summary="claims done")
    r = harness(*run_args("chk-fail", "--check", "echo 3 tests failed; exit 1", cmd=cmd, iterations=2), cwd=repo.path)
    assert r.code == 21, r.stderr
    assert r.json()["stopReason"] == "max-iterations" and r.json()["lastOutcome"] == "check-failed"
    second = json.loads((repo.journal("chk-fail") / "iteration-0002.json").read_text())
    assert second["check"]["exitCode"] == 1 and "3 tests failed" in second["check"]["outputTail"]
    # Iteration 2's prompt told the agent why its "done" did not count.
    assert (repo.journal("chk-fail") / "iteration-0002.log").read_text().strip() == "1"
