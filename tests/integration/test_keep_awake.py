"""Keeping the machine awake while a session lives, on the real engine: the supervisor starts the platform's
inhibitor (here a stand-in `systemd-inhibit` first on PATH: a real process that records its argv and runs the
command it is given, as the real one does), holds it while the session runs, and it is gone at the end and after
a kill -9 of the supervisor. This machine's own systemd-inhibit cannot reach a bus (PID 1 is not systemd): a
failing inhibitor is recorded as not held, and the run goes on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from runner.record.journal import load_model
from runner.record.models import RunSummary
from tests.helpers import HOLD, GitRepo, exited, harness, release, remove_session_containers, run_args, wait_for

pytestmark = pytest.mark.docker

DONE = 'printf \'{"state": "done", "summary": "ok"}\' > "$HARNESS_STATUS_FILE"'

# Records its argv and then its pid next to itself (the pid last: a test that sees it finds the argv whole), then
# runs the command after its options, as systemd-inhibit does.
STAND_IN = """#!/bin/sh
here=$(dirname "$0")
printf '%s\\n' "$@" > "$here/argv.tmp" && mv "$here/argv.tmp" "$here/argv"
printf '%s\\n' "$$" > "$here/pid.tmp" && mv "$here/pid.tmp" "$here/pid"
while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done
"$@"
"""
FAILING = """#!/bin/sh
echo "Failed to connect to bus: No such file or directory" >&2
exit 1
"""


def stand_in(tmp_path: Path, script: str = STAND_IN) -> tuple[Path, dict[str, str]]:
    """A directory holding a `systemd-inhibit` stand-in, and the environment that puts it first on PATH."""
    where = tmp_path / "stand-in"
    where.mkdir()
    program = where / "systemd-inhibit"
    program.write_text(script)
    program.chmod(0o755)
    return where, {"PATH": f"{where}:{os.environ['PATH']}"}


def summary_of(repo: GitRepo, session: str) -> RunSummary:
    return load_model(repo.journal(session) / "run-summary.json", RunSummary)


def test_the_inhibitor_is_held_while_the_session_runs_and_released_at_the_end(repo: GitRepo, tmp_path: Path) -> None:
    where, env = stand_in(tmp_path)
    r = harness(*run_args("awake", "--detach", cmd=f"{HOLD}; {DONE}", iterations=1), cwd=repo.path, env=env)
    assert r.code == 0, r.stderr
    wait_for((where / "pid").is_file, 60, "the inhibitor to start")
    argv = (where / "argv").read_text().splitlines()
    assert argv[:2] == ["--what=sleep:idle", "--who=harness"]
    assert argv[2].startswith("--why=harness session awake runs unattended") and argv[3] == "--mode=block"
    assert argv[4:6] == ["sh", "-c"]  # the waiter: it reads the supervisor's pipe until it closes
    inhibitor = int((where / "pid").read_text())
    # The supervisor records the inhibitor once it has taken its lock: a moment after it started, under load.
    wait_for(lambda: summary_of(repo, "awake").keep_awake.held, 30, "the summary to say it is held")
    st = harness("status", "--session", "awake", "--json", cwd=repo.path)
    assert st.code == 20, st.stderr
    awake = st.json()["keepAwake"]
    assert awake["held"] is True and awake["via"] == "systemd-inhibit" and awake["reason"] is None
    assert st.json()["keepAwakeText"].startswith("held (systemd-inhibit")
    assert not exited(inhibitor)  # held while the agent runs

    release(repo, "awake")
    wait_for(lambda: summary_of(repo, "awake").status.value == "completed", 120, "the run to complete")
    wait_for(lambda: exited(inhibitor), 30, "the inhibitor to be released")
    # The supervisor records the release once the inhibitor has exited: a moment after, under load.
    wait_for(lambda: not summary_of(repo, "awake").keep_awake.held, 30, "the release to be recorded")
    final = summary_of(repo, "awake").keep_awake
    assert final.enabled and not final.held and final.via == "systemd-inhibit"
    text = harness("status", "--session", "awake", cwd=repo.path)
    assert "keep awake" in text.stdout and "released" in text.stdout


def test_a_kill_9_of_the_supervisor_leaks_no_inhibitor(repo: GitRepo, tmp_path: Path) -> None:
    where, env = stand_in(tmp_path)
    r = harness(*run_args("awake9", "--detach", cmd=f"{HOLD}; {DONE}", iterations=1), cwd=repo.path, env=env)
    assert r.code == 0, r.stderr
    wait_for((where / "pid").is_file, 60, "the inhibitor to start")
    inhibitor = int((where / "pid").read_text())
    wait_for(lambda: summary_of(repo, "awake9").keep_awake.held, 30, "the summary to say it is held")
    assert not exited(inhibitor)
    try:
        os.kill(r.json()["pid"], signal.SIGKILL)
        wait_for(lambda: exited(inhibitor), 15, "the inhibitor to end with its supervisor")
        st = harness("status", "--session", "awake9", "--json", cwd=repo.path)
        assert st.json()["status"] == "interrupted" and st.json()["keepAwake"]["held"] is False
    finally:
        release(repo, "awake9")
        remove_session_containers("awake9")


def test_a_failing_inhibitor_is_recorded_as_not_held_and_the_run_goes_on(repo: GitRepo, tmp_path: Path) -> None:
    _, env = stand_in(tmp_path, FAILING)
    r = harness(*run_args("sleepy", cmd=DONE, iterations=1), cwd=repo.path, env=env)
    assert r.code == 0, r.stderr  # completed: the inhibitor is not the run's business
    awake = r.json()["keepAwake"]
    assert awake["enabled"] is True and awake["held"] is False and awake["via"] == "systemd-inhibit"
    assert awake["reason"] == "systemd-inhibit failed (exit 1): Failed to connect to bus: No such file or directory"
    assert r.json()["keepAwakeText"] == f"not held: {awake['reason']}"


def test_no_keep_awake_starts_no_inhibitor_and_resume_can_turn_it_on(repo: GitRepo, tmp_path: Path) -> None:
    where, env = stand_in(tmp_path)
    r = harness(*run_args("off", "--no-keep-awake", cmd=DONE, iterations=1), cwd=repo.path, env=env)
    assert r.code == 0, r.stderr
    assert r.json()["keepAwake"]["enabled"] is False and r.json()["keepAwakeText"] == "off (--no-keep-awake)"
    assert not (where / "argv").exists()

    again = harness("resume", "--session", "off", "--keep-awake", "--max-iterations", "1", "--json",
                    cwd=repo.path, env=env)  # fmt: skip
    assert again.code == 0, again.stderr
    assert (where / "argv").read_text().splitlines()[0] == "--what=sleep:idle"
    assert summary_of(repo, "off").keep_awake.enabled is True
    wait_for(lambda: exited(int((where / "pid").read_text())), 15, "the inhibitor to be released")


def test_the_keep_awake_setting_turns_it_off(repo: GitRepo, tmp_path: Path) -> None:
    where, env = stand_in(tmp_path)
    (repo.path / "harness.toml").write_text("keep_awake = false\n")
    r = harness(*run_args("cfg", cmd=DONE, iterations=1), cwd=repo.path, env=env)
    assert r.code == 0, r.stderr
    assert r.json()["keepAwake"]["enabled"] is False and not (where / "argv").exists()
