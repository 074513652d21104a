"""Core of `harness report --all`: every session on this machine, in every repository, as one typed model.

The repositories come from the harness home's index (runner/usecases/known_repos.py) and the copies'
owner.json; each repository's sessions from its own journal, each one's facts from the same report as
`report --session` (runner/usecases/report.py), and its diff from the user's repository, one file at a
time, flagged paths first, capped. Read-only: nothing is written anywhere. A repository moved or deleted
since, and a session whose journal cannot be read, are listed with why; the others are still reported.
The CLI renders the model as markdown, HTML (runner/cli/morning_render.py) or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from runner.base.errors import HarnessError
from runner.base.names import validate_session
from runner.base.paths import JOURNAL_LEAF, sessions_root
from runner.record.gitops import HostGit
from runner.record.journal import RACE, Journal, list_sessions
from runner.record.models import (
    CamelModel,
    CheckResult,
    DiffStat,
    GatewayUsage,
    RaceState,
    RunState,
    StopReason,
    utcnow,
)
from runner.usecases.known_repos import known_repos
from runner.usecases.report import FlaggedPath, ReportCommand, ReportIteration, ReportRequest, build_report

# What one session's diff may put on the page: past these, a file's patch (or the rest of the files) is
# cut, and the page says so. `harness diff --session S` shows the whole of it.
FILE_PATCH_BYTES = 48 * 1024
SESSION_PATCH_BYTES = 256 * 1024
SESSION_FILES = 100
MIN_PATCH_BYTES = 512  # less room than this left for a file: it is left out, not cut to a line or two


class DiffFile(CamelModel):
    path: str  # written by the agent: untrusted text
    flagged: bool
    why: list[str]  # the flag's reasons in words (empty when not flagged)
    insertions: int | None  # None: a binary file
    deletions: int | None
    patch: str  # the file's patch (decoded with replacement characters); empty when not shown
    truncated: bool  # the patch was cut at the size cap, or left out (the session's cap was reached)


class SessionDiff(CamelModel):
    files: list[DiffFile]  # flagged paths first, then the others in git's order
    truncated: bool  # some file's patch was cut, or left out
    omitted_files: int  # changed files past the cap of files shown, not listed at all


class MorningSession(CamelModel):
    """One session on the morning page: its facts, its iterations (the chart), its diff."""

    session_id: str
    repo: str
    objective: str  # the user's words
    status: RunState
    stop_reason: StopReason | None
    verdict: str  # the one line `status` shows
    error: str | None
    flagged: list[FlaggedPath]
    commands: list[ReportCommand]
    iteration_count: int
    max_iterations: int
    iterations: list[ReportIteration]  # cost and outcome per iteration: the page's chart
    agent_seconds: float  # the iterations' time, summed
    tokens: int | None  # the session's, when counted
    cost_usd: float | None
    check_command: str | None
    last_check: CheckResult | None
    branch: str
    base_commit: str
    head_commit: str | None
    commits_ahead: int | None
    diff_stat: DiffStat | None
    diff: SessionDiff | None  # None: no branch
    usage: GatewayUsage
    created_at: datetime
    finished_at: datetime | None
    last_activity: datetime  # what --since compares
    race: str | None = None  # the race this session is a racer of (`harness race`), shown under it


class MorningRace(CamelModel):
    """A race (`harness race`): its racers are sessions of the page, shown under it."""

    session_id: str  # the race's id
    objective: str
    state: Literal["running", "interrupted", "finished"]  # as `status` shows a race
    end_reason: str | None
    check_command: str
    winners: list[str]
    racers: list[str]  # the racers' sessions, in the order they started


class SessionProblem(CamelModel):
    """A session that could not be reported (its journal does not read); the others still are."""

    session_id: str
    error: str


class MorningRepo(CamelModel):
    repo: str
    missing: str | None  # why the repository cannot be read (moved or deleted since): None when it can
    sessions: list[MorningSession]  # the most recently active first
    problems: list[SessionProblem]
    races: list[MorningRace] = Field(default_factory=list)  # those with a racer on the page


class MorningTotals(CamelModel):
    sessions: int
    by_state: dict[str, int]  # RunState value -> sessions
    problems: int  # sessions listed with an error
    missing_repos: int
    flagged_sessions: int
    iterations: int
    tokens: int
    cost_usd: float


class MorningReport(CamelModel):
    """`harness report --all`: every session of every repository on this machine (since a moment)."""

    kind: Literal["solo-harness.morning-report"] = "solo-harness.morning-report"
    since: datetime | None  # sessions last active before this are left out (None: none is)
    repo: str | None = None  # the one repository the page shows (--repo); None: every repository of the machine
    repositories: list[MorningRepo]  # those with a session to show (or missing), sorted by path
    totals: MorningTotals
    generated_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True)
class MorningRequest:
    since_seconds: float | None = None
    repo: Path | None = None  # only this repository's sessions (any path in it); None: every repository's


def session_diff(git: HostGit, base: str, head: str, flagged: dict[str, list[str]]) -> SessionDiff:
    """base..head one file at a time, flagged paths first, each patch capped and the whole capped."""
    stats = {path: (added, removed) for path, added, removed in git.numstat(base, head)}
    order = [p for p in flagged if p in stats] + [p for p in stats if p not in flagged]
    shown, omitted = order[:SESSION_FILES], max(0, len(order) - SESSION_FILES)
    files, budget = [], SESSION_PATCH_BYTES
    for path in shown:
        limit = min(budget, FILE_PATCH_BYTES)
        patch, cut = git.file_patch(base, head, path, limit=limit) if limit >= MIN_PATCH_BYTES else ("", True)
        budget -= len(patch.encode())
        added, removed = stats[path]
        files.append(DiffFile(path=path, flagged=path in flagged, why=flagged.get(path, []), insertions=added,
                              deletions=removed, patch=patch, truncated=cut))  # fmt: skip
    return SessionDiff(files=files, truncated=omitted > 0 or any(f.truncated for f in files), omitted_files=omitted)


def _last_activity(journal: Journal) -> datetime:
    summary = journal.read_summary()
    moments = [summary.updated_at, summary.created_at, *([summary.finished_at] if summary.finished_at else [])]
    return max(moments + [rec.created_at for rec in journal.iterations()[-1:]])


def _session(git: HostGit, top: Path, session: str, last: datetime) -> MorningSession:
    r = build_report(ReportRequest(repo=top, session=session))
    diff = None
    if r.head_commit is not None:
        diff = session_diff(git, r.base_commit, r.head_commit, {f.path: f.why for f in r.flagged})
    counted = [it for it in r.iterations if it.tokens is not None or it.cost_usd is not None]
    tokens = r.usage.tokens.total if r.usage.requests else sum(it.tokens or 0 for it in counted) if counted else None
    cost = r.usage.cost_usd if r.usage.requests else sum(it.cost_usd or 0.0 for it in counted) if counted else None
    return MorningSession(
        session_id=r.session_id, repo=r.repo, objective=r.objective, status=r.status, stop_reason=r.stop_reason,
        verdict=r.verdict, error=r.error, flagged=r.flagged, commands=r.commands, iteration_count=r.iteration_count,
        max_iterations=r.max_iterations, iterations=r.iterations,
        agent_seconds=sum(it.duration_seconds for it in r.iterations), tokens=tokens, cost_usd=cost,
        check_command=r.check_command, last_check=r.last_check, branch=r.branch, base_commit=r.base_commit,
        head_commit=r.head_commit, commits_ahead=r.commits_ahead, diff_stat=r.diff_stat, diff=diff, usage=r.usage,
        created_at=r.created_at, finished_at=r.finished_at, last_activity=last,
    )  # fmt: skip


def _repository(path: Path, since: datetime | None, last_used: datetime) -> MorningRepo | None:
    """The repository's sessions; None when there is nothing to show (a repository gone and not used since)."""
    found = MorningRepo(repo=str(path), missing=None, sessions=[], problems=[])
    try:
        git = HostGit(path)
        top = git.info().top if path.is_dir() else None
    except HarnessError as exc:
        top, found.missing = None, exc.message
    if top is None or top != path.resolve():
        found.missing = found.missing or "the repository is gone (moved or deleted since its sessions ran)"
        return found if since is None or last_used >= since else None
    races = _races(top, found)
    for session in list_sessions(top):
        try:
            journal = Journal.under(sessions_root(top), validate_session(session))
            if Path(journal.read_summary().repo).resolve() != top:
                continue  # a journal root shared by several repositories (HARNESS_JOURNAL_ROOT): another's
            last = _last_activity(journal)
            if since is not None and last < since:
                continue
            found.sessions.append(_session(git, top, session, last))
        except HarnessError as exc:
            found.problems.append(SessionProblem(session_id=session, error=exc.message))
        except UnicodeDecodeError as exc:  # git's answer about its branch (a path's name) is not UTF-8
            error = f"git printed what is not UTF-8 about its branch ({exc.reason}): see 'harness diff'"
            found.problems.append(SessionProblem(session_id=session, error=error))
    found.sessions.sort(key=lambda s: s.last_activity, reverse=True)
    racer_of = {racer: race.session_id for race in races for racer in race.racers}
    for s in found.sessions:
        s.race = racer_of.get(s.session_id)
    shown = {s.race for s in found.sessions}
    found.races = [race for race in races if race.session_id in shown]
    return found


def _races(top: Path, found: MorningRepo) -> list[MorningRace]:
    """The races of the repository (a race's own journal holds race.json and no run-summary.json)."""
    root, races = sessions_root(top), []
    for path in sorted(root.glob(f"*/{JOURNAL_LEAF}/{RACE}")) if root.is_dir() else []:
        race = path.parents[2].name
        try:
            journal = Journal.under(root, validate_session(race))
            record = journal.read_race()
        except HarnessError as exc:
            found.problems.append(SessionProblem(session_id=race, error=exc.message))
            continue
        state: Literal["running", "interrupted", "finished"] = "finished"
        if record.state is RaceState.RUNNING:
            state = "running" if journal.supervisor_alive() else "interrupted"
        races.append(MorningRace(
            session_id=race, objective=record.objective, state=state, end_reason=record.end_reason,
            check_command=record.check_command, winners=list(record.winners),
            racers=[r.session_id for r in record.racers],
        ))  # fmt: skip
    return races


def _totals(repos: list[MorningRepo]) -> MorningTotals:
    sessions = [s for r in repos for s in r.sessions]
    by_state: dict[str, int] = {}
    for s in sessions:
        by_state[s.status.value] = by_state.get(s.status.value, 0) + 1
    return MorningTotals(
        sessions=len(sessions), by_state=by_state, problems=sum(len(r.problems) for r in repos),
        missing_repos=sum(1 for r in repos if r.missing), flagged_sessions=sum(1 for s in sessions if s.flagged),
        iterations=sum(s.iteration_count for s in sessions), tokens=sum(s.tokens or 0 for s in sessions),
        cost_usd=sum(s.cost_usd or 0.0 for s in sessions),
    )  # fmt: skip


def build_morning(request: MorningRequest) -> MorningReport:
    """Every session of this machine last active since `request.since_seconds` ago (all without it); with
    `request.repo`, those of that repository only (read from its journal, named in the index or not).
    Raises NotARepositoryError when `request.repo` is not in a git repository."""
    now = utcnow()
    since = now - timedelta(seconds=request.since_seconds) if request.since_seconds is not None else None
    only = None
    if request.repo is not None:
        with HostGit(request.repo.resolve()) as git:
            only = git.info().top
    chosen = {only: now} if only is not None else known_repos()
    repos = [_repository(path, since, last_used) for path, last_used in chosen.items()]
    shown = [r for r in repos if r is not None and (r.missing or r.sessions or r.problems)]
    return MorningReport(since=since, repo=str(only) if only else None, repositories=shown, totals=_totals(shown),
                         generated_at=now)  # fmt: skip
