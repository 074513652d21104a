"""The machine-wide queue on the real engine, with scripted agents held until the test lets them go: `--slots`
holds a session back without a container, starts it when a slot frees, keeps its place across a kill -9 of its
supervisor, and lets `stop` take it out of the queue."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runner.record import queue
from tests.helpers import HOLD, GitRepo, exited, harness, release, run_args, wait_for
from tests.integration.test_keep_awake import stand_in
from tests.integration.test_night import report, session_containers, summary_of
from tests.integration.test_notify import notifications
from tests.notify_receiver import Receiver

pytestmark = pytest.mark.docker

AGENT = f"{HOLD}; {report('done')}"  # holds its one iteration until released, then reports done


def start(repo: GitRepo, session: str, slots: int, *extra: str, queued: bool = False) -> int:
    """`run --detach --slots N` of a held agent: it returns at once, queued or not; the supervisor's pid.
    `queued`: every slot is taken, so it waits; `--detach` returns once its supervisor has its place in the queue
    and has written in the journal that it waits: the summary says `queued` at once, never `running` first."""
    began = time.monotonic()
    args = run_args(session, "--slots", str(slots), "--detach", *extra, cmd=AGENT, iterations=1)
    r = harness(*args, cwd=repo.path)
    assert r.code == 0, r.stderr
    assert time.monotonic() - began < 60
    assert state(repo, session) == ("queued" if queued else "running")
    return int(r.json()["pid"])


def status(repo: GitRepo, session: str) -> tuple[int, dict[str, object]]:
    st = harness("status", "--session", session, "--json", cwd=repo.path)
    assert st.stdout, st.stderr
    return st.code, st.json()


def state(repo: GitRepo, session: str) -> str:
    return summary_of(repo, session).status.value


def agent_runs(session: str) -> bool:
    return bool(session_containers(session, "agent"))


def no_copy(repo: GitRepo, session: str) -> bool:
    return not (Path(summary_of(repo, session).run_dir) / "workspace").exists()


def test_the_queue_holds_a_third_session_while_two_run_and_starts_it_when_one_ends(repo: GitRepo) -> None:
    for s in ("q1", "q2"):
        start(repo, s, 2)
    wait_for(lambda: agent_runs("q1") and agent_runs("q2"), 120, "both agents to run")
    start(repo, "q3", 2, queued=True)
    code, st = status(repo, "q3")
    assert code == 20 and st["status"] == "queued" and st["supervisorAlive"], st
    assert st["queuePosition"] == 1 and st["queueLength"] == 1 and st["slots"] == 2
    listed = {s["sessionId"]: s for s in harness("list", "--json", cwd=repo.path).json()}
    assert listed["q3"]["status"] == "queued" and listed["q3"]["queuePosition"] == 1
    assert [listed[s]["status"] for s in ("q1", "q2")] == ["running", "running"]
    text = harness("status", cwd=repo.path).stdout
    assert "queued  position 1 of 1" in text
    assert session_containers("q3") == [] and no_copy(repo, "q3")  # waiting costs no container, not even the copy

    release(repo, "q1")
    wait_for(lambda: state(repo, "q1") == "completed", 120, "q1 to end")
    wait_for(lambda: agent_runs("q3"), 120, "q3 to start in the slot q1 left")
    assert state(repo, "q2") == "running" and agent_runs("q2")
    q1, q3 = summary_of(repo, "q1"), summary_of(repo, "q3")
    assert q3.queue.queued_at is not None and q3.queue.started_at is not None and q1.finished_at is not None
    assert q3.queue.queued_at < q1.finished_at <= q3.queue.started_at
    assert q3.queue.slot == q1.queue.slot

    for s in ("q2", "q3"):
        release(repo, s)
    wait_for(lambda: {state(repo, s) for s in ("q2", "q3")} == {"completed"}, 120, "q2 and q3 to end")
    assert queue.entries() == []
    wait_for(lambda: queue.holders() == [], 30, "the supervisors to give their slots back as they exit")


# A sleep inhibitor that never answers: the supervisor gives up on it after keepawake.START_SECONDS, and only then
# writes its first summary. Between its lock and that write, the summary still reads as `run` created it.
SILENT_INHIBITOR = "#!/bin/sh\nexec sleep 120\n"


def test_detach_returns_once_the_journal_says_the_session_waits_even_when_its_supervisor_is_slow(
    repo: GitRepo, tmp_path: Path
) -> None:
    start(repo, "d1", 1)
    wait_for(lambda: agent_runs("d1"), 120, "d1's agent to run")
    _, env = stand_in(tmp_path, SILENT_INHIBITOR)
    r = harness(*run_args("d2", "--slots", "1", "--detach", cmd=AGENT, iterations=1), cwd=repo.path, env=env)
    assert r.code == 0, r.stderr
    # Read at once: a --detach that returned when the lock was taken reads `running` here for ten seconds.
    code, st = status(repo, "d2")
    assert code == 20 and st["status"] == "queued" and st["supervisorAlive"] and st["queuePosition"] == 1, st
    assert st["keepAwake"]["reason"] == "systemd-inhibit did not take its lock within 10s", st
    release(repo, "d1")
    wait_for(lambda: agent_runs("d2"), 120, "d2 to start in the slot d1 left")
    release(repo, "d2")
    wait_for(lambda: state(repo, "d2") == "completed", 120, "d2 to end")


def test_a_killed_queued_supervisor_keeps_its_place_for_resume_and_stop_takes_a_session_out(repo: GitRepo) -> None:
    start(repo, "r1", 1)
    wait_for(lambda: agent_runs("r1"), 120, "r1's agent to run")
    pid = start(repo, "r2", 1, queued=True)
    start(repo, "r3", 1, queued=True)
    r4 = start(repo, "r4", 1, queued=True)
    assert [status(repo, s)[1]["queuePosition"] for s in ("r2", "r3", "r4")] == [1, 2, 3]
    # A parked session discarded (its journal kept) leaves the queue with the rest of its run.
    os.kill(r4, signal.SIGKILL)
    wait_for(lambda: not status(repo, "r4")[1]["supervisorAlive"], 30, "r4's supervisor to be gone")
    discarded = harness("discard", "--session", "r4", "--keep-journal", "--json", cwd=repo.path)
    assert discarded.code == 0, discarded.stderr
    assert [q["sessionId"] for q in harness("queue", "--json", cwd=repo.path).json()["queued"]] == ["r2", "r3"]
    assert status(repo, "r4")[1]["status"] == "interrupted"

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: exited(pid), 10, "the killed supervisor to exit")
    code, st = status(repo, "r2")
    assert code == 21 and st["status"] == "queued" and not st["supervisorAlive"], st  # parked: waits for resume
    assert st["queuePosition"] == 1 and "resume takes its place back" in st["verdict"]

    resumed = harness("resume", "--session", "r2", "--detach", "--json", cwd=repo.path)
    assert resumed.code == 0, resumed.stderr
    code, st = status(repo, "r2")
    assert code == 20 and st["status"] == "queued" and st["supervisorAlive"] and st["queuePosition"] == 1

    stopped = harness("stop", "--session", "r3", cwd=repo.path)
    assert stopped.code == 0, stopped.stderr
    wait_for(lambda: state(repo, "r3") == "stopped", 30, "r3 to leave the queue")
    code, st = status(repo, "r3")
    assert code == 21 and st["stopReason"] == "stop-requested" and st["queuePosition"] is None
    assert no_copy(repo, "r3") and session_containers("r3") == []

    release(repo, "r1")
    wait_for(lambda: agent_runs("r2"), 120, "r2, first in the queue, to start")
    release(repo, "r2")
    wait_for(lambda: state(repo, "r2") == "completed", 120, "r2 to end")
    assert state(repo, "r3") == "stopped"


def test_harness_queue_shows_slots_and_order_and_a_move_changes_who_starts_next(repo: GitRepo) -> None:
    start(repo, "m1", 1)
    wait_for(lambda: agent_runs("m1"), 120, "m1's agent to run")
    pids = {s: start(repo, s, 1, queued=True) for s in ("m2", "m3")}
    view = harness("queue", "--json", cwd=repo.path).json()
    assert [(h["slot"], h["sessionId"]) for h in view["running"]] == [(0, "m1")]
    assert [(q["position"], q["sessionId"], q["waiting"], q["slots"]) for q in view["queued"]] == [
        (1, "m2", True, 1),
        (2, "m3", True, 1),
    ]

    moved = harness("queue", "--move", "m3", "--first", "--json", cwd=repo.path)
    assert moved.code == 0, moved.stderr
    assert [q["sessionId"] for q in moved.json()["queued"]] == ["m3", "m2"]
    assert [status(repo, s)[1]["queuePosition"] for s in ("m3", "m2")] == [1, 2]
    text = harness("queue", cwd=repo.path).stdout
    assert "slot 0  m1" in text and "1  m3  waiting for one of 1 slots" in text and "2  m2" in text
    unknown = harness("queue", "--move", "nope", "--first", cwd=repo.path)
    assert unknown.code == 7 and unknown.stderr.strip() == "harness: error: session 'nope' is not in the queue"

    # SIGTERM (a shutdown) of a waiting supervisor: it leaves, and its session keeps its place for resume.
    os.kill(pids["m2"], signal.SIGTERM)
    wait_for(lambda: not status(repo, "m2")[1]["supervisorAlive"], 30, "m2's supervisor to leave")
    code, st = status(repo, "m2")
    assert code == 21 and st["status"] == "queued" and st["queuePosition"] == 2, st
    assert [q["waiting"] for q in harness("queue", "--json", cwd=repo.path).json()["queued"]] == [True, False]
    resumed = harness("resume", "--session", "m2", "--detach", "--json", cwd=repo.path)
    assert resumed.code == 0, resumed.stderr

    release(repo, "m1")
    wait_for(lambda: agent_runs("m3"), 120, "m3, moved to the head, to start")
    assert state(repo, "m2") == "queued" and session_containers("m2") == []
    release(repo, "m3")
    wait_for(lambda: agent_runs("m2"), 120, "m2 to start after m3")
    release(repo, "m2")
    wait_for(lambda: state(repo, "m2") == "completed", 120, "m2 to end")


def test_a_session_waiting_for_its_notification_has_given_its_slot_to_the_next(repo: GitRepo) -> None:
    """A slow receiver holds n1's notification of its end: n2, queued behind n1 under --slots 1, starts while
    n1's supervisor still waits for it, and the notification is recorded once the receiver answers."""
    with Receiver(hold=True) as slow:
        first = start(repo, "n1", 1, "--notify", f"{slow.url}/hook")
        wait_for(lambda: agent_runs("n1"), 120, "n1's agent to run")
        start(repo, "n2", 1, queued=True)
        assert status(repo, "n2")[1]["status"] == "queued"

        release(repo, "n1")
        wait_for(lambda: slow.count() == 1, 120, "n1's end to be notified (and held)")
        wait_for(lambda: agent_runs("n2") or exited(first), 150, "n2 to start, or n1's supervisor to end")
        # n1's supervisor still waits for its notification (none recorded), and n2 runs in the slot it gave back.
        assert not exited(first) and notifications(repo, "n1") == [], "n2 started only once n1 had stopped waiting"
        assert agent_runs("n2") and state(repo, "n1") == "completed"
        assert [h.session_id for h in queue.holders()] == ["n2"]
        assert slow.count() == 1  # the one request, still held: not a retry after a timeout

        slow.let_go()
        wait_for(lambda: len(notifications(repo, "n1")) == 1, 60, "n1's notification to be recorded")
    (record,) = notifications(repo, "n1")
    assert (record["event"], record["delivered"], record["attempts"], record["state"]) == ("end", True, 1, "completed")
    wait_for(lambda: exited(first), 60, "n1's supervisor to exit once its notification is sent")
    release(repo, "n2")
    wait_for(lambda: state(repo, "n2") == "completed", 120, "n2 to end")
