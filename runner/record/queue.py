"""The machine-wide queue: at most N sessions of one harness home run at once (`--slots N`, the `slots` setting, or
a default from what the session's engine holds: this machine's cores and memory for Docker, the cluster's nodes
for Kubernetes: `Backend.capacity`, runner/backends/base.py); the others wait, in an order `harness queue` shows
and changes, and a waiting session holds no container.

- **A slot** is a lock file, `slots/slot-K.lock` in the harness home, held by the supervisor that runs (an
  open-file-description lock, runner/base/locks.py): the kernel frees it when that process dies, by kill -9 or a
  reboot, so a slot can never leak, and `harness queue` can ask whether it is held without taking it. While held,
  the file names its holder (`SlotHolder`).
- **A place in the queue** is a ticket, `queue/<repo key>-<session>.json` (`QueueTicket`, written atomically),
  ordered by its `order`, then its time. A ticket outlives its supervisor: after a kill -9 or a reboot the session
  keeps its place (`status` shows it queued, waiting for `resume`), and `resume` takes the same ticket back. A
  ticket is *waiting* while its session's supervisor lives (it holds the session's journal lock), *parked*
  otherwise: a parked ticket keeps its place but holds nobody back.
- **The rule.** A waiting supervisor with a cap of N takes a slot when fewer than N slots are held (by sessions
  of any cap) and it is among the first (N - held) waiting tickets. Every change of the queue and every take
  holds one guard lock (`queue/.lock`), so two waiters cannot jump each other; readers take it shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

from pydantic import Field

from runner.base.atomic import write_atomic
from runner.base.errors import HarnessError, JournalError, UsageError
from runner.base.locks import is_held, try_lock
from runner.base.paths import data_home, repo_key
from runner.record.journal import Journal, load_model
from runner.record.models import SCHEMA_VERSION, JournalModel, utcnow

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a waiting supervisor looks again (and at its stop requests)
_GUARD = ".lock"
_SLOT_PREFIX = "slot-"


class QueueTicket(JournalModel):
    """queue/REPO-KEY-SESSION.json in the harness home: a session's place in the machine-wide queue."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.queue-ticket"] = Field(
        default="solo-harness.queue-ticket", description="Always `solo-harness.queue-ticket`."
    )
    session_id: str = Field(description="The session waiting for a slot.")
    repo: str = Field(description="That session's repository.")
    journal_dir: str = Field(description="That session's journal directory (its lock tells whether it waits).")
    order: int = Field(description="Its place: the smallest goes first (`harness queue --move` renumbers).")
    queued_at: datetime = Field(default_factory=utcnow, description="When the session joined the queue (UTC).")
    pid: int | None = Field(default=None, description="The supervisor that last waited on it, if one did.")
    host: str | None = Field(default=None, description="The host of that supervisor.")

    @property
    def key(self) -> str:
        return ticket_key(Path(self.repo), self.session_id)


class SlotHolder(JournalModel):
    """What a held slots/slot-K.lock says of its holder (meaningful only while the lock is held)."""

    slot: int = Field(ge=0, description="K, the slot's number.")
    session_id: str = Field(description="The session that runs in it.")
    repo: str = Field(description="That session's repository.")
    pid: int = Field(description="Its supervisor's process id.")
    started_at: datetime = Field(default_factory=utcnow, description="When it took the slot (UTC).")


@dataclass(frozen=True)
class QueueEntry:
    """A ticket with its position (from 1, counting parked tickets) and whether a supervisor waits on it."""

    position: int
    ticket: QueueTicket
    waiting: bool


def queue_root() -> Path:
    return data_home() / "queue"


def slots_root() -> Path:
    return data_home() / "slots"


def ticket_key(repo: Path, session: str) -> str:
    return f"{repo_key(repo)}-{session}"


def machine_resources() -> tuple[int, int | None]:
    """This machine's cores (those this process may use) and memory in bytes (None: it cannot tell)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        memory: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return cores, memory


def default_slots(*, cpus: float, memory_bytes: int) -> int:
    """The cap of a session on an engine that runs here (Docker) when none is given: as many sessions as this
    machine's cores and memory hold at one session's --cpus and --memory, at least one:
    max(1, min(cores // cpus, memory // session memory)). An engine elsewhere has its own (`Backend.capacity`)."""
    cores, memory = machine_resources()
    return max(1, min(int(cores // cpus), (memory or memory_bytes) // memory_bytes))


@contextlib.contextmanager
def _guard(*, exclusive: bool) -> Iterator[Path]:
    root = queue_root()
    path = root / _GUARD
    if not exclusive and not root.is_dir():
        yield root  # nothing queued yet, and a reader creates nothing
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise JournalError(f"{path}: cannot open the queue's lock ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield root
    finally:
        os.close(fd)


def _tickets(root: Path) -> list[QueueTicket]:
    """Every readable ticket, in queue order (a corrupt one is logged and left out)."""
    found = []
    for path in root.glob("*.json") if root.is_dir() else []:
        try:
            found.append(load_model(path, QueueTicket))
        except HarnessError as exc:
            log.warning("queue: %s", exc.message)
    return sorted(found, key=lambda t: (t.order, t.queued_at, t.key))


def _waiting(ticket: QueueTicket) -> bool:
    """A supervisor of the ticket's session lives (it holds the session's journal lock)."""
    try:
        return Journal(Path(ticket.journal_dir), ticket.session_id).supervisor_alive()
    except HarnessError:
        return False


def _gone(ticket: QueueTicket) -> bool:
    """The ticket's session no longer exists (discarded, or its repository deleted)."""
    return not Journal(Path(ticket.journal_dir), ticket.session_id).summary_path.is_file()


def _save(root: Path, ticket: QueueTicket) -> None:
    try:
        write_atomic(root / f"{ticket.key}.json", ticket.dump_json())
    except OSError as exc:
        raise JournalError(f"{root}: cannot write the queue ticket of {ticket.session_id} ({exc.strerror})") from None


def _drop(root: Path, key: str) -> None:
    (root / f"{key}.json").unlink(missing_ok=True)


def _live_tickets(root: Path) -> list[QueueTicket]:
    """The tickets in order, those of sessions that no longer exist dropped (the guard held exclusively)."""
    tickets = []
    for ticket in _tickets(root):
        if _gone(ticket):
            _drop(root, ticket.key)
        else:
            tickets.append(ticket)
    return tickets


def _enqueue(
    root: Path, tickets: list[QueueTicket], repo: Path, session: str, journal_dir: Path, *, pid: int | None = None
) -> QueueTicket:
    key = ticket_key(repo, session)
    ticket = next((t for t in tickets if t.key == key), None)
    if ticket is None:
        ticket = QueueTicket(
            session_id=session,
            repo=str(repo),
            journal_dir=str(journal_dir),
            order=max((t.order for t in tickets), default=0) + 1,
        )
        tickets.append(ticket)
    elif pid is None or ticket.pid == pid:
        return ticket  # it keeps its place (a resume after a kill -9 or a reboot)
    if pid is not None:
        ticket.pid, ticket.host = pid, socket.gethostname()
    _save(root, ticket)
    return ticket


def enqueue(repo: Path, session: str, journal_dir: Path) -> QueueTicket:
    """The session's ticket: its existing one (its place kept), else a new one at the end of the queue."""
    return enqueue_all([(repo, session, journal_dir)])[0]


def enqueue_all(sessions: Sequence[tuple[Path, str, Path]]) -> list[QueueTicket]:
    """Tickets for several sessions (repository top, session, journal directory), placed at the end of the
    queue in the order given, at once (no other session comes between them). A session already queued keeps its
    place. Their supervisors, started afterwards in any order, then start in this order."""
    with _guard(exclusive=True) as root:
        tickets = _live_tickets(root)
        return [_enqueue(root, tickets, repo, session, journal) for repo, session, journal in sessions]


def entries() -> list[QueueEntry]:
    """The queue in order, with positions from 1."""
    with _guard(exclusive=False) as root:
        tickets = [t for t in _tickets(root) if not _gone(t)]
        return [QueueEntry(n, t, _waiting(t)) for n, t in enumerate(tickets, start=1)]


def entry_of(repo: Path, session: str) -> QueueEntry | None:
    """The session's place in the queue; None when it has no ticket."""
    key = ticket_key(repo, session)
    return next((e for e in entries() if e.ticket.key == key), None)


def remove(repo: Path, session: str) -> bool:
    """Take the session out of the queue; False when it was not in it."""
    key = ticket_key(repo, session)
    with _guard(exclusive=True) as root:
        present = (root / f"{key}.json").is_file()
        _drop(root, key)
        return present


def move(repo: Path, session: str, to: int) -> list[QueueEntry]:
    """Put the session's ticket at position `to` (from 1; past the end: last), the others keeping their
    order; returns the queue as it is then."""
    if to < 1:
        raise UsageError("--to: positions count from 1")
    key = ticket_key(repo, session)
    with _guard(exclusive=True) as root:
        tickets = _live_tickets(root)
        mine = next((t for t in tickets if t.key == key), None)
        if mine is None:
            raise UsageError(f"session {session!r} of {repo} is not in the queue")
        tickets.remove(mine)
        tickets.insert(min(to, len(tickets) + 1) - 1, mine)
        for order, ticket in enumerate(tickets, start=1):
            if ticket.order != order:
                ticket.order = order
                _save(root, ticket)
    return entries()


class Slot:
    """A held slot: the lock on slots/slot-K.lock, released by `release()` (or with the process)."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self._fd: int | None = fd

    def name(self, holder: SlotHolder) -> None:
        """Write who holds the slot into its file (for `harness queue`)."""
        if self._fd is not None:
            data = holder.dump_json().encode()
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _slot_path(index: int) -> Path:
    return slots_root() / f"{_SLOT_PREFIX}{index}.lock"


def _held() -> list[int]:
    root = slots_root()
    if not root.is_dir():
        return []
    held = []
    for path in root.glob(f"{_SLOT_PREFIX}*.lock"):
        number = path.name.removeprefix(_SLOT_PREFIX).removesuffix(".lock")
        if number.isdigit() and is_held(path):
            held.append(int(number))
    return sorted(held)


def holders() -> list[SlotHolder]:
    """The slots held now, with their holders (a holder whose file cannot be read is shown as unknown)."""
    found = []
    for index in _held():
        try:
            found.append(SlotHolder.model_validate_json(_slot_path(index).read_bytes()))
        except (OSError, ValueError):
            found.append(SlotHolder(slot=index, session_id="?", repo="?", pid=0))
    return found


def _lock_free_slot(held: list[int]) -> Slot | None:
    """The lowest slot nobody holds (the guard held: no other taker runs meanwhile)."""
    slots_root().mkdir(parents=True, exist_ok=True)
    for index in [i for i in range(len(held) + 2) if i not in held]:
        fd = os.open(_slot_path(index), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        if try_lock(fd):
            return Slot(index, fd)
        os.close(fd)
    return None


def try_take(repo: Path, session: str, journal_dir: Path, cap: int) -> Slot | None:
    """A slot for the session when the rule allows it (its ticket then leaves the queue); None: not yet, and the
    session has its ticket (its place kept, or a new one at the end), naming this process as its waiter."""
    key = ticket_key(repo, session)
    with _guard(exclusive=True) as root:
        tickets = _live_tickets(root)
        _enqueue(root, tickets, repo, session, journal_dir, pid=os.getpid())
        held = _held()
        waiting = [t for t in tickets if t.key == key or _waiting(t)]
        place = next(n for n, t in enumerate(waiting) if t.key == key)
        if place >= cap - len(held):
            return None
        try:
            slot = _lock_free_slot(held)
            if slot is None:
                return None
            slot.name(SlotHolder(slot=slot.index, session_id=session, repo=str(repo), pid=os.getpid()))
        except OSError as exc:
            raise JournalError(f"{slots_root()}: cannot take a slot ({exc.strerror})") from None
        _drop(root, key)
        return slot


def wait_for_slot(
    repo: Path,
    session: str,
    journal_dir: Path,
    cap: int,
    *,
    stopped: Callable[[], bool],
    pause: Callable[[float], object],
    on_queued: Callable[[QueueTicket], None],
    poll_seconds: float = POLL_SECONDS,
) -> Slot | None:
    """Queue the session (keeping a place it already has) and wait until it may take a slot; None when
    `stopped()` says so first (its ticket is kept: the caller removes it if the session leaves the queue).
    `on_queued` is told once, when the session has to wait; `pause` waits between looks (a stop event's wait)."""
    told = False
    while True:
        slot = try_take(repo, session, journal_dir, cap)
        if slot is not None:
            return slot
        if not told:
            entry = entry_of(repo, session)
            if entry is not None:
                on_queued(entry.ticket)
                told = True
        if stopped():
            return None
        pause(poll_seconds)
