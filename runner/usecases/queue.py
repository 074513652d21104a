"""Core of `harness queue`: the machine-wide queue as it stands (who holds the slots, who waits, in which order),
and moving a session to another place in it (runner/record/queue.py keeps the queue)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from runner.backends import LOCAL
from runner.base.errors import HarnessError, SessionNotFoundError, UsageError
from runner.base.names import validate_session
from runner.record import queue as machine
from runner.record.gitops import HostGit
from runner.record.journal import Journal
from runner.record.models import CamelModel


class QueuedSession(CamelModel):
    """One place in the queue."""

    position: int  # from 1; a parked session keeps its place
    session_id: str
    repo: str
    waiting: bool  # its supervisor lives and waits; false: parked (gone with a kill -9 or a reboot) until `resume`
    queued_at: datetime
    slots: int | None  # the cap it waits under (None: its summary cannot be read, or not known yet)


class QueueView(CamelModel):
    """`harness queue`: the slots held now, then the queue in order."""

    running: list[machine.SlotHolder]
    queued: list[QueuedSession]


@dataclass(frozen=True)
class MoveRequest:
    session: str
    to: int  # the position, from 1 (past the end: last)
    repo: Path | None = None  # which repository's session, when several of that name are queued


def _cap(ticket: machine.QueueTicket) -> int | None:
    try:
        summary = Journal(Path(ticket.journal_dir), ticket.session_id).read_summary()
    except HarnessError:
        return None
    known = summary.queue.slots or summary.queue.default_slots  # the default: as its supervisor found it
    if known is not None or summary.backend.type != LOCAL:
        return known  # a cluster is asked by the session's supervisor only, never by `harness queue`
    return machine.default_slots(cpus=summary.limits.cpus, memory_bytes=summary.limits.memory_bytes)


def _queued(e: machine.QueueEntry) -> QueuedSession:
    t = e.ticket
    return QueuedSession(
        position=e.position, session_id=t.session_id, repo=t.repo, waiting=e.waiting, queued_at=t.queued_at,
        slots=_cap(t),
    )  # fmt: skip


def queue_view() -> QueueView:
    queued = [_queued(e) for e in machine.entries()]
    return QueueView(running=machine.holders(), queued=queued)


def move_session(request: MoveRequest) -> QueueView:
    """Put a queued session at another place; the others keep their order."""
    session = validate_session(request.session)
    if request.to < 1:
        raise UsageError("--to: positions count from 1")
    found = [e.ticket for e in machine.entries() if e.ticket.session_id == session]
    if request.repo is not None:
        with HostGit(request.repo.resolve()) as git:
            top = str(git.info().top)
        found = [t for t in found if t.repo == top]
    if not found:
        raise SessionNotFoundError(f"session {session!r} is not in the queue")
    if len(found) > 1:
        repos = ", ".join(t.repo for t in found)
        raise UsageError(f"session {session!r} is queued in several repositories ({repos}): give --repo")
    machine.move(Path(found[0].repo), session, request.to)
    return queue_view()
