"""The read-only commands (`status`, `note`, `stop`, `logs`, `list`) on recorded journals, through the
real CLI, with no Docker engine: journals are written with the models, as a supervisor would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from runner.backends.fake import FakeBackend
from runner.base.paths import run_dir
from runner.record.journal import Journal, ensure_excluded, load_model
from runner.record.models import (
    AgentInfo,
    ControlFile,
    IterationRecord,
    Limits,
    Note,
    Outcome,
    Racer,
    RaceRecord,
    RaceState,
    RunOwner,
    RunState,
    RunSummary,
    StopReason,
    SupervisorInfo,
    WorktreeInfo,
    utcnow,
)
from runner.usecases.plan import RunRequest
from runner.usecases.sessions import create_session
from tests.helpers import GitRepo, harness

ROOT = Path(__file__).resolve().parents[2]


def record_session(
    repo: GitRepo,
    session: str,
    *,
    state: RunState = RunState.COMPLETED,
    iterations: int = 2,
    max_iterations: int = 6,
    live: bool = False,
    limits: Limits | None = None,
    notes: list[Note] | None = None,
    logs: dict[int, bytes] | None = None,
) -> Journal:
    """A journal as a supervisor leaves it: summary, iteration records and logs, control.json, one
    commit on harness/<session> and the copy's owner.json. `live`: a supervisor's info in the summary
    (the test holds the lock to make it alive)."""
    ensure_excluded(repo.path / ".git")  # as `run` does: the journals stay out of the commits below
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", f"harness/{session}")
    (repo.path / f"{session}.txt").write_text("work\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", f"{session}: work")
    head = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "main")
    top = repo.path.resolve()
    journal = Journal.for_repo(top, session)
    journal.create(f"objective of {session}")
    limits = limits or Limits(max_iterations=max_iterations)
    now = utcnow()
    summary = RunSummary(
        session_id=session, objective=f"objective of {session}", status=state, max_iterations=max_iterations,
        iteration_count=iterations, last_iteration=iterations or None,
        last_outcome=Outcome.DONE if state is RunState.COMPLETED else Outcome.WORKING if iterations else None,
        last_summary=f"summary {iterations}" if iterations else None,
        stop_reason=StopReason.AGENT_DONE if state is RunState.COMPLETED else None,
        worktree=WorktreeInfo(base_ref="HEAD", base_commit=base, path=str(run_dir(top, session) / "workspace"),
                              branch=f"harness/{session}"),
        repo=str(top), run_dir=str(run_dir(top, session)), image="harness-base:latest",
        agent=AgentInfo(name="custom", command=["sh", "-c", "true"]), limits=limits, head_commit=head,
        supervisor=SupervisorInfo(pid=os.getpid(), host=socket.gethostname(), started_at=now - timedelta(minutes=5))
        if live else None,
        created_at=now - timedelta(minutes=6),
        finished_at=None if state is RunState.RUNNING else now,
    )  # fmt: skip
    for n in range(1, iterations + 1):
        last = n == iterations
        journal.write_iteration(
            IterationRecord(
                session_id=session,
                iteration=n,
                outcome=Outcome.DONE if last and state is RunState.COMPLETED else Outcome.WORKING,
                summary=f"summary {n}",
                log_file=journal.log_path(n).name,
                limits=limits,
                commits=[head] if n == 1 else [],
                started_at=now - timedelta(minutes=5 - n),
                duration_seconds=30.0,
            )
        )
        journal.log_path(n).write_bytes(f"output of iteration {n}\n".encode())
    for n, data in (logs or {}).items():
        journal.log_path(n).write_bytes(data)
    journal.write_summary(summary)
    journal.update_control(lambda control: control.notes.extend(notes or []))
    owner_dir = run_dir(top, session)
    owner_dir.mkdir(parents=True, exist_ok=True)
    (owner_dir / "owner.json").write_text(
        RunOwner(session_id=session, repo=str(top), journal_dir=str(journal.dir)).dump_json()
    )
    return journal


@pytest.fixture
def alive() -> Iterator[ExitStack]:
    """Hold supervisor locks for the test's length, as a live supervisor would."""
    with ExitStack() as stack:
        yield stack


def test_status_of_a_completed_session(repo: GitRepo) -> None:
    record_session(repo, "done1")
    r = harness("status", "--session", "done1", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    st = r.json()
    assert (st["status"], st["iterationCount"], st["commitsAhead"], st["supervisorAlive"]) == ("completed", 2, 1, False)
    text = harness("status", "--session", "done1", cwd=repo.path)
    assert text.code == 0 and "1 commit ahead" in text.stdout and "1 commits" not in text.stdout


def test_a_session_whose_supervisor_never_started_says_so_and_how_to_start_it(repo: GitRepo) -> None:
    record_session(repo, "never1", state=RunState.RUNNING, iterations=0)  # as `run --detach` created it
    r = harness("status", "--session", "never1", "--json", cwd=repo.path)
    assert r.code == 21 and (r.json()["status"], r.json()["stopReason"]) == ("interrupted", "not-started"), r
    assert r.json()["verdict"].endswith("its supervisor never started (see supervisor.log): resume starts it")
    listed = {s["sessionId"]: s for s in harness("list", "--json", cwd=repo.path).json()}
    assert (listed["never1"]["status"], listed["never1"]["stopReason"]) == ("interrupted", "not-started")


def test_status_tells_a_live_supervisor_from_a_dead_one(repo: GitRepo, alive: ExitStack) -> None:
    journal = record_session(repo, "live1", state=RunState.RUNNING, live=True)
    dead = harness("status", "--session", "live1", "--json", cwd=repo.path)
    assert dead.code == 21 and dead.json()["status"] == "interrupted"
    assert dead.json()["stopReason"] == "supervisor-gone"
    alive.enter_context(journal.supervisor_lock())
    running = harness("status", "--session", "live1", "--json", cwd=repo.path)
    assert running.code == 20 and running.json()["status"] == "running" and running.json()["supervisorAlive"]
    alive.close()
    assert harness("status", "--session", "live1", "--json", cwd=repo.path).json()["status"] == "interrupted"


PROBE = """
import sys, time
from pathlib import Path
from runner.record.journal import Journal
journal, ready, stop = Journal(Path(sys.argv[1]), "lock1"), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
deadline = time.monotonic() + 60
while not stop.exists() and time.monotonic() < deadline:
    for _ in range(100):
        journal.supervisor_alive()
"""


def test_a_reader_never_takes_the_supervisors_lock(repo: GitRepo, alive: ExitStack, tmp_path: Path) -> None:
    journal = record_session(repo, "lock1", state=RunState.RUNNING, live=True)
    alive.enter_context(journal.supervisor_lock())
    assert journal.supervisor_alive()
    alive.close()
    # While another process asks as fast as it can, a supervisor can always take the lock.
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(journal.dir), str(ready), str(stop)])
    try:
        while not ready.exists():
            assert probe.poll() is None, "the probe ended before it started asking"
        for _ in range(2000):
            assert not journal.supervisor_alive()
            with journal.supervisor_lock():
                assert journal.supervisor_alive()
    finally:
        stop.touch()
        probe.wait(timeout=90)
    assert probe.returncode == 0


def test_status_without_session_and_list_show_every_session(repo: GitRepo) -> None:
    record_session(repo, "one")
    record_session(repo, "two", state=RunState.STOPPED, iterations=1)
    r = harness("status", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    assert {(s["sessionId"], s["status"]) for s in r.json()} == {("one", "completed"), ("two", "stopped")}
    text = harness("status", cwd=repo.path)
    assert text.code == 0 and "one" in text.stdout and "two" in text.stdout
    listed = harness("list", "--json", cwd=repo.path)
    assert listed.code == 0, listed.stderr
    assert {(s["sessionId"], s["repo"]) for s in listed.json()} == {
        ("one", str(repo.path.resolve())),
        ("two", str(repo.path.resolve())),
    }


def test_note_is_queued_in_control_json(repo: GitRepo) -> None:
    journal = record_session(repo, "n1", state=RunState.STOPPED)
    r = harness("note", "--session", "n1", "also update the changelog", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    control = load_model(journal.control_path, ControlFile)
    assert [(n.id, n.text, n.consumed_at) for n in control.notes] == [
        (r.json()["id"], "also update the changelog", None)
    ]
    assert harness("note", "--session", "n1", "  ", cwd=repo.path).code == 2
    assert harness("note", "--session", "nope", "x", cwd=repo.path).code == 7


def test_stop_records_the_request(repo: GitRepo, alive: ExitStack) -> None:
    journal = record_session(repo, "s1", state=RunState.RUNNING, live=True)
    r = harness("stop", "--session", "s1", "--note", "enough", "--json", cwd=repo.path)
    assert r.code == 0, r.stderr
    assert r.json()["stopRequested"] and not r.json()["supervisorAlive"]
    control = load_model(journal.control_path, ControlFile)
    assert control.stop_requested and control.stop_mode == "graceful" and control.stop_note == "enough"
    alive.enter_context(journal.supervisor_lock())
    now = harness("stop", "--session", "s1", "--now", "--json", cwd=repo.path)
    assert now.json()["supervisorAlive"] and load_model(journal.control_path, ControlFile).stop_mode == "now"


def test_logs_prints_an_iteration_with_escapes_neutralised(repo: GitRepo) -> None:
    record_session(repo, "l1", logs={2: b"plain line\n\x1b]0;pwned\x07 title\n"})
    latest = harness("logs", "--session", "l1", cwd=repo.path)
    assert latest.code == 0, latest.stderr
    assert "plain line" in latest.stdout and "\x1b" not in latest.stdout and "\\x1b]0;pwned" in latest.stdout
    first = harness("logs", "--session", "l1", "--iteration", "1", cwd=repo.path)
    assert first.stdout == "output of iteration 1\n"
    assert harness("logs", "--session", "l1", "--iteration", "9", cwd=repo.path).code == 2
    # --follow of a session no supervisor drives prints what there is and returns.
    followed = harness("logs", "--session", "l1", "--follow", cwd=repo.path, timeout=30)
    assert followed.code == 0 and "plain line" in followed.stdout


def test_logs_follow_goes_on_while_the_supervisor_lives(repo: GitRepo, alive: ExitStack) -> None:
    journal = record_session(repo, "f1", state=RunState.RUNNING, iterations=1, live=True)
    alive.enter_context(journal.supervisor_lock())
    follow = subprocess.Popen(
        [sys.executable, "-m", "runner", "logs", "--session", "f1", "--follow"],
        cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "output of iteration 1\n"
        assert follow.poll() is None  # still following: the supervisor lives
        journal.log_path(2).write_bytes(b"iteration 2 begins\n")
        alive.close()  # the supervisor ends: follow prints what is left and returns
        out, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0, err
    assert "--- iteration 2 ---" in out and "iteration 2 begins" in out


def record_race(
    repo: GitRepo, race: str, racers: int, winners: list[str], *, running: bool = False, unstarted: tuple[int, ...] = ()
) -> Journal:
    """race.json as the race's supervisor leaves it at the end (its racers recorded or not by the caller), or, with
    `running`, while it runs (the racers `unstarted` not started yet)."""
    top = repo.path.resolve()
    journal = Journal.for_repo(top, race)
    journal.create("objective")
    journal.write_race(RaceRecord(
        session_id=race, objective="objective", repo=str(top), check_command="true", winners=winners,
        racers=[Racer(session_id=f"{race}-{k}", agent="custom", started=k not in unstarted)
                for k in range(1, racers + 1)],
        state=RaceState.RUNNING if running else RaceState.FINISHED, end_reason=None if running else "all-ended",
    ))  # fmt: skip
    return journal


def test_a_racer_the_live_race_has_not_started_yet_is_shown_waiting_not_interrupted(
    repo: GitRepo, alive: ExitStack
) -> None:
    one = record_session(repo, "w-1", state=RunState.RUNNING, iterations=1, live=True)
    record_session(repo, "w-2", state=RunState.RUNNING, iterations=0)  # started: not named in the journal yet
    record_session(repo, "w-3", state=RunState.RUNNING, iterations=0)  # as `race` created it, not started yet
    race = record_race(repo, "w", 3, [], running=True, unstarted=(3,))
    alive.enter_context(one.supervisor_lock())
    alive.enter_context(race.supervisor_lock())
    st = harness("hud", "--session", "w", "--json", cwd=repo.path).json()
    assert st["state"] == "running"
    assert [(r["status"], r["stopReason"]) for r in st["racers"]] == [("running", None)] + [("queued", None)] * 2
    alive.close()  # the race's supervisor is gone: nobody will start them, and they are shown interrupted
    st = harness("status", "--session", "w", "--json", cwd=repo.path).json()
    assert st["state"] == "interrupted"
    gone, never = ("interrupted", "supervisor-gone"), ("interrupted", "not-started")
    assert [(r["status"], r["stopReason"]) for r in st["racers"]] == [gone, never, never]


def test_logs_of_a_race_prefix_every_line_with_its_racer(repo: GitRepo) -> None:
    record_session(repo, "lr-1", logs={1: b"one\n\x1b[31mred\n", 2: b"no newline at the end"})
    record_session(repo, "lr-2", iterations=1)
    record_race(repo, "lr", 3, ["lr-2"])  # lr-3: discarded, its journal gone
    latest = harness("logs", "--session", "lr", cwd=repo.path)
    assert latest.code == 0, latest.stderr
    assert latest.stdout.splitlines() == [
        "lr-1 | --- iteration 2 ---", "lr-1 | no newline at the end",
        "lr-2 | --- iteration 1 ---", "lr-2 | output of iteration 1",
        "lr-3 | --- discarded: its journal is gone ---",
    ]  # fmt: skip
    first = harness("logs", "--session", "lr", "--iteration", "1", cwd=repo.path)
    assert first.stdout.splitlines()[:3] == ["lr-1 | --- iteration 1 ---", "lr-1 | one", "lr-1 | \\x1b[31mred"]
    second = harness("logs", "--session", "lr", "--iteration", "2", cwd=repo.path)
    assert "lr-2 | --- no iteration 2 ---" in second.stdout.splitlines()
    followed = harness("logs", "--session", "lr", "--follow", cwd=repo.path, timeout=30)  # nothing runs: it returns
    assert followed.code == 0, followed.stderr
    # Following, a line is printed once whole: one written without its newline waits for the end.
    assert followed.stdout.splitlines() == [
        "lr-1 | --- iteration 2 ---", "lr-2 | --- iteration 1 ---", "lr-2 | output of iteration 1",
        "lr-1 | no newline at the end",
    ]  # fmt: skip


def test_list_and_status_show_a_race_as_one_line_with_its_racers_under_it(repo: GitRepo) -> None:
    record_session(repo, "zz-2", iterations=1)
    record_session(repo, "alone")
    record_session(repo, "zz-1", state=RunState.STOPPED, iterations=1)
    record_race(repo, "zz", 2, ["zz-2"])
    for argv, indent in ((["list"], "  "), (["status"], "")):
        r = harness(*argv, cwd=repo.path)
        assert r.code == 0, r.stderr
        lines = [line for line in r.stdout.splitlines() if line.strip().split()[0] in ("alone", "zz", "zz-1", "zz-2")]
        assert [line.split()[0] for line in lines] == ["alone", "zz", "zz-1", "zz-2"], r.stdout
        assert lines[1].startswith(f"{indent}zz ") and "race finished (all-ended), 2 racers: zz-2 won" in lines[1]
        assert lines[2].startswith(f"{indent}  zz-1 ") and lines[3].startswith(f"{indent}  zz-2 ")
        assert lines[0].startswith(f"{indent}alone ")


def test_control_json_exists_from_the_moment_a_session_is_created(repo: GitRepo) -> None:
    summary = create_session(FakeBackend(), RunRequest(session="c1", objective="x", repo=repo.path, agent="demo"))
    journal = Journal.for_repo(repo.path.resolve(), summary.session_id)
    raw = journal.control_path.read_text()
    for key in ('"schemaVersion": 1', '"kind": "solo-harness.control"', '"sessionId": "c1"', '"stopRequested": false',
                '"updatedAt": '):  # fmt: skip
        assert key in raw
    assert load_model(journal.control_path, ControlFile).notes == []


def test_the_reader_tests_pass_on_a_machine_without_docker(tmp_path: Path) -> None:
    """No docker CLI on PATH: these tests and the session teardown (which lists test containers) pass."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True)
        (bin_dir / tool).symlink_to(found.stdout.strip())
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("CI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
         "-k", "not without_docker", "-W", "error::pytest.PytestUnraisableExceptionWarning"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert subprocess.run(["sh", "-c", "command -v docker"], env=env, capture_output=True, check=False).returncode
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "error" not in proc.stdout.lower()


def test_a_lock_held_a_moment_by_a_forked_copy_is_waited_for_and_a_held_one_refused(repo: GitRepo) -> None:
    """A child this process forks holds a copy of the lock's open file description until it execs: the lock of
    a session created a moment ago is then busy for that moment, which is no other supervisor."""
    import fcntl
    import threading

    from runner.base.errors import SessionBusyError
    from runner.record.journal import _whole_file

    journal = record_session(repo, "lock2", state=RunState.RUNNING, live=True)
    with journal.supervisor_lock():
        pass
    other = os.open(journal._supervisor_lock_path, os.O_RDWR)  # another description, as a fork's copy is
    fcntl.fcntl(other, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
    let_go = threading.Timer(0.3, os.close, args=(other,))
    let_go.start()
    with journal.supervisor_lock():
        assert journal.supervisor_alive()
    let_go.join()
    # Control: held for longer than that moment, the session is driven by someone else.
    held = os.open(journal._supervisor_lock_path, os.O_RDWR)
    try:
        fcntl.fcntl(held, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
        with pytest.raises(SessionBusyError), journal.supervisor_lock():
            pass
    finally:
        os.close(held)
