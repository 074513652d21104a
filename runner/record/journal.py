"""The journal of design §3: reading and writing its files atomically, and the session locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from runner.base.atomic import write_atomic
from runner.base.errors import JournalError, SessionBusyError, SessionNotFoundError
from runner.base.paths import EXCLUDE_LINE, JOURNAL_LEAF, journal_dir, sessions_root
from runner.record.models import (
    SCHEMA_VERSION,
    ControlFile,
    IterationRecord,
    JournalModel,
    NotificationLog,
    NotificationRecord,
    RaceRecord,
    RunSummary,
    utcnow,
)

M = TypeVar("M", bound=JournalModel)

# The files of a session's journal directory (design §3, docs/journal.md). Only this module names them:
# the other modules ask a Journal for their paths, or take these names.
OBJECTIVE = "objective.md"
SUMMARY = "run-summary.json"
CONTROL = "control.json"
RACE = "race.json"  # in the journal of a race's own id, which has no run-summary.json
REVIEW_CACHE = ".review-cache.json"
SUPERVISOR_LOG = "supervisor.log"  # a detached supervisor's own output
SETUP_LOG = "setup.log"
SETUP_EGRESS_LOG = "setup-egress.log"  # what the setup's egress proxy let through or refused
GATEWAY_LOG = "gateway.log"  # the model gateway's requests
EGRESS_LOG = "egress.log"  # the agent's egress proxy's connections
NOTIFICATIONS = "notifications.json"  # every notification sent (--notify)
_CONTROL_LOCK = ".control.lock"
_NOTIFICATIONS_LOCK = ".notifications.lock"
_NOTICE_LOCK = ".notice.lock"  # held while a race's end is being told (one sender at a time)
_SUPERVISOR_LOCK = ".supervisor.lock"
_ITERATION = "iteration-{:04d}"  # then .json (its record), .log (its output) or .check.log (--check's output)
_ITERATION_GLOB = "iteration-[0-9][0-9][0-9][0-9]"

# Named upgrade steps, keyed by the version they upgrade from: each takes the raw JSON object of
# that version and returns the next. Empty while schema 1 is the only one written.
UPGRADES: dict[int, Callable[[dict[str, object]], dict[str, object]]] = {}


def upgrade(data: dict[str, object]) -> dict[str, object]:
    version = data.get("schemaVersion", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"unsupported schemaVersion {version!r} (this harness reads up to {SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            raise ValueError(f"no upgrade from schemaVersion {version}")
        data = step(data)
        version += 1
        data["schemaVersion"] = version
    return data


def load_model(path: Path, model: type[M]) -> M:
    """Read and validate one journal file; every failure names the file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JournalError(f"{path}: missing") from None
    except OSError as exc:
        raise JournalError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise JournalError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise JournalError(f"{path}: not a JSON object")
    try:
        return model.model_validate(upgrade(data))
    except ValidationError as exc:
        raise JournalError(f"{path}: invalid {model.__name__} ({_first_error(exc)})") from None
    except ValueError as exc:  # from upgrade()
        raise JournalError(f"{path}: {exc}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    return f"{where}: {err['msg']}"


def save_model(path: Path, model: JournalModel) -> None:
    try:
        write_atomic(path, model.dump_json())
    except OSError as exc:
        raise JournalError(f"{path}: cannot write ({exc.strerror})") from None


LOCK_SETTLE_SECONDS = 1.0  # how long a session's lock is asked for again before the session counts as driven


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EACCES)


class Journal:
    """One session's journal directory."""

    def __init__(self, directory: Path, session: str) -> None:
        self.dir = directory
        self.session = session

    @classmethod
    def for_repo(cls, repo: Path, session: str) -> Journal:
        return cls(journal_dir(repo, session), session)

    @classmethod
    def under(cls, root: Path, session: str) -> Journal:
        """The journal of `session` below a sessions root already looked up (see paths.sessions_root)."""
        return cls(root / session / JOURNAL_LEAF, session)

    @property
    def objective_path(self) -> Path:
        return self.dir / OBJECTIVE

    @property
    def summary_path(self) -> Path:
        return self.dir / SUMMARY

    @property
    def review_cache_path(self) -> Path:
        """The last review of the branch that status showed (runner.usecases.review.cache.ReviewCache)."""
        return self.dir / REVIEW_CACHE

    @property
    def control_path(self) -> Path:
        return self.dir / CONTROL

    @property
    def supervisor_log_path(self) -> Path:
        return self.dir / SUPERVISOR_LOG

    @property
    def setup_log_path(self) -> Path:
        return self.dir / SETUP_LOG

    @property
    def setup_egress_log_path(self) -> Path:
        return self.dir / SETUP_EGRESS_LOG

    def iteration_path(self, n: int) -> Path:
        return self.dir / f"{_ITERATION.format(n)}.json"

    def log_path(self, n: int) -> Path:
        return self.dir / f"{_ITERATION.format(n)}.log"

    def check_log_path(self, n: int) -> Path:
        return self.dir / f"{_ITERATION.format(n)}.check.log"

    def logged_iterations(self) -> list[int]:
        """The iterations that have an output log, in order (the last may still be running)."""
        return self._numbered(".log")

    def _numbered(self, suffix: str) -> list[int]:
        start = _ITERATION.index("{")
        return sorted(int(p.name[start : -len(suffix)]) for p in self.dir.glob(_ITERATION_GLOB + suffix))

    def exists(self) -> bool:
        return self.summary_path.exists()

    def require(self) -> None:
        if not self.exists():
            if self.is_race():  # a command that takes one session, given a race's id
                s = self.session
                raise SessionNotFoundError(
                    f"{s!r} is a race, not a session: name one of its racers ({s}-1, {s}-2, ...); "
                    f"'harness status --session {s}' lists them"
                )
            raise SessionNotFoundError(f"no session {self.session!r} (looked in {self.dir})")

    def create(self, objective: str) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.objective_path, objective if objective.endswith("\n") else objective + "\n")
        except OSError as exc:
            raise JournalError(f"{self.dir}: cannot create the journal ({exc.strerror})") from None

    def read_summary(self) -> RunSummary:
        self.require()
        return load_model(self.summary_path, RunSummary)

    def write_summary(self, summary: RunSummary) -> None:
        summary.updated_at = utcnow()
        save_model(self.summary_path, summary)

    @property
    def race_path(self) -> Path:
        return self.dir / RACE

    def is_race(self) -> bool:
        """Whether this id names a race (its racers are the sessions `<id>-1` ... `<id>-N`)."""
        return self.race_path.exists()

    def read_race(self) -> RaceRecord:
        if not self.is_race():
            raise SessionNotFoundError(f"no race {self.session!r} (looked in {self.dir})")
        return load_model(self.race_path, RaceRecord)

    def write_race(self, race: RaceRecord) -> None:
        race.updated_at = utcnow()
        save_model(self.race_path, race)

    def read_iteration(self, n: int) -> IterationRecord:
        return load_model(self.iteration_path(n), IterationRecord)

    def write_iteration(self, record: IterationRecord) -> None:
        save_model(self.iteration_path(record.iteration), record)

    def iterations(self) -> list[IterationRecord]:
        return [self.read_iteration(n) for n in self._numbered(".json")]

    # control.json is written by `stop`/`note` and read-modified by the supervisor: every
    # read-modify-write holds an exclusive lock on a sidecar file so no update is lost.
    def read_control(self) -> ControlFile:
        if not self.control_path.exists():
            return ControlFile(session_id=self.session)
        return load_model(self.control_path, ControlFile)

    def update_control(self, change: Callable[[ControlFile], None]) -> ControlFile:
        with self._flock(self.dir / _CONTROL_LOCK, blocking=True):
            control = self.read_control()
            change(control)
            control.updated_at = utcnow()
            save_model(self.control_path, control)
            return control

    @property
    def notifications_path(self) -> Path:
        return self.dir / NOTIFICATIONS

    def notifications(self) -> NotificationLog:
        if not self.notifications_path.exists():
            return NotificationLog(session_id=self.session)
        return load_model(self.notifications_path, NotificationLog)

    def add_notification(self, record: NotificationRecord) -> None:
        """Append one notification's record (its senders run in threads of their own: each append is locked)."""
        with self._flock(self.dir / _NOTIFICATIONS_LOCK, blocking=True):
            log = self.notifications()
            log.notifications.append(record)
            log.updated_at = utcnow()
            save_model(self.notifications_path, log)

    # The supervisor lock is an open-file-description record lock (F_OFD_SETLK), not a flock: the
    # kernel answers "is it held?" (F_OFD_GETLK) without the asker taking it, so a reader polling
    # while a supervisor starts can never make that supervisor find its own session busy. The
    # kernel drops the lock with the last descriptor, i.e. when the supervisor dies.
    @property
    def _supervisor_lock_path(self) -> Path:
        return self.dir / _SUPERVISOR_LOCK

    @contextlib.contextmanager
    def supervisor_lock(self, *, settle: float = LOCK_SETTLE_SECONDS) -> Iterator[None]:
        """Held for as long as a supervisor drives this session: a second one is refused (after `settle`
        seconds of asking again: 0 for a caller that only looks whether a supervisor holds it)."""
        path = self._supervisor_lock_path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise JournalError(f"{path}: cannot open lock ({exc.strerror})") from None
        try:
            try:
                # Asked again for a moment: a process this one forks (git, a helper's client) holds a copy of
                # every open file description until it execs, the lock of a session created a moment ago too.
                for attempt in Retrying(stop=stop_after_delay(settle), wait=wait_fixed(0.05),
                                        retry=retry_if_exception(_busy), reraise=True):  # fmt: skip
                    with attempt:
                        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
            except OSError as exc:
                if _busy(exc):
                    raise SessionBusyError(
                        f"session {self.session!r} is already driven by another harness process"
                    ) from None
                raise JournalError(f"{path}: cannot lock ({exc.strerror})") from None
            yield
        finally:
            os.close(fd)

    def supervisor_alive(self) -> bool:
        """True when some process holds the supervisor lock of this session. Only asks the kernel:
        never takes the lock, so it cannot disturb a supervisor that is starting."""
        path = self._supervisor_lock_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise JournalError(f"{path}: cannot open lock ({exc.strerror})") from None
        try:
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
        except OSError as exc:
            raise JournalError(f"{path}: cannot query lock ({exc.strerror})") from None
        finally:
            os.close(fd)
        return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)

    @contextlib.contextmanager
    def notice_lock(self) -> Iterator[None]:
        """Held while a session's or a race's end is being told (runner/usecases/notify.py, `_tell`), so that a `resume`
        never sends it beside the race's supervisor; the kernel frees it when its process dies. SessionBusyError
        when another process holds it."""
        busy = f"the end of {self.session!r} is being told by another harness process"
        with self._flock(self.dir / _NOTICE_LOCK, blocking=False, busy=busy):
            yield

    @staticmethod
    @contextlib.contextmanager
    def _flock(path: Path, *, blocking: bool, busy: str = "") -> Iterator[None]:
        """An exclusive flock on `path`; not `blocking`: SessionBusyError(`busy`) while another holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise JournalError(f"{path}: cannot open lock ({exc.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                if _busy(exc):
                    raise SessionBusyError(busy) from None
                raise JournalError(f"{path}: cannot lock ({exc.strerror})") from None
            yield
        finally:
            os.close(fd)


# struct flock (Linux, 64-bit off_t): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("hhqqi4x")


def _whole_file(lock_type: int) -> bytes:
    return _FLOCK.pack(lock_type, os.SEEK_SET, 0, 0, 0)  # l_len 0: to the end; l_pid must be 0 (OFD)


def list_sessions(repo: Path) -> list[str]:
    root = sessions_root(repo)
    if not root.is_dir():
        return []
    return sorted(p.parents[2].name for p in root.glob(f"*/{JOURNAL_LEAF}/{SUMMARY}"))


def list_races(repo: Path) -> list[str]:
    """The races of the repository: the ids whose journal holds race.json (and no run-summary.json)."""
    root = sessions_root(repo)
    if not root.is_dir():
        return []
    return sorted(p.parents[2].name for p in root.glob(f"*/{JOURNAL_LEAF}/{RACE}"))


def ensure_excluded(git_common_dir: Path) -> None:
    """Keep journals out of git through .git/info/exclude (one line, added once)."""
    exclude = git_common_dir / "info" / "exclude"
    try:
        current = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if EXCLUDE_LINE in current.splitlines():
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        sep = "" if not current or current.endswith("\n") else "\n"
        write_atomic(exclude, f"{current}{sep}{EXCLUDE_LINE}\n")
    except OSError as exc:
        raise JournalError(f"{exclude}: cannot add the journal's exclude entry ({exc.strerror})") from None
