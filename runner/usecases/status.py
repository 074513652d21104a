"""Core of `status` and `list`: what each session of a repository (or of this machine) has come to.

The review of each session's branch (its flagged paths, what a merge would overwrite, the commits ahead)
comes from the journal's cache while its inputs are unchanged (runner/usecases/review/cache.py), and one
look at the repository serves all of its sessions: `list` runs git once per repository, not per session.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

from runner.base.errors import ExitCode, HarnessError
from runner.base.names import validate_session
from runner.base.paths import data_home
from runner.record import queue
from runner.record.gitops import HostGit
from runner.record.journal import SETUP_LOG, SUPERVISOR_LOG, Journal, list_races, list_sessions, load_model
from runner.record.models import (
    CamelModel,
    GatewayUsage,
    KeepAwake,
    Outcome,
    RaceRecord,
    RaceState,
    RunOwner,
    RunState,
    RunSummary,
    SetupRecord,
    StopReason,
    UsageLimitWait,
    utcnow,
)
from runner.usecases.repository import RepoState, repo_state
from runner.usecases.review.cache import branch_review
from runner.usecases.review.findings import Findings, ShowsFindings

EXIT_FOR_STATE = {
    RunState.COMPLETED: ExitCode.OK,
    RunState.RUNNING: ExitCode.RUN_RUNNING,
    RunState.BLOCKED: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.STOPPED: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.INTERRUPTED: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.FAILED: ExitCode.RUN_FAILED,
    RunState.STUCK: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.QUEUED: ExitCode.RUN_RUNNING,  # needs attention when its supervisor is gone (SessionStatus.exit_code)
}


RaceShownState = Literal["running", "finished", "interrupted"]


class RaceTag(CamelModel):
    """The race a session is a racer of (`harness race`, docs/race.md): `list` and `status` show the race as one
    row with its racers under it."""

    session_id: str  # the race's id S
    state: RaceShownState  # as `status --session S` shows the race
    end_reason: str | None
    winners: list[str]
    racers: list[str]  # every racer's session, in the order the race starts them
    created_at: datetime


def race_shown_state(record: RaceRecord, *, alive: bool) -> RaceShownState:
    """A race whose record says running is `interrupted` once its supervisor (`alive`) is gone."""
    if record.state is RaceState.RUNNING:
        return "running" if alive else "interrupted"
    return "finished"


def race_tags(top: Path) -> dict[str, RaceTag]:
    """Each racer of the repository's races -> its race (a race that does not read is left out: its racers are
    still listed, as sessions of their own)."""
    tags: dict[str, RaceTag] = {}
    for race in list_races(top):
        try:
            tag = _race_tag(Journal.for_repo(top, validate_session(race)), top)
        except HarnessError:
            continue
        if tag is not None:
            tags.update(dict.fromkeys(tag.racers, tag))
    return tags


def _race_tag(journal: Journal, top: Path) -> RaceTag | None:
    record = journal.read_race()
    if Path(record.repo).resolve() != top.resolve():  # a journal root several repositories share: another's race
        return None
    return RaceTag(
        session_id=record.session_id, state=race_shown_state(record, alive=journal.supervisor_alive()),
        end_reason=record.end_reason, winners=list(record.winners), racers=[r.session_id for r in record.racers],
        created_at=record.created_at,
    )  # fmt: skip


def race_of(top: Path, session: str) -> RaceTag | None:
    """The race whose racer `session` is (a racer's id is its race's id, a dash and its number), or None."""
    race, dash, k = session.rpartition("-")
    if not dash or not k.isdigit() or not race:
        return None
    try:
        journal = Journal.for_repo(top, validate_session(race))
        tag = _race_tag(journal, top) if journal.is_race() else None
    except HarnessError:
        return None
    return tag if tag is not None and session in tag.racers else None


class SessionStatus(ShowsFindings):
    """The morning report of one session (field names as in run-summary.json)."""

    SHOWN: ClassVar[dict[str, tuple[str, ...]]] = {
        "commits_ahead": ("flagged",),
        "usage_limit": ("reasons", "would_overwrite", "journal_paths"),
    }

    session_id: str
    repo: str
    status: RunState
    stop_reason: StopReason | None
    supervisor_alive: bool
    iteration_count: int
    max_iterations: int
    last_outcome: Outcome | None
    last_summary: str | None
    branch: str
    base_commit: str
    head_commit: str | None
    commits_ahead: int | None
    objective: str
    journal_dir: str
    workspace: str
    error: str | None
    usage: GatewayUsage  # what the model gateway counted for the whole session
    max_cost_usd: float | None
    network: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    setup: SetupRecord | None = None  # the setup phase's last run, when the session has one
    usage_limit: UsageLimitWait | None = None  # waiting for a subscription's usage window to reopen
    discarded_ref: str | None = None  # the newest discarded tip of the branch ('harness restore' brings it back)
    keep_awake: KeepAwake = KeepAwake()  # the sleep inhibitor: `held` only while a supervisor lives and holds it
    keep_awake_text: str = ""  # the same, as `status` says it
    queue_position: int | None = None  # queued: its place in the machine-wide queue, from 1 ('harness queue')
    queue_length: int | None = None  # queued: how many sessions the queue holds
    slots: int | None = None  # the cap of sessions at once it runs under (--slots; None: the machine's default)
    # The cap in force: --slots, else the default its supervisor found last (what its engine holds); None: not yet.
    slots_in_force: int | None = None
    auto_resume_gave_up: str | None = None  # why the user service no longer resumes it (`harness service`)
    end_owed: int = 0  # the --notify targets its end is still owed to, no supervisor left to tell it (`resume` does)
    race: RaceTag | None = None  # the race it is a racer of (`harness race`); None: a session of its own
    verdict: str = ""  # one line to scan in the morning: state, numbers, what to do next

    @property
    def exit_code(self) -> ExitCode:
        if self.status is RunState.QUEUED and not self.supervisor_alive:
            return ExitCode.RUN_NEEDS_ATTENTION  # parked: it waits for `resume`
        return EXIT_FOR_STATE[self.status]


def _clock(at: datetime) -> str:
    """A moment as the user's clock shows it: the time, and the day when it is not today."""
    local = at.astimezone()
    return local.strftime("%H:%M") if local.date() == datetime.now().astimezone().date() else local.strftime("%a %H:%M")


def limit_wait_text(wait: UsageLimitWait) -> str:
    """'waiting for the limit to reset at 04:10 (5-hour window)'."""
    window = f" ({wait.window} window)" if wait.window else ""
    if wait.resets_at is None:
        until = f" (next try at {_clock(wait.until)})" if wait.until else ""
        return f"waiting for room under the usage limit{window}{until}"
    return f"waiting for the limit to reset at {_clock(wait.resets_at)}{window}"


ADVICE = {
    RunState.COMPLETED: "review then merge",
    RunState.RUNNING: "running: watch it with 'harness hud'",
    RunState.BLOCKED: "the agent asks for help: read the report, add a note, resume",
    RunState.STOPPED: "review; merge or resume",
    RunState.INTERRUPTED: "resume, or review what is there",
    RunState.FAILED: "read the report, then resume or discard",
    RunState.STUCK: "no progress: add a note and resume, or discard",
    RunState.QUEUED: "waiting for a slot: 'harness queue' shows and reorders the queue",
}


def keep_awake_text(awake: KeepAwake, *, alive: bool) -> str:
    """'held (systemd-inhibit, since 22:10)', 'not held: systemd-inhibit failed (exit 1): ...', 'off'."""
    if not awake.enabled:
        return "off (--no-keep-awake)"
    if alive and awake.held:
        since = f", since {_clock(awake.since)}" if awake.since else ""
        return f"held ({awake.via}{since})"
    if awake.reason:
        return f"not held: {awake.reason}"
    if awake.since is not None:
        return "released: no supervisor runs"
    return "not held: no supervisor runs"


def _queued_verdict(st: SessionStatus) -> str:
    """'queued  position 2 of 3: waiting for a slot ...', or, its supervisor gone, how to take its place back."""
    place = f"position {st.queue_position} of {st.queue_length}" if st.queue_position else "no place"
    if not st.supervisor_alive:
        return f"queued  {place}, its supervisor is gone: resume takes its place back, stop leaves the queue"
    return f"queued  {place}: {ADVICE[RunState.QUEUED]}"


def verdict(st: SessionStatus) -> str:
    """'completed  5 iterations, 7 commits, $1.23, 2 flagged: review the flagged paths, then merge'.
    Only states and numbers: nothing the agent wrote. An end still owed to a --notify target is said last."""
    said = _state_verdict(st)
    if st.end_owed:
        targets = f"{st.end_owed} --notify target{'s' if st.end_owed != 1 else ''}"
        said += f"; its end was not told to {targets}: resume tells it"
    return said


def _state_verdict(st: SessionStatus) -> str:
    if st.status is RunState.QUEUED:
        return _queued_verdict(st)
    state = st.status.value
    if st.stop_reason and st.stop_reason is not StopReason.AGENT_DONE:
        state += f" ({st.stop_reason.value})"
    n = st.iteration_count
    facts = [f"{n} iteration{'s' if n != 1 else ''}"]
    if st.commits_ahead is not None:
        facts.append(f"{st.commits_ahead} commit{'s' if st.commits_ahead != 1 else ''}")
    if st.usage.requests or st.usage.cost_usd:
        facts.append(f"${st.usage.cost_usd:.2f}")
    if st.findings.flagged:
        facts.append(f"{len(st.findings.flagged)} flagged")
    advice = ADVICE[st.status]
    if st.setup is not None:
        facts.insert(0, f"setup {'passed' if st.setup.passed else 'failed'} in {st.setup.duration_seconds:.0f}s")
    if st.usage_limit is not None and st.usage_limit.until is not None:
        advice = limit_wait_text(st.usage_limit)
        if st.status is not RunState.RUNNING:
            advice += ": resume then (it goes on waiting)"
        return f"{state}  {', '.join(facts)}: {advice}"
    if st.stop_reason is StopReason.USAGE_LIMIT:
        at = st.usage_limit.resets_at if st.usage_limit is not None else None
        when = f"at {_clock(at)}" if at is not None else "later"
        return f"{state}  {', '.join(facts)}: the usage limit resets {when}: resume then"
    if st.stop_reason is StopReason.SETUP_FAILED:
        return f"{state}  {', '.join(facts)}: read {SETUP_LOG}, fix the setup (resume --setup or --setup-allow-host)"
    if st.stop_reason is StopReason.NOT_STARTED:
        return f"{state}  {', '.join(facts)}: its supervisor never started (see {SUPERVISOR_LOG}): resume starts it"
    if st.auto_resume_gave_up and st.status is RunState.INTERRUPTED:
        return f"{state}  {', '.join(facts)}: the service gave up: {st.auto_resume_gave_up}"
    if st.status is RunState.RUNNING:
        return f"{state}  {', '.join(facts)}: {advice}"
    if st.head_commit is None:
        advice = "branch discarded: 'harness restore' brings it back" if st.discarded_ref else "no branch to merge"
    elif st.findings.would_overwrite or st.findings.journal_paths:
        advice = "merge refused (it would overwrite files git does not track): see 'harness diff'"
    elif st.commits_ahead == 0:
        advice = "nothing to merge: discard" if st.status is RunState.COMPLETED else advice
    elif st.findings.flagged and st.status is RunState.COMPLETED:
        advice = "review the flagged paths, then merge"
    return f"{state}  {', '.join(facts)}: {advice}"


class SessionProblem(CamelModel):
    """A session whose journal could not be read (the others are still reported)."""

    session_id: str
    error: str


HEARTBEAT_STALE_SECONDS = 120.0


def supervisor_alive(summary: RunSummary, journal: Journal) -> bool:
    """On this host the supervisor's lock tells (the kernel drops it with the process); a supervisor
    on another host (a shared filesystem) is alive while its heartbeat is fresh."""
    info = summary.supervisor
    if info is not None and info.host != socket.gethostname():
        return (utcnow() - info.heartbeat_at).total_seconds() < HEARTBEAT_STALE_SECONDS
    return journal.supervisor_alive()


def never_started(summary: RunSummary) -> bool:
    """Created (`running` from the start) and never named a supervisor: every supervisor names itself at its first
    write and one that ends says how, so only a session whose supervisor never started reads so."""
    return summary.status is RunState.RUNNING and summary.supervisor is None


def effective_state(summary: RunSummary, journal: Journal) -> tuple[RunState, bool]:
    """A 'running' summary whose supervisor is gone was interrupted, whatever the file says; so was a 'queued' one
    whose supervisor is gone and that has no place in the queue any more (one with a place stays queued)."""
    alive = supervisor_alive(summary, journal)
    if summary.status is RunState.RUNNING and not alive:
        return RunState.INTERRUPTED, alive
    if (
        summary.status is RunState.QUEUED
        and not alive
        and queue.entry_of(Path(summary.repo), summary.session_id) is None
    ):
        return RunState.INTERRUPTED, alive
    return summary.status, alive


def session_status(
    top: Path, session: str, git: HostGit, repo: RepoState | None = None, races: Mapping[str, RaceTag] | None = None
) -> SessionStatus:
    """`races`: every racer of the repository -> its race, when the caller looked them up once (else the one race
    this session may be a racer of is looked for)."""
    repo = repo or repo_state(git)
    journal = repo.journal(session) if repo.top == top else Journal.for_repo(top, session)
    summary = journal.read_summary()
    state, alive = effective_state(summary, journal)
    reason = summary.stop_reason
    if state is RunState.INTERRUPTED and summary.status in {RunState.RUNNING, RunState.QUEUED}:
        reason = StopReason.NOT_STARTED if never_started(summary) else StopReason.SUPERVISOR_GONE
    head = repo.branch_commit(git, session)
    base, protected = summary.worktree.base_commit, summary.protected_paths
    seen = branch_review(git, repo, journal, base, head, protected) if head else None
    st = SessionStatus(
        session_id=session,
        repo=str(top),
        status=state,
        stop_reason=reason,
        supervisor_alive=alive,
        iteration_count=summary.iteration_count,
        max_iterations=summary.max_iterations,
        last_outcome=summary.last_outcome,
        last_summary=summary.last_summary,
        branch=summary.worktree.branch,
        base_commit=summary.worktree.base_commit,
        head_commit=head,
        commits_ahead=seen.commits_ahead if seen else None,
        objective=summary.objective,
        journal_dir=str(journal.dir),
        workspace=summary.worktree.path,
        error=summary.error,
        usage=summary.usage,
        max_cost_usd=summary.limits.max_cost_usd,
        network=summary.network if not summary.allow_hosts else f"{summary.network} ({', '.join(summary.allow_hosts)})",
        created_at=summary.created_at,
        updated_at=summary.updated_at,
        finished_at=summary.finished_at,
        setup=summary.setup,
        usage_limit=summary.usage_limit if summary.usage_limit.until or summary.usage_limit.total else None,
        findings=seen or Findings.none(),
        discarded_ref=None if head else repo.discarded(session),
        keep_awake=summary.keep_awake.model_copy(update={"held": summary.keep_awake.held and alive}),
        keep_awake_text=keep_awake_text(summary.keep_awake, alive=alive),
        slots=summary.queue.slots,
        slots_in_force=summary.queue.slots or summary.queue.default_slots,
        auto_resume_gave_up=summary.auto_resume.gave_up,
        end_owed=len(summary.end_notice.owed) if summary.end_notice is not None and not alive else 0,
        race=races.get(session) if races is not None else race_of(top, session),
    )
    if state is RunState.QUEUED:
        tickets = queue.entries()
        st.queue_length = len(tickets)
        st.queue_position = next((e.position for e in tickets if e.ticket.key == queue.ticket_key(top, session)), None)
    st.verdict = verdict(st)
    return st


@dataclass(frozen=True)
class StatusRequest:
    repo: Path
    session: str | None = None


def get_status(request: StatusRequest) -> SessionStatus:
    session = validate_session(request.session or "")
    with HostGit(request.repo.resolve()) as git:
        repo = repo_state(git)
        return session_status(repo.top, session, git, repo)


def list_statuses(repo: Path) -> list[SessionStatus | SessionProblem]:
    """Every session of the repository; a broken journal is reported, not fatal."""
    with HostGit(repo.resolve()) as git:
        state = repo_state(git)
        races = race_tags(state.top)
        found: list[SessionStatus | SessionProblem] = []
        for session in list_sessions(state.top):
            try:
                found.append(session_status(state.top, session, git, state, races))
            except HarnessError as exc:
                found.append(SessionProblem(session_id=session, error=exc.message))
        return found


def _run_owners() -> list[RunOwner]:
    """The owner.json of every copy on this machine, in the order of their directories."""
    runs = data_home() / "runs"
    owners = []
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        with contextlib.suppress(HarnessError):
            owners.append(load_model(run_dir / "owner.json", RunOwner))
    return owners


def machine_sessions() -> list[tuple[str, str]]:
    """(repository, session) of every copy on this machine, then of every queued session that has none yet."""
    found = [(owner.repo, owner.session_id) for owner in _run_owners()]
    seen = set(found)
    for entry in queue.entries():
        key = (entry.ticket.repo, entry.ticket.session_id)
        if key not in seen:
            seen.add(key)
            found.append(key)
    return found


def list_all() -> list[SessionStatus | SessionProblem]:
    """Every session that has a copy or a place in the queue on this machine, in any repository (`harness list`):
    one look at each repository, whatever its number of sessions."""
    found: list[SessionStatus | SessionProblem] = []
    looked: dict[str, RepoState | HarnessError] = {}
    races: dict[str, dict[str, RaceTag]] = {}
    for repo, session in machine_sessions():
        git = HostGit(Path(repo))
        state = looked.get(repo)
        if state is None:
            try:
                state = repo_state(git)
                races[repo] = race_tags(state.top)
            except HarnessError as exc:
                state = exc
            looked[repo] = state
        try:
            if isinstance(state, HarnessError):
                raise state
            found.append(session_status(state.top, session, git, state, races[repo]))
        except HarnessError as exc:
            found.append(SessionProblem(session_id=session, error=f"{repo}: {exc.message}"))
    return found
