"""The morning of a race: `status`, `report`, `merge` and `discard` given the race's id S.

`status` and `report` put the racers side by side (outcome, iterations, time, tokens and cost, diff size,
flagged and protected paths, the check); `merge` merges the one winner (the user picks among several with
`merge --session S-k`); `discard` throws away every racer but the winner, each with its undo ref.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from runner.base.errors import ExitCode, HarnessError, InvalidStateError
from runner.record.flagged import FlagReason
from runner.record.models import CamelModel, RunState, StopReason, utcnow
from runner.usecases.discard import DiscardResult, discard
from runner.usecases.race import RacerView, look, race_journal
from runner.usecases.report import ReportCommand, ReportRequest, SessionReport, build_report
from runner.usecases.repository import SessionRef, harness_command
from runner.usecases.status import RaceShownState, race_shown_state


class RacerRow(CamelModel):
    """One racer, as the side-by-side table shows it."""

    session_id: str
    agent: str
    model: str | None
    winner: bool
    stopped_by_race: bool
    status: RunState | None  # None: discarded (its journal is gone)
    stop_reason: StopReason | None = None
    supervisor_alive: bool = False
    iterations: int = 0
    max_iterations: int | None = None  # its --max-iterations (None: discarded)
    seconds: float | None = None  # from its creation to its end (or now, while it runs)
    tokens: int = 0
    cost_usd: float = 0.0
    files_changed: int | None = None
    insertions: int | None = None
    deletions: int | None = None
    flagged: list[str] = Field(default_factory=list)  # paths that could run code on this machine
    protected: list[str] = Field(default_factory=list)  # changed protected paths (--protect: the check saw the base's)
    check_passed: bool | None = None  # the last check's result; None: it never ran
    verdict: str = ""


class RaceStatus(CamelModel):
    """The race and its racers side by side (`status --session S`; `report --session S` adds the commands)."""

    kind: Literal["solo-harness.race-report"] = "solo-harness.race-report"
    session_id: str
    repo: str
    objective: str
    check_command: str
    state: RaceShownState
    supervisor_alive: bool
    judge: Literal["first", "all"]
    first: bool
    budget: Literal["per-racer", "pooled"]
    max_cost_usd: float | None
    end_reason: str | None
    winners: list[str]
    racers: list[RacerRow]
    cost_usd: float  # every racer's spend added up
    commands: list[ReportCommand] = Field(default_factory=list)
    created_at: datetime
    finished_at: datetime | None
    generated_at: datetime = Field(default_factory=utcnow)

    @property
    def exit_code(self) -> ExitCode:
        if self.state == "running":
            return ExitCode.RUN_RUNNING
        return ExitCode.OK if self.winners else ExitCode.RUN_NEEDS_ATTENTION

    @property
    def verdict(self) -> str:
        ended = sum(1 for r in self.racers if r.status not in (RunState.RUNNING, RunState.QUEUED))
        facts = f"{ended} of {len(self.racers)} racers ended, ${self.cost_usd:.2f}"
        if self.winners:
            return f"{self.state}  {facts}: {', '.join(self.winners)} won"
        if self.state == "running":
            return f"running  {facts}: no winner yet"
        if self.state == "interrupted":
            return f"interrupted  {facts}: no winner yet: go on with 'harness resume --session {self.session_id}'"
        why = {"max-cost": "the pooled --max-cost was spent before a racer passed the check",
               "stopped": "the race was stopped before a racer passed the check"}  # fmt: skip
        if self.racers and all(r.stop_reason is StopReason.STOP_REQUESTED for r in self.racers):
            why["all-ended"] = "every racer was stopped (harness stop) before one passed the check"
        return f"finished  {facts}: {why.get(self.end_reason or '', 'no racer passed the check')}"


def _row(report: SessionReport, view: RacerView, *, winner: bool) -> RacerRow:
    r = view.racer
    going = report.status in (RunState.RUNNING, RunState.QUEUED)
    end = report.finished_at if not going and report.finished_at else utcnow()
    return RacerRow(
        session_id=report.session_id, agent=r.agent, model=r.model, winner=winner, stopped_by_race=r.stopped_by_race,
        status=report.status, stop_reason=report.stop_reason,
        supervisor_alive=view.alive, iterations=report.iteration_count, max_iterations=report.max_iterations,
        seconds=(end - report.created_at).total_seconds(), tokens=report.usage.tokens.total,
        cost_usd=report.usage.cost_usd,
        files_changed=report.diff_stat.files_changed if report.diff_stat else None,
        insertions=report.diff_stat.insertions if report.diff_stat else None,
        deletions=report.diff_stat.deletions if report.diff_stat else None,
        flagged=[f.path for f in report.flagged if FlagReason.PROTECTED not in f.reasons],
        protected=[f.path for f in report.flagged if FlagReason.PROTECTED in f.reasons],
        check_passed=report.last_check.passed if report.last_check else None, verdict=report.verdict,
    )  # fmt: skip


def _waiting(view: RacerView) -> bool:
    """No supervisor holds it and the race has not started it yet (after a resume too), or its summary is as `race`
    created it (running, never driven): its supervisor is starting. `status` of the session alone says interrupted."""
    s = view.summary
    if s is None or view.alive or s.status not in (RunState.RUNNING, RunState.QUEUED, RunState.INTERRUPTED):
        return False
    return not view.racer.started or (s.status is RunState.RUNNING and s.supervisor is None)


def race_status(repo: Path, race: str) -> RaceStatus:
    """The race and each racer's report, side by side (read-only)."""
    journal = race_journal(repo, race)
    record = journal.read_race()
    top = Path(record.repo)
    alive = journal.supervisor_alive()
    rows = []
    for view in look(top, record):
        r = view.racer
        winner = r.session_id in record.winners
        try:
            report = build_report(ReportRequest(repo=top, session=r.session_id))
        except HarnessError:
            rows.append(RacerRow(session_id=r.session_id, agent=r.agent, model=r.model, winner=winner,
                                 stopped_by_race=r.stopped_by_race, status=None, verdict="discarded"))  # fmt: skip
            continue
        row = _row(report, view, winner=winner)
        if alive and _waiting(view):  # the live race starts it in turn: it waits, as a queued session does
            row.status, row.stop_reason, row.verdict = RunState.QUEUED, None, "queued  the race starts it in turn"
        rows.append(row)
    state = race_shown_state(record, alive=alive)
    st = RaceStatus(
        session_id=race, repo=str(top), objective=record.objective, check_command=record.check_command,
        state=state, supervisor_alive=alive, judge=record.judge, first=record.first, budget=record.budget,
        max_cost_usd=record.max_cost_usd, end_reason=record.end_reason, winners=list(record.winners), racers=rows,
        cost_usd=sum(r.cost_usd for r in rows), created_at=record.created_at, finished_at=record.finished_at,
    )  # fmt: skip
    st.commands = _commands(st, top)
    return st


def _commands(st: RaceStatus, top: Path) -> list[ReportCommand]:
    def cmd(label: str, *args: str) -> ReportCommand:
        return ReportCommand(label=label, command=harness_command(*args, repo=top))

    s = st.session_id
    if st.state == "running":
        return [cmd("still racing: look again later", "status", "--session", s)]
    found = []
    if st.state == "interrupted":
        found.append(cmd("the race's supervisor is gone: go on", "resume", "--session", s))
    if len(st.winners) == 1:
        found.append(cmd(f"merge the winner, {st.winners[0]}", "merge", "--session", s))
    for w in st.winners if len(st.winners) > 1 else []:
        found.append(cmd(f"merge {w} (pick one)", "merge", "--session", w))
    for r in st.racers:
        if r.status is not None:
            found.append(cmd(f"read {r.session_id}'s whole report", "report", "--session", r.session_id))
    found.append(cmd("throw the other racers away (each undone with 'harness restore')", "discard", "--session", s))
    return found


def race_winner(repo: Path, race: str) -> str:
    """The one racer `merge --session S` merges; refused (one line) when none or several won."""
    record = race_journal(repo, race).read_race()
    if not record.winners:
        raise InvalidStateError(
            f"race {race!r} has no winner: merge a racer yourself after reviewing it ('harness merge --session "
            f"{record.racers[0].session_id}')"
        )
    if len(record.winners) > 1:
        picks = " or ".join(f"'harness merge --session {w}'" for w in record.winners)
        raise InvalidStateError(f"race {race!r} has {len(record.winners)} winners (--judge all): pick one: {picks}")
    return record.winners[0]


class RaceDiscardResult(CamelModel):
    session_id: str
    kept: list[str]  # the winners
    discarded: list[DiscardResult]


def discard_race(repo: Path, race: str) -> RaceDiscardResult:
    """Throw away every racer but the winner(s), each with an undo ref (`restore --session S-k`). Refused while
    the race's supervisor or a racer runs."""
    journal = race_journal(repo, race)
    record = journal.read_race()
    if journal.supervisor_alive():
        raise InvalidStateError(f"race {race!r} is running: stop it first ('harness stop --session {race}')")
    top = Path(record.repo)
    views = [v for v in look(top, record) if v.racer.session_id not in record.winners and v.summary is not None]
    for v in views:
        if v.alive:
            raise InvalidStateError(f"racer {v.racer.session_id!r} is running: stop it first")
    done = []
    from runner.backends import open_engine
    from runner.usecases.sessions import session_engine

    for v in views:  # each on the engine its journal names
        engine = open_engine(session_engine(top, v.racer.session_id))
        done.append(discard(engine, SessionRef(repo=top, session=v.racer.session_id)))
    return RaceDiscardResult(session_id=race, kept=list(record.winners), discarded=done)
