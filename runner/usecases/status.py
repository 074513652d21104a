"""Core of `status` and `list`: what each session of a repository (or of this machine) has come to.

The review of a session's branch (its flagged paths, what a merge would overwrite, the commits ahead)
takes a dozen host git commands. The result is kept in the session's journal (.review-cache.json,
hidden like its locks) with what it was computed from (the commits, and a digest of every other input:
the review's code, the journal roots, and the state of each path of the user's tree and .git that the
review reads), and it is used only while all of that is unchanged. So `list` runs git once per
repository, not per session. `diff` and `merge` always review afresh: nothing is ever refused or
allowed on a cached review.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from runner.base.errors import ExitCode, HarnessError, JournalError, NotARepositoryError
from runner.base.names import branch_for, validate_session
from runner.base.paths import data_home, sessions_root
from runner.loop.flagged import FlagReason, journal_roots
from runner.record.gitops import HostGit, _user_excludes_file
from runner.record.journal import Journal, list_sessions, load_model, save_model
from runner.record.models import (
    CamelModel,
    GatewayUsage,
    JournalModel,
    Outcome,
    RunOwner,
    RunState,
    RunSummary,
    SetupRecord,
    StopReason,
    UsageLimitWait,
    utcnow,
)
from runner.usecases.review import DISCARDED_PREFIX, branch_changes, judge, newest_first

EXIT_FOR_STATE = {
    RunState.COMPLETED: ExitCode.OK,
    RunState.RUNNING: ExitCode.RUN_RUNNING,
    RunState.BLOCKED: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.STOPPED: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.INTERRUPTED: ExitCode.RUN_NEEDS_ATTENTION,
    RunState.FAILED: ExitCode.RUN_FAILED,
    RunState.STUCK: ExitCode.RUN_NEEDS_ATTENTION,
}


class SessionStatus(CamelModel):
    """The morning report of one session (field names as in run-summary.json)."""

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
    flagged: list[str]  # changed paths that could run code on the host later
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
    reasons: dict[str, list[FlagReason]] = Field(default_factory=dict)  # why each flagged path is flagged
    would_overwrite: list[str] = Field(default_factory=list)  # untracked files a merge would replace: refused
    journal_paths: list[str] = Field(default_factory=list)  # paths in the journal root: a merge is refused
    discarded_ref: str | None = None  # the newest discarded tip of the branch ('harness restore' brings it back)
    verdict: str = ""  # one line to scan in the morning: state, numbers, what to do next

    @property
    def exit_code(self) -> ExitCode:
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
}


def verdict(st: SessionStatus) -> str:
    """'completed  5 iterations, 7 commits, $1.23, 2 flagged: review the flagged paths, then merge'.
    Only states and numbers: nothing the agent wrote."""
    state = st.status.value
    if st.stop_reason and st.stop_reason is not StopReason.AGENT_DONE:
        state += f" ({st.stop_reason.value})"
    n = st.iteration_count
    facts = [f"{n} iteration{'s' if n != 1 else ''}"]
    if st.commits_ahead is not None:
        facts.append(f"{st.commits_ahead} commit{'s' if st.commits_ahead != 1 else ''}")
    if st.usage.requests or st.usage.cost_usd:
        facts.append(f"${st.usage.cost_usd:.2f}")
    if st.flagged:
        facts.append(f"{len(st.flagged)} flagged")
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
        return f"{state}  {', '.join(facts)}: read setup.log, fix the setup (resume --setup or --setup-allow-host)"
    if st.status is RunState.RUNNING:
        return f"{state}  {', '.join(facts)}: {advice}"
    if st.head_commit is None:
        advice = "branch discarded: 'harness restore' brings it back" if st.discarded_ref else "no branch to merge"
    elif st.would_overwrite or st.journal_paths:
        advice = "merge refused (it would overwrite files git does not track): see 'harness diff'"
    elif st.commits_ahead == 0:
        advice = "nothing to merge: discard" if st.status is RunState.COMPLETED else advice
    elif st.flagged and st.status is RunState.COMPLETED:
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


def effective_state(summary: RunSummary, journal: Journal) -> tuple[RunState, bool]:
    """A 'running' summary whose supervisor is gone was interrupted, whatever the file says."""
    alive = supervisor_alive(summary, journal)
    if summary.status is RunState.RUNNING and not alive:
        return RunState.INTERRUPTED, alive
    return summary.status, alive


@dataclass(frozen=True)
class RepoState:
    """One look at a repository, shared by all of its sessions in one command."""

    top: Path
    common_dir: Path
    git_dir: Path  # this working tree's own (its index), which differs from common_dir in a linked worktree
    head: str | None  # HEAD's commit, where a merge would go (None: unborn)
    sessions_root: Path  # where its sessions' journals are (read from the environment once)
    refs: dict[str, str] = field(default_factory=dict)  # the harness's branches and discarded tips -> object
    _asked: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    def journal(self, session: str) -> Journal:
        return Journal.under(self.sessions_root, session)

    def excludes_in_config(self, git: HostGit) -> str | None:
        """core.excludesFile of the repository's own config, which check-ignore reads when the user's
        global config names none (asked once, and only then)."""
        if "excludes" not in self._asked:
            proc = git.run("config", "--path", "--get", "core.excludesFile", check=False)
            self._asked["excludes"] = proc.stdout.strip() or None
        return self._asked["excludes"]

    def branch_commit(self, git: HostGit, session: str) -> str | None:
        ref = branch_for(session)
        found = self.refs.get(ref)
        if found is None or found.startswith("commit "):
            return found.removeprefix("commit ") if found else None
        return git.ref_commit(ref)  # a tag object (or worse) where a commit should be: git peels it

    def discarded(self, session: str) -> str | None:
        """The newest discarded tip of the session's branch."""
        prefix = f"{DISCARDED_PREFIX}/{session}/"
        mine = {ref: obj.split(" ", 1)[1] for ref, obj in self.refs.items() if ref.startswith(prefix)}
        return next(iter(newest_first(mine)), None)


_REV_PARSE = ("rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir", "--absolute-git-dir")


def repo_state(git: HostGit) -> RepoState:
    """Three git commands: the repository's directories and HEAD, then the harness's refs."""
    proc = git.run(*_REV_PARSE, "HEAD^{commit}", check=False)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:  # an unborn HEAD (or a file of that name), or not a repository at all
        proc = git.run(*_REV_PARSE, check=False)
        if proc.returncode != 0:
            raise NotARepositoryError(f"{git.repo} is not a git repository (or has no working tree)")
        lines = [*proc.stdout.splitlines()[:3], git.ref_commit("HEAD") or ""]
    top, common, git_dir, head = lines[:4]
    out = git.run("for-each-ref", "--format=%(refname) %(objecttype) %(objectname)", "refs/heads/harness/",
                  f"{DISCARDED_PREFIX}/").stdout  # fmt: skip
    refs = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    root = Path(top).resolve()
    return RepoState(top=root, common_dir=Path(common).resolve(), git_dir=Path(git_dir).resolve(), head=head or None,
                     sessions_root=sessions_root(root), refs=refs)  # fmt: skip


class ReviewCache(JournalModel):
    """.review-cache.json in a session's journal: the last review of its branch shown by `status`, `list`,
    `hud` or `report`, with what it was computed from. Used only while every input is unchanged; written
    by whichever of those commands reviewed the branch last."""

    schema_version: int = Field(default=1, description="Version of this file's schema.")
    kind: Literal["solo-harness.review-cache"] = Field(
        default="solo-harness.review-cache", description="Always `solo-harness.review-cache`."
    )
    base_commit: str = Field(description="The run's base commit.")
    head_commit: str = Field(description="The branch's commit that was reviewed.")
    onto_commit: str | None = Field(description="The user's HEAD then (a merge goes there); null: unborn.")
    inputs: str = Field(
        description="SHA-256 of the review's other inputs: its code, the journal roots, and the state (type, "
        "and for files read: inode, size, times) of the index, config, exclude files, every .gitignore and "
        "pyvenv.cfg on the way to a changed path, and each changed path and its parents in the working tree."
    )
    files: list[str] = Field(description="The changed paths (from the base, and from the merge base with HEAD).")
    commits_ahead: int = Field(description="Commits from the base to the branch's head.")
    reasons: dict[str, list[FlagReason]] = Field(description="Flagged paths and why each is flagged.")
    links: dict[str, str] = Field(description="Symlinks and submodules in any commit of the branch.")
    would_overwrite: list[str] = Field(description="Files git does not track that a merge would replace.")
    journal_paths: list[str] = Field(description="Changed paths under the harness journal root.")

    @property
    def flagged(self) -> list[str]:
        return list(self.reasons)


REVIEW_CODE = ("runner.loop.flagged", "runner.usecases.review", "runner.record.gitops", __name__)


@functools.cache
def _code_digest() -> bytes | None:
    """The review's own code: a harness with other rules must not show the old verdicts."""
    h = hashlib.sha256()
    for name in REVIEW_CODE:
        source = getattr(sys.modules.get(name), "__file__", None)
        if source is None:
            return None
        h.update(Path(source).read_bytes())
    return h.digest()


_EXCLUDES: dict[tuple[str, ...], str | None] = {}


def _excludes_file() -> str | None:
    """The user's global excludes file, as the review's check-ignore finds it (one `git config --global`
    per process), asked again when a file it comes from changes (the hud lives long)."""
    home, xdg = os.environ.get("HOME", ""), os.environ.get("XDG_CONFIG_HOME", "")
    config_dir = Path(xdg) if xdg else Path(home or "/nonexistent") / ".config"
    sources = [
        Path(home or "/nonexistent") / ".gitconfig",
        config_dir / "git" / "config",
        config_dir / "git" / "ignore",
    ]
    if os.environ.get("GIT_CONFIG_GLOBAL"):
        sources.append(Path(os.environ["GIT_CONFIG_GLOBAL"]))
    key = (home, xdg, os.environ.get("GIT_CONFIG_GLOBAL", ""), *(_state(p, content=True) for p in sources))
    if key not in _EXCLUDES:
        _EXCLUDES[key] = _user_excludes_file()
    return _EXCLUDES[key]


def _state(path: Path, *, content: bool) -> str:
    """A path's type, and for a file whose content is read its identity, size and times."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "-"
    kind = f"{stat.S_IFMT(st.st_mode):o}"
    return f"{kind} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}" if content else kind


def review_inputs(git: HostGit, repo: RepoState, files: list[str]) -> str | None:
    """The digest of what the review reads besides commits (see review.judge), for these changed paths.
    None when it cannot be summed up by a few stats: a changed path that is a directory on the disk (the
    review looks at every untracked file below it)."""
    code = _code_digest()
    if code is None:
        return None
    top = repo.top
    excludes = _excludes_file() or repo.excludes_in_config(git)
    lines = [code.hex(), *journal_roots(top, repo.sessions_root), f"excludes {excludes}"]
    for path in (repo.git_dir / "index", repo.git_dir / "config.worktree", repo.common_dir / "config",
                 repo.common_dir / "info" / "exclude", *([top / excludes] if excludes else [])):  # fmt: skip
        lines.append(f"{path} {_state(path, content=True)}")
    dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(p.count("/") + 1)}
    for d in sorted(dirs):
        lines.append(f"{d}/.gitignore {_state(top / d / '.gitignore', content=True)}")
        lines.append(f"{d}/pyvenv.cfg {_state(top / d / 'pyvenv.cfg', content=False)}")
    for p in files:
        parts = p.split("/")
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            kind = _state(top / rel, content=False)
            lines.append(f"{rel} {kind}")
            if depth == len(parts) and kind == f"{stat.S_IFDIR:o}":
                return None
            if kind != f"{stat.S_IFDIR:o}":
                break
    return hashlib.sha256("\0".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def branch_review(git: HostGit, repo: RepoState, journal: Journal, base: str, head: str) -> ReviewCache:
    """The same review as `diff` and `merge` (ignored paths, the journal root, tool scripts, links), from
    the journal's cache while its inputs are unchanged."""
    path = journal.review_cache_path
    try:
        cached: ReviewCache | None = load_model(path, ReviewCache)
    except JournalError:
        cached = None
    key = (base, head, repo.head)
    # The commits first: the working tree is looked at only when they match.
    if (
        cached
        and (cached.base_commit, cached.head_commit, cached.onto_commit) == key
        and cached.inputs == review_inputs(git, repo, cached.files)
    ):
        return cached
    changes = branch_changes(git, base, head, onto=repo.head)
    inputs = review_inputs(git, repo, changes.files)  # before the tree is read: a change meanwhile shows next time
    seen = judge(git, repo.top, changes)
    fresh = ReviewCache(
        base_commit=base, head_commit=head, onto_commit=repo.head, inputs=inputs or "", files=changes.files,
        commits_ahead=len(git.commits_between(base, head)), reasons=seen.reasons, links=seen.links,
        would_overwrite=seen.would_overwrite, journal_paths=seen.journal_paths,
    )  # fmt: skip
    if inputs is not None:
        with contextlib.suppress(JournalError):  # a journal that cannot be written is still shown
            save_model(path, fresh)
    return fresh


def session_status(top: Path, session: str, git: HostGit, repo: RepoState | None = None) -> SessionStatus:
    repo = repo or repo_state(git)
    journal = repo.journal(session) if repo.top == top else Journal.for_repo(top, session)
    summary = journal.read_summary()
    state, alive = effective_state(summary, journal)
    reason = summary.stop_reason
    if state is RunState.INTERRUPTED and summary.status is RunState.RUNNING:
        reason = StopReason.SUPERVISOR_GONE
    head = repo.branch_commit(git, session)
    seen = branch_review(git, repo, journal, summary.worktree.base_commit, head) if head else None
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
        flagged=seen.flagged if seen else [],
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
        reasons=seen.reasons if seen else {},
        would_overwrite=seen.would_overwrite if seen else [],
        journal_paths=seen.journal_paths if seen else [],
        discarded_ref=None if head else repo.discarded(session),
    )
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
        found: list[SessionStatus | SessionProblem] = []
        for session in list_sessions(state.top):
            try:
                found.append(session_status(state.top, session, git, state))
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


def list_all() -> list[SessionStatus | SessionProblem]:
    """Every session that has a copy on this machine, in any repository (`harness list`): one look at
    each repository, whatever its number of sessions."""
    found: list[SessionStatus | SessionProblem] = []
    looked: dict[str, RepoState | HarnessError] = {}
    for owner in _run_owners():
        git = HostGit(Path(owner.repo))
        state = looked.get(owner.repo)
        if state is None:
            try:
                state = repo_state(git)
            except HarnessError as exc:
                state = exc
            looked[owner.repo] = state
        try:
            if isinstance(state, HarnessError):
                raise state
            found.append(session_status(state.top, owner.session_id, git, state))
        except HarnessError as exc:
            found.append(SessionProblem(session_id=owner.session_id, error=f"{owner.repo}: {exc.message}"))
    return found
