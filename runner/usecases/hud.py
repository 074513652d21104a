"""Core of `harness hud`: one consistent snapshot of a session for the live dashboard (the CLI redraws it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from runner.backends.base import Backend, ContainerStats, Stats
from runner.base.errors import HarnessError
from runner.base.names import validate_session
from runner.base.output import neutralise
from runner.base.paths import repo_key
from runner.loop.workspace import RunDir
from runner.record.gitops import HostGit
from runner.record.journal import Journal
from runner.record.models import CamelModel, IterationRecord, Note, Outcome, RunState, RunSummary, utcnow
from runner.sandbox.container import session_labels
from runner.usecases.repository import open_session
from runner.usecases.status import SessionStatus, limit_wait_text, session_status

LOG_TAIL_BYTES = 16 * 1024
# The supervisor writes an iteration's record, then the summary, then (at the end) the final
# state: a snapshot read between two of those writes is read again, a bounded number of times.
SNAPSHOT_ATTEMPTS = 5
SNAPSHOT_RETRY_SECONDS = 0.05


class ContainerUse(CamelModel):
    """The running agent container's resources against its limits (None: no limit)."""

    container_id: str
    cpus: float  # CPUs in use: the rate since the previous sample, else the average since the start
    cpus_limit: float | None
    memory_bytes: int
    memory_limit_bytes: int | None
    pids: int | None
    pids_limit: int | None
    cpu_seconds: float
    read_at: datetime


class HudSnapshot(CamelModel):
    """Everything one frame of the hud shows, read at one moment: the header and the table agree."""

    status: SessionStatus
    iterations: list[IterationRecord]
    current_iteration: int | None  # whose output `log_tail` shows
    log_tail: str  # neutralised: safe to print
    taken_at: datetime
    elapsed_seconds: float  # since the supervisor started driving (since creation once it ended)
    max_time_seconds: float | None
    time_left_seconds: float | None  # of --max-time, while a supervisor drives the run
    running_iteration: int | None = None  # the iteration whose agent runs now
    iteration_elapsed_seconds: float | None = None
    iteration_timeout_seconds: float | None = None  # the running iteration's own wall clock
    backoff_until: datetime | None = None  # waiting out a rate limit until then
    usage_limit: str | None = None  # 'waiting for the limit to reset at 04:10 (5-hour window)'
    container: ContainerUse | None = None
    container_error: str | None = None  # why the container's use is not known
    notes_waiting: list[Note] = Field(default_factory=list)  # queued for the next iteration's prompt


@dataclass(frozen=True)
class HudRequest:
    repo: Path
    session: str
    lines: int = 15


def _consistent(summary: RunSummary, status: SessionStatus, iterations: list[IterationRecord]) -> bool:
    """The summary, the status built from it and the iteration records tell the same moment."""
    last = iterations[-1] if iterations else None
    if status.updated_at != summary.updated_at or (last.iteration if last else 0) != summary.iteration_count:
        return False
    # A done or blocked iteration ends the run: 'running' above it is the moment before the final save.
    return not (summary.status is RunState.RUNNING and last and last.outcome in {Outcome.DONE, Outcome.BLOCKED})


def _read(
    top: Path, session: str, git: HostGit, journal: Journal
) -> tuple[RunSummary, SessionStatus, list[IterationRecord]]:
    for attempt in range(SNAPSHOT_ATTEMPTS):
        iterations = journal.iterations()
        summary = journal.read_summary()
        status = session_status(top, session, git)
        if _consistent(summary, status, iterations) or attempt == SNAPSHOT_ATTEMPTS - 1:
            break
        time.sleep(SNAPSHOT_RETRY_SECONDS)
    # Whatever the retries gave, the header counts what the table shows.
    count = max(status.iteration_count, iterations[-1].iteration if iterations else 0)
    if count != status.iteration_count:
        status = status.model_copy(update={"iteration_count": count, "last_outcome": iterations[-1].outcome})
    return summary, status, iterations


def _tail(path: Path, lines: int) -> str:
    with path.open("rb") as handle:
        size = path.stat().st_size
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(neutralise(text).splitlines()[-lines:])


def _use(sample: ContainerStats, previous: ContainerUse | None) -> ContainerUse:
    cpus = 0.0
    if previous is not None and previous.container_id == sample.container_id and sample.read_at > previous.read_at:
        cpus = (sample.cpu_seconds - previous.cpu_seconds) / (sample.read_at - previous.read_at).total_seconds()
    elif sample.started_at is not None and sample.read_at > sample.started_at:
        cpus = sample.cpu_seconds / (sample.read_at - sample.started_at).total_seconds()
    return ContainerUse(
        container_id=sample.container_id,
        cpus=max(0.0, cpus),
        cpus_limit=sample.cpus_limit,
        memory_bytes=sample.memory_bytes,
        memory_limit_bytes=sample.memory_limit_bytes,
        pids=sample.pids,
        pids_limit=sample.pids_limit,
        cpu_seconds=sample.cpu_seconds,
        read_at=sample.read_at,
    )


def _agent_sample(backend: Backend, top: Path, session: str) -> ContainerStats | None:
    """The session's running agent container, found by its labels, sampled once (None: no sample, or an
    engine that takes none)."""
    if not isinstance(backend, Stats):
        return None
    for container_id in sorted(backend.list_containers(session_labels(session, repo_key(top), "agent"))):
        sample = backend.stats(container_id)
        if sample is not None:
            return sample
    return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def snapshot(request: HudRequest, backend: Backend | None = None, previous: HudSnapshot | None = None) -> HudSnapshot:
    """One frame of the hud. `backend` samples the agent container (None: no sample); `previous`
    is the last frame, for the CPU rate between the two."""
    session = validate_session(request.session)
    with open_session(request.repo, session) as opened:
        top, journal = opened.top, opened.journal
        summary, status, iterations = _read(top, session, opened.git, journal)
    now = utcnow()
    logged = journal.logged_iterations()
    current = logged[-1] if logged else None
    notes = [note for note in journal.read_control().notes if note.consumed_at is None]

    running = status.status is RunState.RUNNING and summary.supervisor is not None
    begun = summary.supervisor.started_at if running and summary.supervisor else summary.created_at
    elapsed = ((now if running else summary.finished_at or summary.updated_at) - begun).total_seconds()
    max_time = summary.limits.max_time_seconds
    snap = HudSnapshot(
        status=status,
        iterations=iterations,
        current_iteration=current,
        log_tail=_tail(journal.log_path(current), request.lines) if current is not None else "",
        taken_at=now,
        elapsed_seconds=max(0.0, elapsed),
        max_time_seconds=max_time,
        time_left_seconds=max(0.0, max_time - elapsed) if running and max_time is not None else None,
        notes_waiting=notes,
    )
    if not running:
        return snap
    until = summary.backoff.until
    snap.backoff_until = until if until is not None and until > now else None
    if summary.usage_limit.until is not None and summary.usage_limit.until > now:
        snap.usage_limit = limit_wait_text(summary.usage_limit)
    n = summary.iteration_count + 1
    if current != n:
        return snap  # between iterations (or waiting out a rate limit): no agent runs
    snap.running_iteration = n
    sample = None
    if backend is not None:
        try:
            sample = _agent_sample(backend, top, session)
        except HarnessError as exc:
            snap.container_error = exc.message
    if sample is not None:
        snap.container = _use(sample, previous.container if previous else None)
    # The prompt is written just before the agent starts (host side, read-only to the agent).
    started = sample.started_at if sample and sample.started_at else None
    started = started or _mtime(RunDir(Path(summary.run_dir)).prompt / "prompt.md")
    if started is not None:
        snap.iteration_elapsed_seconds = max(0.0, (now - started).total_seconds())
        timeout = summary.limits.iteration_timeout_seconds
        if max_time is not None:  # the supervisor cuts the last iteration to the time left
            timeout = max(1.0, min(timeout, max_time - (started - begun).total_seconds()))
        snap.iteration_timeout_seconds = timeout
    return snap
