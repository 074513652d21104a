"""Core of `harness logs`: an iteration's captured output, neutralised for a terminal, or followed live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.base.errors import UsageError
from runner.base.output import neutralise
from runner.record.journal import Journal
from runner.usecases.repository import open_session

FOLLOW_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LogsRequest:
    repo: Path
    session: str
    iteration: int | None = None  # None: the latest
    follow: bool = False


def _latest(journal: Journal) -> int | None:
    numbers = journal.logged_iterations()
    return numbers[-1] if numbers else None


def read_logs(request: LogsRequest) -> Iterator[str]:
    """Yield the log text in pieces; with `follow`, keep yielding new output (and new iterations)
    for as long as a supervisor drives the session."""
    with open_session(request.repo, request.session) as opened:
        journal = opened.journal
    journal.require()
    n = request.iteration if request.iteration is not None else _latest(journal)
    if n is None:
        if not request.follow:
            return
        n = 1
    if request.iteration is not None and not journal.log_path(n).exists() and not request.follow:
        raise UsageError(f"session {request.session!r} has no iteration {n}")
    offset = 0
    finishing = False
    while True:
        path = journal.log_path(n)
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            if data:
                offset += len(data)
                yield neutralise(data.decode("utf-8", "replace"))
        if not request.follow:
            return
        if journal.log_path(n + 1).exists() and request.iteration is None:
            n, offset = n + 1, 0  # the next iteration started: follow it
            yield f"\n--- iteration {n} ---\n"
            continue
        if not journal.supervisor_alive():
            if finishing:
                return
            finishing = True  # one more pass for what the supervisor wrote last
            continue
        time.sleep(FOLLOW_POLL_SECONDS)
