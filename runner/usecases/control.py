"""Core of `stop` and `note`: requests written to control.json for the supervisor to honour."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from runner.base.errors import SessionBusyError, UsageError
from runner.record import queue
from runner.record.journal import Journal
from runner.record.models import CamelModel, ControlFile, Note, RunState, RunSummary, StopReason, utcnow
from runner.usecases.repository import open_session
from runner.usecases.status import effective_state


@dataclass(frozen=True)
class StopRequest:
    repo: Path
    session: str
    note: str | None = None
    now: bool = False  # stop the running container instead of waiting for the iteration's end


class StopResult(CamelModel):
    session_id: str
    stop_requested: bool
    supervisor_alive: bool
    message: str


def _journal(repo: Path, session: str) -> Journal:
    with open_session(repo, session) as opened:
        journal = opened.journal
    journal.require()
    return journal


def request_stop(request: StopRequest) -> StopResult:
    """Ask the supervisor to stop at the next iteration boundary."""
    journal = _journal(request.repo, request.session)

    def ask(control: ControlFile) -> None:
        control.stop_requested = True
        control.stop_mode = "now" if request.now else "graceful"
        control.stop_note = request.note
        control.stop_requested_at = utcnow()

    journal.update_control(ask)
    state, alive = effective_state(journal.read_summary(), journal)
    if state is RunState.QUEUED:
        if alive:
            message = "the session leaves the queue (stopped)"
        else:
            message = "the session left the queue (stopped)" if _unpark(journal) else "the request is recorded"
    elif not alive:
        message = "no supervisor is running this session; the request is recorded"
    elif request.now:
        message = "the running container is being stopped; the run ends after recording the iteration"
    else:
        message = "the run stops after the current iteration"
    return StopResult(session_id=request.session, stop_requested=True, supervisor_alive=alive, message=message)


def leave_queue(journal: Journal, summary: RunSummary) -> None:
    """A stop request reached a queued session: out of the queue, `stopped` (its copy, if any, kept as it is)."""
    queue.remove(Path(summary.repo), summary.session_id)
    summary.status, summary.stop_reason = RunState.STOPPED, StopReason.STOP_REQUESTED
    summary.stop_requested, summary.finished_at, summary.supervisor = True, utcnow(), None
    journal.write_summary(summary)


def _unpark(journal: Journal) -> bool:
    """A queued session whose supervisor is gone: out of the queue, `stopped`, as its supervisor would have left
    it; False when a supervisor took the session meanwhile (it sees the request and leaves the queue itself)."""
    try:
        with journal.supervisor_lock(settle=0):
            summary = journal.read_summary()
            if summary.status is not RunState.QUEUED:
                return False
            leave_queue(journal, summary)
            return True
    except SessionBusyError:
        return False


@dataclass(frozen=True)
class NoteRequest:
    repo: Path
    session: str
    text: str


def add_note(request: NoteRequest) -> Note:
    """Queue a note that the next iteration's prompt carries."""
    if not request.text.strip():
        raise UsageError("the note is empty")
    if len(request.text) > 65_536:
        raise UsageError("the note is longer than 65536 characters")
    journal = _journal(request.repo, request.session)
    note = Note(id=uuid.uuid4().hex[:12], text=request.text)
    journal.update_control(lambda control: control.notes.append(note))
    return note
