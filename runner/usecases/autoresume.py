"""What the user service does at login or boot (`harness service run-once`): resume, each in a detached
supervisor, the sessions of this machine (every repository) that the machine's going down interrupted, within a
restart budget per session.

A session qualifies when its supervisor is gone (its lock is free; a supervisor of another host is never judged
here), no stop was asked, the service has not given up on it, and its journal says it was live when it died:
`running` (the supervisor died without a word: power lost, a crash, kill -9) or `queued` (it died, or was
terminated, while waiting for a slot), or `interrupted` by SIGTERM (an orderly shutdown: stop reason
`terminated`) or by an infrastructure fault (the engine went away first). And it
died before this machine booted: its last sign of life (the summary's `updatedAt`, rewritten every 10 s by the
heartbeat) is older than the boot, so a session that died since (a kill -9 now, an OOM) is left to the user.
Sessions the user stopped, and sessions that ended, are never resumed. A racer is never resumed on its own (it
would run outside its race's judging and pooled budget): its race is, as `harness resume --session S` does (every
racer that had not ended, and the race's supervisor), once for all its racers that qualify, each of them counted
against its own budget; a racer over budget leaves the whole race to the user.

The ends still owed: an ended session (or race) whose supervisor died after it recorded its end but before it told
it to its --notify targets (`endNotice` pending) is not interrupted, and is never resumed here; its end is told,
once per run of the service, and nothing else is done. A session the service resumes tells its own end first.

The budget: a session resumed `resumes` times within `window` and found dead again is left `interrupted`, with
the reason in `autoResume.gaveUp`; a resume by hand clears it. Sessions are found as `harness list` finds them:
the copies on this machine (each run directory's owner.json names its repository) and the machine-wide queue.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from runner.backends import open_engine
from runner.backends.base import Backend
from runner.base.errors import EngineUnavailableError, HarnessError, SessionBusyError
from runner.record.journal import Journal
from runner.record.models import (
    AutoResume,
    CamelModel,
    ControlFile,
    EndNotice,
    RaceState,
    RunState,
    RunSummary,
    StopReason,
    utcnow,
)
from runner.usecases.detach import detach_session
from runner.usecases.repository import race_of
from runner.usecases.sessions import ResumeRequest, prepare_resume
from runner.usecases.status import machine_sessions

log = logging.getLogger(__name__)

ENGINE_WAIT_SECONDS = 300.0  # at boot the engine may still be starting
ENGINE_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Budget:
    """How often the service resumes one session before it gives up: `resumes` within `window_seconds`."""

    resumes: int = 3
    window_seconds: float = 24 * 3600.0


class AutoResumed(CamelModel):
    """One session the service looked at closely: resumed, given up on, or not resumed because of a fault."""

    session_id: str
    repo: str
    action: Literal["resumed", "told", "gave-up", "skipped", "failed"]
    reason: str  # why it qualified; what was told; why the service gave up; why it is left to the user; the fault
    pid: int | None = None  # the detached supervisor's


class AutoResumeReport(CamelModel):
    """What one run of the service did."""

    booted_at: datetime | None  # sessions whose supervisor died before it qualify (None: any)
    sessions_seen: int  # sessions with a copy or a place in the queue on this machine, looked at
    sessions: list[AutoResumed]


def boot_time() -> datetime | None:
    """When this machine booted: /proc/stat's btime (Linux), kern.boottime (macOS); None when neither says."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return datetime.fromtimestamp(int(line.split()[1]), UTC)
    except (OSError, ValueError):
        pass
    if sys.platform == "darwin":
        proc = subprocess.run(["sysctl", "-n", "kern.boottime"], capture_output=True, text=True, check=False)
        found = re.search(r"sec = (\d+)", proc.stdout)
        if found:
            return datetime.fromtimestamp(int(found.group(1)), UTC)
    return None


def why_resume(summary: RunSummary, control: ControlFile, *, alive: bool, booted_at: datetime | None) -> str | None:
    """Why the machine's going down interrupted this session; None when it is not one for the service."""
    if alive or control.stop_requested or summary.auto_resume.gave_up is not None:
        return None
    if summary.supervisor is not None and summary.supervisor.host != socket.gethostname():
        return None  # another host's (a shared filesystem): its heartbeat is its own business
    if booted_at is not None and summary.updated_at >= booted_at:
        return None  # it died since this boot: not the machine going down
    if summary.status is RunState.RUNNING:
        return "its supervisor died while it ran"
    if summary.status is RunState.QUEUED and summary.supervisor is not None:
        return "its supervisor died while it waited in the queue"
    if summary.status is RunState.QUEUED and summary.stop_reason is StopReason.TERMINATED:
        return "its supervisor was terminated (SIGTERM) while it waited in the queue"
    if summary.status is RunState.INTERRUPTED and summary.stop_reason is StopReason.TERMINATED:
        return "its supervisor was terminated (SIGTERM) while it ran"
    if summary.status is RunState.INTERRUPTED and summary.stop_reason is StopReason.INFRASTRUCTURE:
        return f"an infrastructure fault ended it: {summary.error or 'unknown'}"
    return None


def resume_interrupted(
    *,
    booted_at: datetime | None,
    budget: Budget | None = None,
    engine_wait: float = ENGINE_WAIT_SECONDS,
) -> AutoResumeReport:
    """Resume every qualifying session of this machine, detached; give up on those over their budget."""
    budget = budget or Budget()
    sessions = machine_sessions()
    report = AutoResumeReport(booted_at=booted_at, sessions_seen=len(sessions), sessions=[])
    engines: dict[str, Backend] = {}
    races: dict[tuple[str, str], list[tuple[Journal, str]]] = {}  # (repo, race) -> its racers that qualify
    looked: set[tuple[str, str]] = set()  # (repo, race) whose end still owed was looked at
    for repo, session in sessions:
        journal = Journal.for_repo(Path(repo), session)
        if not journal.exists():
            continue  # discarded, or its journal moved: nothing to resume
        try:
            summary, control, alive = journal.read_summary(), journal.read_control(), journal.supervisor_alive()
            reason = why_resume(summary, control, alive=alive, booted_at=booted_at)
            if reason is None:
                report.sessions += _tell_owed(repo, journal, summary, alive, looked)
                continue
            log.info("session %s (%s): %s", session, repo, reason)
            race = race_of(Path(repo), session)
            if race is not None:  # resumed with its race, below: once for all its racers
                races.setdefault((repo, race), []).append((journal, reason))
                continue
            entry = _resume_one(repo, journal, summary, reason, budget, engines, engine_wait)
        except HarnessError as exc:
            entry = AutoResumed(session_id=session, repo=repo, action="failed", reason=exc.message)
        report.sessions.append(entry)
    for (repo, race), racers in races.items():
        try:
            report.sessions += _resume_race(repo, race, racers, budget)
        except HarnessError as exc:
            report.sessions += [AutoResumed(session_id=j.session, repo=repo, action="failed", reason=exc.message)
                                for j, _ in racers]  # fmt: skip
    return report


def _resume_race(repo: str, race: str, racers: list[tuple[Journal, str]], budget: Budget) -> list[AutoResumed]:
    """Resume the race of `racers` (each found dead by the machine going down), detached, as `harness resume
    --session RACE` does; unless its supervisor still runs, or one of them is over its budget."""
    from runner.usecases.race import RaceResume, detach_race, prepare_race_resume, race_journal

    def entries(
        action: Literal["resumed", "gave-up", "skipped"], why: str, pid: int | None = None
    ) -> list[AutoResumed]:
        return [AutoResumed(session_id=j.session, repo=repo, action=action, reason=f"{reason}; {why}", pid=pid)
                for j, reason in racers]  # fmt: skip

    if race_journal(Path(repo), race).supervisor_alive():
        return entries("skipped", f"a racer of race {race!r}, whose supervisor runs and judges it")
    now = utcnow()
    over = [j.session for j, _ in racers if _over_budget(j, budget, now)]
    if over:
        for journal, _ in racers:
            if journal.session in over:
                _give_up(journal, budget, now)
        return entries("gave-up", f"a racer of race {race!r}: {', '.join(over)} died again after "
                       f"{budget.resumes} resumes within {_hours(budget.window_seconds)}: resume the race by hand "
                       f"('harness resume --session {race}') once the cause is found")  # fmt: skip
    for journal, _ in racers:
        _count_resume(journal, budget, now)
    prepare_race_resume(RaceResume(repo=Path(repo), race=race, resume=ResumeRequest(session=race, automatic=True)))
    detached = detach_race(Path(repo), race)
    return entries("resumed", f"with its race {race!r}", detached.pid)


def _resume_one(
    repo: str,
    journal: Journal,
    summary: RunSummary,
    reason: str,
    budget: Budget,
    engines: dict[str, Backend],
    engine_wait: float,
) -> AutoResumed:
    engine = engines.get(summary.backend.type)
    if engine is None:
        engine = _engine_when_up(summary, engine_wait)
        engines[summary.backend.type] = engine
    now = utcnow()
    if _over_budget(journal, budget, now):
        gave_up = _give_up(journal, budget, now)
        return AutoResumed(session_id=journal.session, repo=repo, action="gave-up", reason=gave_up)
    _count_resume(journal, budget, now)
    request = ResumeRequest(session=journal.session, repo=Path(repo), automatic=True)
    prepared = prepare_resume(engine, request, tell_owed=True)
    if prepared is None:  # nothing more to run: only its end, still owed, was told
        told = _told(journal.read_summary().end_notice)
        return AutoResumed(session_id=journal.session, repo=repo, action="told", reason=f"{reason}; {told}")
    detached = detach_session(prepared)
    return AutoResumed(session_id=journal.session, repo=repo, action="resumed", reason=reason, pid=detached.pid)


def _pending(notice: EndNotice | None) -> bool:
    """An end recorded as owed and never sent: its supervisor died before it told it (one that a target failed
    to take is left to `resume`: the service would try a broken target again at every login)."""
    return notice is not None and notice.state == "pending" and bool(notice.owed)


def _told(notice: EndNotice | None) -> str:
    if notice is None or not notice.owed:
        return "its end, still owed to its --notify targets, was told"
    return f"its end was still owed to its --notify targets: {len(notice.owed)} did not take it (notifications.json)"


def _tell_owed(
    repo: str, journal: Journal, summary: RunSummary, alive: bool, looked: set[tuple[str, str]]
) -> list[AutoResumed]:
    """Tell the ends still owed of an ended session whose supervisor is gone, and of its race (once per race),
    resuming nothing; a teller busy meanwhile (a `resume`, the race's supervisor) is left to it."""
    from runner.usecases.notify import tell_race_end, tell_session_end
    from runner.usecases.race import race_journal

    told: list[AutoResumed] = []
    if not alive and _pending(summary.end_notice):
        with contextlib.suppress(SessionBusyError), journal.supervisor_lock():
            notice = tell_session_end(journal)
            told.append(AutoResumed(session_id=journal.session, repo=repo, action="told", reason=_told(notice)))
    try:
        race = race_of(Path(repo), journal.session)
        if race is None or (repo, race) in looked:
            return told
        looked.add((repo, race))
        race_log = race_journal(Path(repo), race)
        record = race_log.read_race()
    except HarnessError as exc:  # a race that cannot be read: nothing of it to tell (nor to resume)
        log.warning("session %s (%s): its race: %s", journal.session, repo, exc.message)
        return told
    if record.state is RaceState.FINISHED and _pending(record.end_notice) and not race_log.supervisor_alive():
        with contextlib.suppress(SessionBusyError):
            notice = tell_race_end(race_log)
            told.append(AutoResumed(session_id=race, repo=repo, action="told", reason=f"race: {_told(notice)}"))
    return told


def _recent(summary: RunSummary, budget: Budget, now: datetime) -> list[datetime]:
    window = timedelta(seconds=budget.window_seconds)
    return [at for at in summary.auto_resume.resumed_at if now - at < window]


def _over_budget(journal: Journal, budget: Budget, now: datetime) -> bool:
    return len(_recent(journal.read_summary(), budget, now)) >= budget.resumes


def _give_up(journal: Journal, budget: Budget, now: datetime) -> str:
    """Leave the session interrupted with the reason (the service will not resume it again); the reason."""
    with journal.supervisor_lock():  # refused (exit 10) if someone resumed it meanwhile
        summary = journal.read_summary()
        recent = _recent(summary, budget, now)
        gave_up = (
            f"the service resumed it {len(recent)} times within {_hours(budget.window_seconds)} and it died "
            "again each time: resume it by hand once the cause is found (supervisor.log)"
        )
        summary.auto_resume = AutoResume(resumed_at=recent, gave_up=gave_up)
        if summary.status is RunState.RUNNING:
            summary.status, summary.stop_reason = RunState.INTERRUPTED, StopReason.SUPERVISOR_GONE
        summary.supervisor = None
        summary.finished_at = summary.finished_at or now
        journal.write_summary(summary)
    return gave_up


def _count_resume(journal: Journal, budget: Budget, now: datetime) -> None:
    """One more automatic resume of the session, in its journal (what its budget counts)."""
    with journal.supervisor_lock():  # refused (exit 10) if someone resumed it meanwhile
        summary = journal.read_summary()
        summary.auto_resume = AutoResume(resumed_at=[*_recent(summary, budget, now), now])
        journal.write_summary(summary)


def _engine_when_up(summary: RunSummary, wait: float) -> Backend:
    """The session's engine once it answers: at boot the Docker daemon may start after the user's service."""
    engine = open_engine(summary.backend)
    deadline = utcnow() + timedelta(seconds=wait)
    while True:
        try:
            engine.check()
        except EngineUnavailableError as exc:
            if utcnow() >= deadline:
                raise EngineUnavailableError(f"the engine did not answer within {wait:g}s: {exc.message}") from None
            log.info("waiting for the engine: %s", exc.message)
            time.sleep(ENGINE_POLL_SECONDS)
        else:
            return engine


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds:g}s"
