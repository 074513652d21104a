"""Core of `harness logs`: an iteration's captured output, neutralised for a terminal, or followed live; given a
race's id, every racer's, each line prefixed with the racer's id."""

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
    for as long as a supervisor drives the session (a race: its racers, see race_logs)."""
    with open_session(request.repo, request.session) as opened:
        journal = opened.journal
    if not journal.exists() and journal.is_race():
        yield from race_logs(journal, request)
        return
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


@dataclass
class _Racer:
    """One racer's output read in whole lines: its latest iteration's log (or the one asked for), then, when
    following, each next iteration's as it starts. A racer with no log yet is looked at again each pass."""

    session: str
    journal: Journal
    iteration: int | None  # --iteration: this one only
    n: int | None = None  # the iteration being read (None: none yet)
    offset: int = 0
    partial: bytes = b""  # the start of a line whose end is not written yet

    def read(self, *, follow: bool) -> list[str]:
        found: list[str] = []
        if self.n is None:
            self.n = self.iteration if self.iteration is not None else _latest(self.journal)
            if self.n is None:
                return found
            found.append(f"--- iteration {self.n} ---")
        n = self.n
        while True:
            found += self._lines(n)
            if not follow or self.iteration is not None or not self.journal.log_path(n + 1).exists():
                return found
            found += self.rest()  # the next iteration started: this one's log is whole
            n = self.n = n + 1
            self.offset = 0
            found.append(f"--- iteration {n} ---")

    def _lines(self, n: int) -> list[str]:
        try:
            with self.journal.log_path(n).open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [neutralise(line.decode("utf-8", "replace")) for line in lines]

    def rest(self) -> list[str]:
        """The last line, written without its newline."""
        rest, self.partial = self.partial, b""
        return [neutralise(rest.decode("utf-8", "replace"))] if rest else []


def race_logs(journal: Journal, request: LogsRequest) -> Iterator[str]:
    """`logs --session S` of a race: each racer's latest iteration (or --iteration N), in the racers' order, every
    line prefixed with the racer's id. With `follow`, the racers' lines as they arrive, interleaved, each racer
    followed from its latest iteration (one not started yet once it starts), until neither the race's supervisor
    nor any racer's runs."""
    record = journal.read_race()
    top = Path(record.repo)
    racers = [_Racer(r.session_id, Journal.for_repo(top, r.session_id), request.iteration) for r in record.racers]
    width = max(len(r.session) for r in racers)

    def text(racer: _Racer, lines: list[str]) -> str:
        return "".join(f"{racer.session.ljust(width)} | {line}\n" for line in lines)

    if not request.follow:
        n = request.iteration
        if n is not None and not any(r.journal.log_path(n).exists() for r in racers):
            raise UsageError(f"no racer of race {request.session!r} has an iteration {n}")
        for racer in racers:
            if not racer.journal.exists():
                yield text(racer, ["--- discarded: its journal is gone ---"])
            elif n is not None and not racer.journal.log_path(n).exists():
                yield text(racer, [f"--- no iteration {n} ---"])
            else:
                yield text(racer, racer.read(follow=False) + racer.rest() or ["--- no output yet ---"])
        return
    finishing = False
    while True:
        for racer in racers:
            found = text(racer, racer.read(follow=True))
            if found:
                yield found
        if journal.supervisor_alive() or any(r.journal.supervisor_alive() for r in racers):
            finishing = False
            time.sleep(FOLLOW_POLL_SECONDS)
        elif finishing:
            for racer in racers:
                found = text(racer, racer.rest())
                if found:
                    yield found
            return
        else:
            finishing = True  # one more pass for what the supervisors wrote last
