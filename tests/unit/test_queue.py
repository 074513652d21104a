"""The machine-wide queue (runner/record/queue.py) on real files and real locks: its order, reordering, parked
tickets, and slots held by other processes and freed by the kernel when they die."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.base.errors import UsageError
from runner.record import queue
from runner.record.journal import Journal

REPO = Path("/nonexistent/repo")


def journal_of(tmp_path: Path, session: str) -> Journal:
    """A session's journal with a summary file (the queue drops tickets of sessions that no longer exist)."""
    journal = Journal(tmp_path / "journals" / session, session)
    journal.dir.mkdir(parents=True)
    journal.summary_path.write_text("{}")
    return journal


def queued(tmp_path: Path, *sessions: str) -> dict[str, Journal]:
    journals = {s: journal_of(tmp_path, s) for s in sessions}
    queue.enqueue_all([(REPO, s, j.dir) for s, j in journals.items()])
    return journals


def order() -> list[str]:
    return [e.ticket.session_id for e in queue.entries()]


# A process that takes a slot (cap 8: always room) and holds it until killed; it says which slot on stdout.
HOLDER = """
import sys
from pathlib import Path
from runner.record import queue
from runner.record.journal import Journal
journal = Journal(Path(sys.argv[1]), sys.argv[2])
slot = queue.try_take(Path(sys.argv[3]), sys.argv[2], journal.dir, 8)
print(slot.index, flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_elsewhere(tmp_path: Path, session: str) -> Iterator[subprocess.Popen[str]]:
    """A slot held by another process (killed with SIGKILL at the end, if still alive)."""
    journal = journal_of(tmp_path, session)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(journal.dir), session, str(REPO)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().isdigit()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_tickets_keep_the_order_they_came_in_and_a_session_keeps_its_place(tmp_path: Path) -> None:
    assert queue.entries() == [] and queue.holders() == []
    assert not queue.queue_root().exists() and not queue.slots_root().exists()  # reading created nothing
    journals = queued(tmp_path, "a", "b", "c")
    assert order() == ["a", "b", "c"]
    assert [e.position for e in queue.entries()] == [1, 2, 3]
    queue.enqueue(REPO, "a", journals["a"].dir)  # again (a resume): its place, not the end
    assert order() == ["a", "b", "c"]
    queue.enqueue(REPO, "d", journal_of(tmp_path, "d").dir)
    assert order() == ["a", "b", "c", "d"]
    entry = queue.entry_of(REPO, "c")
    assert entry is not None and entry.position == 3 and not entry.waiting  # nobody holds c's journal lock


def test_move_puts_a_session_at_a_position_and_keeps_the_others_order(tmp_path: Path) -> None:
    queued(tmp_path, "a", "b", "c", "d")
    queue.move(REPO, "d", 1)
    assert order() == ["d", "a", "b", "c"]
    queue.move(REPO, "d", 3)
    assert order() == ["a", "b", "d", "c"]
    queue.move(REPO, "a", 99)  # past the end: last
    assert order() == ["b", "d", "c", "a"]
    queue.enqueue(REPO, "e", journal_of(tmp_path, "e").dir)  # a newcomer still goes to the end
    assert order() == ["b", "d", "c", "a", "e"]
    with pytest.raises(UsageError, match="not in the queue"):
        queue.move(REPO, "zz", 1)
    with pytest.raises(UsageError, match="from 1"):
        queue.move(REPO, "a", 0)


def test_a_ticket_whose_session_is_gone_leaves_the_queue(tmp_path: Path) -> None:
    journals = queued(tmp_path, "a", "b")
    journals["a"].summary_path.unlink()  # discarded
    assert order() == ["b"]
    assert queue.remove(REPO, "b") and not queue.remove(REPO, "b")
    assert order() == []


def test_a_waiting_session_is_not_jumped_and_a_parked_one_holds_nobody_back(tmp_path: Path) -> None:
    journals = queued(tmp_path, "a", "b", "c")
    with contextlib.ExitStack() as alive:
        for s in ("b", "c"):  # b and c wait (their supervisors hold their locks); a's supervisor is gone
            alive.enter_context(journals[s].supervisor_lock())
        assert queue.try_take(REPO, "c", journals["c"].dir, 1) is None  # b is ahead of c and waits
        slot = queue.try_take(REPO, "b", journals["b"].dir, 1)  # a is parked: it holds nobody back
        assert slot is not None and slot.index == 0
        with slot:
            assert order() == ["a", "c"]  # b left the queue; a keeps its place
            assert queue.try_take(REPO, "c", journals["c"].dir, 1) is None  # the one slot is held
            assert [h.session_id for h in queue.holders()] == ["b"]
            two = queue.try_take(REPO, "c", journals["c"].dir, 2)  # a cap of 2: room for c
            assert two is not None and two.index == 1
            two.release()
        assert queue.holders() == []


def test_a_slot_held_by_another_process_is_freed_by_the_kernel_when_it_dies(tmp_path: Path) -> None:
    journals = queued(tmp_path, "mine")
    with held_elsewhere(tmp_path, "other") as proc:
        assert [h.session_id for h in queue.holders()] == ["other"]
        assert queue.holders()[0].pid == proc.pid
        assert queue.try_take(REPO, "mine", journals["mine"].dir, 1) is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        slot = queue.try_take(REPO, "mine", journals["mine"].dir, 1)
        assert slot is not None
        slot.release()


def test_wait_for_slot_waits_its_turn_and_a_stop_leaves_its_ticket(tmp_path: Path) -> None:
    journals = queued(tmp_path, "w")
    told: list[str] = []
    looks = [0]

    def stopped() -> bool:
        looks[0] += 1
        return looks[0] >= 3

    with held_elsewhere(tmp_path, "other") as proc:
        slot = queue.wait_for_slot(
            REPO, "w", journals["w"].dir, 1, stopped=stopped, pause=lambda s: None,
            on_queued=lambda t: told.append(t.session_id),
        )  # fmt: skip
        assert slot is None and told == ["w"] and looks[0] == 3
        assert order() == ["w"]  # still queued, its place kept
        proc.kill()
        proc.wait(timeout=30)
        slot = queue.wait_for_slot(
            REPO, "w", journals["w"].dir, 1, stopped=lambda: True, pause=lambda s: None,
            on_queued=lambda t: told.append("again"),
        )  # fmt: skip
        assert slot is not None and told == ["w"] and order() == []
        slot.release()


def test_the_default_cap_is_what_the_cores_and_memory_hold() -> None:
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert queue.default_slots(cpus=1.0, memory_bytes=6 * 1024**2) == cores
    assert queue.default_slots(cpus=0.5, memory_bytes=6 * 1024**2) == cores * 2
    assert queue.default_slots(cpus=0.01, memory_bytes=memory // 3) == 3
    assert queue.default_slots(cpus=cores * 4, memory_bytes=2 * 1024**3) == 1  # at least one
