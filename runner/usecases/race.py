"""`harness race`: N ordinary sessions `S-1 ... S-N` on one objective, judged by one check, and the race's
own supervisor that starts them, watches their journals, declares the winner(s) and stops the others.

The race is a record, race.json, in the journal of its own id S (which has no run-summary.json, so it is no
session); the racers are sessions like any other, each with its own journal, copy and branch `harness/S-k`,
created by the same planning as `run` and driven by their own detached supervisors (through the queue, when
one holds them). The race's supervisor holds the supervisor lock of S's journal, so two cannot drive one
race, and it keeps nothing in memory that the journals do not say: killed, it is started again by
`resume --session S`, which resumes every racer that had not ended first.

Why one module of this size: it is the life of one record, race.json, under its one lock: the race as asked and
planned (`--dry-run` prints that plan), its creation, its supervisor, its resume and its stop each read and
write that record and decide the racers' fate by the same rules (who is started, who won, who is stopped);
what only reads it (`status`, `report`, `merge`, `discard` of a race) is runner/usecases/race_status.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from runner.backends import open_engine
from runner.backends.base import Backend
from runner.base.errors import HarnessError, InvalidStateError, SessionBusyError, SessionExistsError, UsageError
from runner.base.names import validate_session
from runner.base.paths import repo_key
from runner.record.gitops import HostGit
from runner.record.journal import Journal
from runner.record.models import (
    NotifyInfo,
    Racer,
    RaceRecord,
    RaceState,
    RunState,
    RunSummary,
    SupervisorInfo,
    utcnow,
)
from runner.record.notify import notify_info, notify_plan, parse_events, racer_events, save_targets
from runner.usecases.control import StopRequest, StopResult, leave_queue, request_stop
from runner.usecases.detach import DETACH_START_SECONDS, Detached, detach_session
from runner.usecases.repository import open_session
from runner.usecases.status import effective_state

if TYPE_CHECKING:  # `status` of a race reads journals only: the planning and the loop are imported when used
    from runner.usecases.plan import RunPlan, RunRequest
    from runner.usecases.sessions import ResumeRequest

log = logging.getLogger(__name__)

MAX_RACERS = 16
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RaceRequest:
    """`harness race`: the options every racer shares (as `run` takes them, `base.session` the race's id), and
    how the racers differ and are judged."""

    base: RunRequest
    agents: tuple[str, ...] = ()  # --agents: one racer per agent
    n: int | None = None  # --n: N racers of one agent
    models: tuple[str, ...] = ()  # --models: one per racer, in turn
    agent_given: bool = False  # --agent or --agent-cmd was on the command line
    model_given: bool = False  # --model was on the command line
    judge: Literal["first", "all"] = "first"
    first: bool = False
    budget: Literal["per-racer", "pooled"] = "per-racer"


def racer_id(race: str, k: int) -> str:
    return f"{race}-{k}"


def racer_requests(request: RaceRequest) -> list[RunRequest]:
    """One `run` request per racer, after checking that the options agree (a one-line UsageError if not)."""
    base = request.base
    race = validate_session(base.session)
    if request.judge not in ("first", "all"):
        raise UsageError(f"--judge: {request.judge!r} is not one of first, all")
    if request.budget not in ("per-racer", "pooled"):
        raise UsageError(f"--budget: {request.budget!r} is not one of per-racer, pooled")
    if request.first and request.judge == "all":
        raise UsageError("--first stops the others once one racer wins: it cannot go with --judge all")
    if base.check is None:
        raise UsageError("a race needs --check CMD: the check judges the racers")
    if request.budget == "pooled" and base.limits.max_cost is None:
        raise UsageError("--budget pooled needs --max-cost USD (the pool)")
    if bool(request.agents) == (request.n is not None):
        raise UsageError("give exactly one of --agents A,B,... (one racer each) or --n N (N racers of one agent)")
    if request.agents and request.agent_given:
        raise UsageError("--agents gives each racer its agent: it cannot go with --agent or --agent-cmd")
    race_notify(request)  # a target or event that is not one refuses the race before anything is created
    n = len(request.agents) if request.agents else (request.n or 0)
    if not 2 <= n <= MAX_RACERS:
        raise UsageError(f"a race has 2 to {MAX_RACERS} racers, not {n}")
    if request.models and request.model_given:
        raise UsageError("--models gives each racer its model: it cannot go with --model")
    if request.models and len(request.models) != n:
        raise UsageError(f"--models gives one model per racer: {len(request.models)} given for {n} racers")
    notify, on = _racer_notify(request)
    found = []
    for k in range(1, n + 1):
        # Every racer's copy is made from the repository's one shared seed (runner/loop/seed.py), so that the
        # set-up does not multiply with the racers.
        one = replace(base, session=validate_session(racer_id(race, k)), seed=True, notify=notify, notify_on=on)
        if request.agents:
            one = replace(one, agent=request.agents[k - 1], agent_cmd=None)
        if request.models:
            one = replace(one, model=request.models[k - 1])
        found.append(one)
    return found


def race_notify(request: RaceRequest) -> NotifyInfo | None:
    """The race's notifications (--notify, --notify-on), checked: a one-line UsageError naming no secret."""
    return notify_plan(request.base.notify, request.base.notify_on)


def _racer_notify(request: RaceRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A racer's targets and events (--notify, --notify-on): the race's, less `end` (the race tells its own end,
    once); none when only `end` was chosen."""
    base = request.base
    events = racer_events(parse_events(base.notify_on)) if base.notify else []
    if not events:
        return (), ("end",)
    return base.notify, tuple(event.value for event in events)


def _refuse_taken(top: Path, race: str) -> None:
    journal = Journal.for_repo(top, race)
    if journal.dir.exists() and any(journal.dir.iterdir()):
        kind = "race" if journal.is_race() else "session"
        raise SessionExistsError(f"a {kind} {race!r} already exists ({journal.dir}): pick another name")


@dataclass(frozen=True)
class RacePlan:
    """What `race` will do: the race as asked, and every racer's plan as `run --dry-run` prints it."""

    request: RaceRequest  # never printed whole: its --notify targets can hold secrets
    repo: Path  # the repository's top
    racers: list[RunPlan]
    notify: NotifyInfo | None  # the race's own notifications (its end), redacted


def plan_race(backend: Backend, request: RaceRequest) -> RacePlan:
    """Check the race and plan every racer, as `run` plans a session: every refusal happens here. Creates
    nothing (no journal, copy, branch or seed). On an engine whose mounts are not the host's directories
    (Kubernetes) every racer's copy is a full clone of its own: no seed is shared (runner/loop/seed.py)."""
    from runner.usecases.plan import plan_run

    requests = racer_requests(request)
    with HostGit(request.base.repo.resolve()) as git:
        top = git.info().top
    _refuse_taken(top, request.base.session)
    racers = [plan_run(backend, r) for r in requests]
    return RacePlan(request=request, repo=top, racers=racers, notify=race_notify(request))


def create_race(backend: Backend, request: RaceRequest) -> RaceRecord:
    """Plan every racer (any refusal before anything is created), then create the racers' sessions and the
    race's record. Nothing runs yet: drive_race (or detach_race) starts the racers."""
    from runner.usecases.sessions import create_planned

    planned = plan_race(backend, request)
    race, top, plans, notify = request.base.session, planned.repo, planned.racers, planned.notify
    journal = Journal.for_repo(top, race)
    journal.create(plans[0].objective)
    with journal.supervisor_lock():
        if notify is not None:  # the targets as given stay out of the journal (runner/record/notify.py)
            save_targets(top, race, request.base.notify, notify.events, journal_dir=journal.dir)
        targets, _ = _racer_notify(request)  # every racer's: the race's, when it chose more than its end
        summaries = [create_planned(backend, plan, notify=targets) for plan in plans]
        record = RaceRecord(
            session_id=race, objective=plans[0].objective, repo=str(top),
            check_command=plans[0].check or "",
            racers=[Racer(session_id=s.session_id, agent=s.agent.name, model=s.agent.model) for s in summaries],
            judge=request.judge, first=request.first, budget=request.budget,
            max_cost_usd=request.base.limits.max_cost, notify=notify,
        )  # fmt: skip
        journal.write_race(record)
    return record


def race_journal(repo: Path, race: str) -> Journal:
    """The journal of the race `race`, which must exist."""
    with open_session(repo, race) as opened:
        journal = opened.journal
    journal.read_race()  # refuses what is no race
    return journal


# ------------------------------------------------------------------------------------------- the race's supervisor


@dataclass
class RacerView:
    """One racer as its journal shows it now."""

    racer: Racer
    journal: Journal
    summary: RunSummary | None  # None: its journal is gone (discarded)
    state: RunState | None
    alive: bool

    @property
    def ended(self) -> bool:
        return self.racer.started and not self.alive

    def passed(self) -> bool:
        """It ended completed, and the check of its last iteration passed (the journal's CheckResult)."""
        s = self.summary
        if s is None or not self.ended or self.state is not RunState.COMPLETED or s.last_iteration is None:
            return False
        try:
            check = self.journal.read_iteration(s.last_iteration).check
        except HarnessError:
            return False
        return check is not None and check.passed


def look(top: Path, record: RaceRecord, starting: frozenset[str] = frozenset()) -> list[RacerView]:
    """Each racer as its journal shows it; `starting`: racers whose supervisor process (started by this race's
    supervisor) still runs, so they are alive even before it holds their lock (a slow start)."""
    views = []
    for racer in record.racers:
        journal = Journal.for_repo(top, racer.session_id)
        try:
            summary = journal.read_summary()
        except HarnessError:
            views.append(RacerView(racer, journal, None, None, alive=journal.supervisor_alive()))
            continue
        state, alive = effective_state(summary, journal)
        views.append(RacerView(racer, journal, summary, state, alive or racer.session_id in starting))
    return views


def _running_children(children: dict[str, int]) -> frozenset[str]:
    """The racers whose supervisor, a child of this process, has not exited (reaping those that have)."""
    for session, pid in list(children.items()):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            del children[session]
    return frozenset(children)


def judge(record: RaceRecord, views: list[RacerView]) -> list[str]:
    """The racers that win now and had not won before, in the order they finished (pure: the journals say it
    all, so a restarted race supervisor judges what happened while none ran)."""
    passed = sorted((v for v in views if v.passed()), key=_finished)
    new = [v.racer.session_id for v in passed if v.racer.session_id not in record.winners]
    if record.judge == "first":
        return new[:1] if not record.winners else []
    return new


def _finished(view: RacerView) -> datetime:
    return (view.summary.finished_at if view.summary else None) or utcnow()


def spent(views: list[RacerView]) -> float:
    return sum(v.summary.usage.cost_usd for v in views if v.summary is not None)


def _stop(top: Path, view: RacerView, note: str) -> None:
    view.racer.stopped_by_race = True
    if view.summary is not None:
        request_stop(StopRequest(repo=top, session=view.racer.session_id, note=note, now=True))


def drive_race(repo: Path, race: str, *, stop_event: threading.Event | None = None) -> RaceRecord:
    """Hold the race's lock, start every racer not started yet (in order, each detached: the queue keeps that
    order), and watch them until all have ended: declare the winner(s), stop the others with --first, stop
    everyone when a pooled budget is spent. A race that has finished is never driven again: only its end, if still
    owed to a target (race.json's `endNotice`), is told."""
    journal = race_journal(repo, race)
    if journal.read_race().state is RaceState.FINISHED:
        return _tell_end(journal)
    top = Path(journal.read_race().repo)
    with journal.supervisor_lock():
        record = journal.read_race()
        record.supervisor = SupervisorInfo(pid=os.getpid(), host=socket.gethostname())
        record.state, record.finished_at = RaceState.RUNNING, None  # an end reason already met still holds
        journal.write_race(record)
        children: dict[str, int] = {}  # racer -> the pid of the supervisor started here
        pending = [r for r in record.racers if not r.started]
        while True:
            # One racer started a pass, in order, so that the racers already running are watched (a winner, the
            # pooled budget) while the others start; none once the race has come to its end.
            if pending and record.end_reason is None and not (stop_event is not None and stop_event.is_set()):
                racer = pending.pop(0)
                summary = Journal.for_repo(top, racer.session_id).read_summary()
                racer.started = True
                journal.write_race(record)
                # A racer that cannot start: its journal tells why (`status` shows it); the race goes on.
                with contextlib.suppress(HarnessError):
                    children[racer.session_id] = detach_session(summary).pid
            views = look(top, record, _running_children(children))
            won = judge(record, views)
            if won:
                record.winners += won
                if record.first:
                    for v in views:
                        if v.racer.session_id not in record.winners and not v.ended:
                            _stop(top, v, f"race {race}: {record.winners[0]} won (--first)")
                    record.end_reason = "won-first"
                journal.write_race(record)
            cap = record.max_cost_usd
            if record.budget == "pooled" and cap is not None and record.end_reason is None and spent(views) >= cap:
                for v in views:
                    if not v.ended:
                        _stop(top, v, f"race {race}: the pooled --max-cost ${cap:.2f} is spent")
                record.end_reason = "max-cost"
                journal.write_race(record)
            if getattr(stop_event, "terminated", False):
                # SIGTERM is how a machine's shutdown ends every process: the racers get it too and end
                # `interrupted` by themselves. Stopping them here would write stop requests, and a stopped
                # racer is never resumed after the reboot. The race stays unfinished, for `resume` or the service.
                record.supervisor = None
                journal.write_race(record)
                return record
            if stop_event is not None and stop_event.is_set() and record.end_reason is None:
                for v in views:
                    if not v.ended:
                        _stop(top, v, f"race {race}: the race was interrupted")
                record.end_reason = "stopped"
                journal.write_race(record)
            if record.end_reason is not None or (stop_event is not None and stop_event.is_set()):
                pending = []
            if all(v.ended or not v.racer.started for v in views) and not pending:
                break
            if pending:
                continue
            if stop_event is not None:
                stop_event.wait(POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)
        from runner.usecases.notify import race_end_notice

        record.state = RaceState.FINISHED
        record.end_reason = record.end_reason or "all-ended"
        record.finished_at = utcnow()
        record.supervisor = None
        # Owed to its targets in the same write as the end: killed before it is told, the race leaves it to resume.
        record.end_notice = race_end_notice(record)
        journal.write_race(record)
    # Told once the supervisor lock is let go (the race's status, sent, reads the journals as `status` does).
    return _tell_end(journal)


def _tell_end(journal: Journal) -> RaceRecord:
    """Tell the race's end to the targets it is still owed to; the race as it then is."""
    from runner.usecases.notify import tell_race_end

    try:
        tell_race_end(journal)
    except SessionBusyError:  # another process (a resume) tells it now
        log.info("race %s: its end is being told by another harness process", journal.session)
    return journal.read_race()


def detach_race(repo: Path, race: str) -> Detached:
    """Drive the race in a process of its own (own session, output to the race's journal), and return once it
    holds the race's lock."""
    journal = race_journal(repo, race)
    top = journal.read_race().repo
    log_path = journal.supervisor_log_path
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "runner", "_race", "--repo", top, "--session", race],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=top, start_new_session=True, close_fds=True,
        )  # fmt: skip
    deadline = time.monotonic() + DETACH_START_SECONDS
    while not journal.supervisor_alive():
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise InvalidStateError(f"the race's supervisor exited at once: {tail[0]}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return Detached(session_id=race, pid=child.pid, journal_dir=str(journal.dir), supervisor_log=str(log_path))


# ------------------------------------------------------------------------------------------------- resume


@dataclass(frozen=True)
class RaceResume:
    repo: Path
    race: str
    resume: ResumeRequest | None = None  # what each racer's resume changes (its limits, iterations)


# A racer whose supervisor died: while it ran (interrupted), or while it waited for a slot (queued, its place kept).
RESUMABLE = {RunState.INTERRUPTED, RunState.QUEUED}


def prepare_race_resume(request: RaceResume) -> RaceRecord:
    """Make a race whose supervisor died ready to go on: every racer that had not ended (its supervisor died
    with the race's, or was never started) is resumed as `resume` would, and started again by the race's
    supervisor. A racer still running is left alone; one that ended stays so. Once the race is won with --first
    (in race.json, or only in the winner's journal so far), or for a racer the race had stopped, no racer is
    started again: one whose supervisor died is ended `stopped`, as the race's stop would have ended it."""
    from runner.usecases.sessions import ResumeRequest, prepare_resume, resume_notify, session_engine

    journal = race_journal(request.repo, request.race)
    each = request.resume or ResumeRequest(session=request.race)
    with journal.supervisor_lock():  # refused while the race's supervisor runs
        record = journal.read_race()
        top = Path(record.repo)
        if record.state is RaceState.FINISHED:
            return _owed_end(journal, record, each)
        notify = resume_notify(top, request.race, each)  # --notify / --notify-on: the race's, and its racers'
        if notify is not None:
            targets, events = notify
            save_targets(top, request.race, targets, events, journal_dir=journal.dir)
            record.notify = notify_info(targets, events) if targets else None
            others = racer_events(events) if targets else []
            each = replace(each, notify=tuple(targets) if others else (),
                           notify_on=tuple(e.value for e in others) if others else None)  # fmt: skip
        views = look(top, record)
        # Won with --first: in race.json, or so far only in the winner's journal (the race's supervisor died
        # before it looked). No other racer is started again to compete.
        won = (record.winners or judge(record, views))[:1] if record.first else []
        for view in views:
            if view.alive or view.summary is None or view.racer.session_id in won:
                continue
            if won or view.racer.stopped_by_race:
                if view.racer.started and view.state in RESUMABLE:  # its supervisor died before it could stop
                    why = f"{won[0]} won (--first)" if won else "the race stopped it"
                    _end_stopped(top, view, f"race {record.session_id}: {why}")
                continue
            if view.racer.started and view.state not in RESUMABLE:
                continue
            engine = open_engine(session_engine(top, view.racer.session_id))
            prepare_resume(engine, replace(each, session=view.racer.session_id, repo=top))
            view.racer.started = False  # the race's supervisor starts it again, in order
        journal.write_race(record)
        return record


def _owed_end(journal: Journal, record: RaceRecord, each: ResumeRequest) -> RaceRecord:
    """A finished race is resumed only to tell its end, still owed to a target (its supervisor died before it was
    told, or a target did not take it): `drive_race` tells it, and nothing else is done. `--notify` / `--notify-on`
    replace the targets it is owed to. Refused when nothing is owed."""
    from runner.usecases.notify import race_end_notice
    from runner.usecases.sessions import resume_notify

    race, top = record.session_id, Path(record.repo)
    if record.end_notice is None or not record.end_notice.owed:
        raise InvalidStateError(
            f"race {race!r} is finished: resume a racer on its own ('harness resume --session "
            f"{record.racers[0].session_id}')"
        )
    notify = resume_notify(top, race, each)
    if notify is not None:
        targets, events = notify
        save_targets(top, race, targets, events, journal_dir=journal.dir)
        record.notify = notify_info(targets, events) if targets else None
        record.end_notice = race_end_notice(record)  # owed to every new target (None: no target, or not chosen)
        journal.write_race(record)
    return record


def _end_stopped(top: Path, view: RacerView, note: str) -> None:
    """A racer the race stops whose supervisor is gone: asked to stop (if the race had not yet), its containers
    reaped, and ended `stopped` as its supervisor would have ended it; left to a supervisor that took it meanwhile."""
    from runner.sandbox.container import session_labels
    from runner.usecases.sessions import session_engine

    session = view.racer.session_id
    if not view.racer.stopped_by_race:
        _stop(top, view, note)
    view.racer.stopped_by_race = True
    try:
        with view.journal.supervisor_lock(settle=0):
            open_engine(session_engine(top, session)).reap(session_labels(session, repo_key(top)))
            leave_queue(view.journal, view.journal.read_summary())  # out of the queue if it was in, `stopped`
    except SessionBusyError:
        pass  # a supervisor holds it now: it sees the stop request


def stop_race(request: StopRequest) -> list[StopResult]:
    """`stop --session S` of a race: every racer that has not ended is asked to stop (the race's supervisor
    then sees them end, and the race with them)."""
    journal = race_journal(request.repo, request.session)
    record = journal.read_race()
    top = Path(record.repo)
    return [
        request_stop(replace(request, repo=top, session=v.racer.session_id))
        for v in look(top, record)
        if v.summary is not None and not v.ended
    ]
