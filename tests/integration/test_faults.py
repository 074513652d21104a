"""Fault injection on the real engine: a full journal disk, racing control commands, concurrent
resumes and sessions, and a Docker daemon restart in the middle of a run. Each is bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from runner.record.journal import load_model
from runner.record.models import ControlFile, IterationRecord, RunSummary
from tests.helpers import HARNESS, HOLD, GitRepo, harness, release, run_args
from tests.integration.test_night import COMMIT_EACH, report, session_containers, wait_for

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem or restarting dockerd needs root")


def popen_harness(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*HARNESS, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})  # fmt: skip


def every_journal_file_is_valid(journal: Path) -> None:
    for path in journal.glob("*.json"):
        json.loads(path.read_text())  # never half-written
    assert not list(journal.glob(".*.tmp")), "a temp file was left behind"


@needs_root
def test_a_full_journal_disk_ends_the_run_clearly_and_resume_works_after(repo: GitRepo, tmp_path: Path) -> None:
    journal_root = tmp_path / "journal-fs"
    journal_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(journal_root)], check=True)
    try:
        env = {"HARNESS_JOURNAL_ROOT": str(journal_root)}
        # Iteration 1 is small; iteration 2 prints 2 MB into a journal filesystem of 256 KB.
        agent = (f'{COMMIT_EACH}; if [ "$HARNESS_ITERATION" = 2 ]; then head -c 2000000 /dev/zero | tr "\\0" x; fi; '
                 f"{report()}")  # fmt: skip
        r = harness(*run_args("full", cmd=agent, iterations=3), cwd=repo.path, env=env)
        assert r.code == 8, r.stderr  # JOURNAL_ERROR
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("harness: error:")]
        assert len(lines) == 1 and "No space left on device" in lines[0] and "iteration-0002.log" in lines[0]
        journal = journal_root / "full/artifacts/solo-harness"
        every_journal_file_is_valid(journal)
        before = load_model(journal / "run-summary.json", RunSummary)  # still valid, from before the fault
        assert before.iteration_count == 1
        status = harness("status", "--session", "full", "--json", cwd=repo.path, env=env)
        assert status.json()["status"] == "interrupted"

        subprocess.run(["mount", "-o", "remount,size=64m", str(journal_root)], check=True)  # space freed
        resumed = harness("resume", "--session", "full", "--json", cwd=repo.path, env=env)
        assert resumed.code == 21, resumed.stderr
        assert resumed.json()["iterationCount"] == 3
        subjects = repo.git("log", "--format=%s", "main..harness/full").splitlines()
        assert {"step 1", "step 2", "step 3"} <= set(subjects)  # the step made while the disk was full survived
    finally:
        subprocess.run(["umount", "-l", str(journal_root)], check=False)


def test_twenty_racing_stops_and_notes_lose_nothing(repo: GitRepo) -> None:
    run = popen_harness(*run_args("race", cmd=f"{COMMIT_EACH}; sleep 0.5; {report()}", iterations=30), cwd=repo.path)
    try:
        wait_for((repo.journal("race") / "iteration-0001.log").exists, 60, "iteration 1")
        calls = [popen_harness("note", "--session", "race", f"note number {i}", "--json", cwd=repo.path)
                 for i in range(18)]  # fmt: skip
        calls += [popen_harness("stop", "--session", "race", "--json", cwd=repo.path) for _ in range(2)]
        outputs = [c.communicate(timeout=60) for c in calls]
        assert [c.returncode for c in calls] == [0] * 20, [err for _, err in outputs]
        note_ids = {json.loads(out)["id"] for out, _ in outputs[:18]}
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 21, err
    assert json.loads(out)["stopReason"] == "stop-requested"
    journal = repo.journal("race")
    every_journal_file_is_valid(journal)
    control = load_model(journal / "control.json", ControlFile)
    assert {n.id for n in control.notes} == note_ids  # none lost
    delivered = {i for p in journal.glob("iteration-*.json") for i in load_model(p, IterationRecord).notes_delivered}
    for note in control.notes:  # each either consumed (and delivered in that iteration's prompt) or pending
        if note.consumed_at is not None:
            assert note.id in delivered and note.consumed_iteration is not None
        else:
            assert note.id not in delivered


def test_two_resumes_at_once_run_exactly_one(repo: GitRepo) -> None:
    # Resumed iterations hold until the test releases them, so the two resumes surely overlap.
    agent = f'{COMMIT_EACH}; [ "$HARNESS_ITERATION" = 1 ] || {{ {HOLD}; }}; {report()}'
    first = harness(*run_args("twice", cmd=agent, iterations=1), cwd=repo.path)
    assert first.code == 21, first.stderr
    resumes = [popen_harness("resume", "--session", "twice", "--max-iterations", "2", "--json", cwd=repo.path)
               for _ in range(2)]  # fmt: skip
    # One drives the session (its iteration holds), the other gives way at once: wait for that, then release.
    wait_for(lambda: any(p.poll() is not None for p in resumes), 180, "one resume to give way")
    release(repo, "twice")
    results = [(p.communicate(timeout=180), p.returncode) for p in resumes]
    codes = sorted(code for _, code in results)
    assert codes == [10, 21], results  # SESSION_BUSY for one, the run's own result for the other
    busy = next(err for (_, err), code in results if code == 10)
    assert "already driven by another harness process" in busy
    summary = load_model(repo.journal("twice") / "run-summary.json", RunSummary)
    assert summary.iteration_count == 3  # 1 + 2: not 1 + 2 + 2


def test_four_sessions_at_once_on_one_repository(repo: GitRepo) -> None:
    sessions = ("four-a", "four-b", "four-c", "four-d")
    runs = {s: popen_harness(*run_args(s, agent="demo"), cwd=repo.path) for s in sessions}
    for session, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (session, err)
        assert json.loads(out)["status"] == "completed"
    for session in runs:
        assert repo.git("log", "--format=%s", f"main..harness/{session}").splitlines() == [
            "demo: step 2",
            "demo: step 1",
        ]
        every_journal_file_is_valid(repo.journal(session))
        assert session_containers(session) == []
    exclude = (repo.path / ".git/info/exclude").read_text()
    assert exclude.count("/memory/context-db/sessions/*/artifacts/solo-harness/") == 1


def _dockerd_pid() -> int | None:
    path = Path("/var/run/docker.pid")
    return int(path.read_text().strip()) if path.exists() else None


@needs_root
@pytest.mark.alone  # every container of the engine, other tests' too, goes down with it
@pytest.mark.skipif(
    os.environ.get("CI", "").lower() not in {"1", "true", "yes"} and not os.environ.get("HARNESS_TEST_RESTART_DOCKER"),
    reason="restarts the machine's Docker daemon: runs under CI=true or HARNESS_TEST_RESTART_DOCKER=1",
)
def test_a_docker_daemon_restart_mid_run_is_survived_or_resumable(repo: GitRepo) -> None:
    pid = _dockerd_pid()
    assert pid is not None, "no dockerd pid file: the engine was not started by scripts/ensure-docker.sh"
    run = popen_harness(*run_args("restart", cmd=f"{COMMIT_EACH}; sleep 4; {report()}", iterations=3), cwd=repo.path)
    try:
        wait_for((repo.journal("restart") / "iteration-0002.log").exists, 120, "iteration 2")
        time.sleep(1)
        os.kill(pid, 15)  # the daemon goes away mid-iteration...
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "dockerd to stop")
        time.sleep(3)
        subprocess.run(["bash", str(ROOT / "scripts/ensure-docker.sh")], check=True, capture_output=True)  # ...and back
        _, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    summary = load_model(repo.journal("restart") / "run-summary.json", RunSummary)
    if summary.status.value == "interrupted":  # it may end interrupted: then it resumes
        resumed = harness("resume", "--session", "restart", "--json", cwd=repo.path)
        assert resumed.code == 21, resumed.stderr
        summary = load_model(repo.journal("restart") / "run-summary.json", RunSummary)
    else:
        assert run.returncode == 21, err
    assert summary.stop_reason is not None and summary.stop_reason.value == "max-iterations"
    assert "step 1" in repo.git("log", "--format=%s", "main..harness/restart").splitlines()
    gc = harness("gc", "--json", cwd=repo.path)
    assert gc.code == 0, gc.stderr
    assert session_containers("restart") == []
