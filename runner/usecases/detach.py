"""`--detach`: drive a session in a process of its own, which outlives the terminal."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from runner.base.errors import HarnessError, InvalidStateError
from runner.record.journal import Journal
from runner.record.models import CamelModel, RunSummary


class Detached(CamelModel):
    """What `--detach` returns at once: the session keeps running in its own process."""

    session_id: str
    pid: int
    journal_dir: str
    supervisor_log: str


DETACH_START_SECONDS = 30.0


def detach_session(summary: RunSummary) -> Detached:
    """Drive the session in a new process (own session and process group, output to the journal)
    and return once that process has named itself in the journal, where it also said whether the session runs or
    waits in the queue (so `status` right after says which)."""
    journal = Journal.for_repo(Path(summary.repo), summary.session_id)
    log_path = journal.supervisor_log_path
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "runner", "_supervise", "--repo", summary.repo, "--session", summary.session_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=summary.repo,
            start_new_session=True,  # survives the terminal: no SIGHUP, no Ctrl-C of the shell
            close_fds=True,
        )
    deadline = time.monotonic() + DETACH_START_SECONDS
    while not _named(journal, child.pid):
        if child.poll() is not None and not _named(journal, child.pid):  # ended before it named itself
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise InvalidStateError(f"the detached supervisor exited at once: {tail[0]}")
        if time.monotonic() > deadline:
            break  # still starting (a slow engine): it holds the lock soon; status will tell
        time.sleep(0.05)
    return Detached(
        session_id=summary.session_id, pid=child.pid, journal_dir=str(journal.dir), supervisor_log=str(log_path)
    )


def _named(journal: Journal, pid: int) -> bool:
    """The journal names `pid` as the session's supervisor (its first write, under the session's lock)."""
    try:
        info = journal.read_summary().supervisor
    except HarnessError:  # not readable yet: asked again
        return False
    return info is not None and info.pid == pid
