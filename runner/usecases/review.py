"""Core of the morning commands `diff`, `merge` and `discard`.

Only the user's own repository is touched, by git on the host: the branch is data fetched with fsck,
and nothing here ever runs inside the copy. The branch is the agent's: every path it would write is
checked against the list of what runs later, the user's ignore rules, the journal root and tool
directories, and a merge never replaces a file git does not track in the user's tree (issue 8).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from runner.base.errors import (
    InvalidStateError,
    MergeWouldOverwriteError,
    SessionNotFoundError,
    UnsafeToProceedError,
    UsageError,
    WorkspaceError,
)
from runner.base.names import branch_for, validate_session
from runner.base.output import neutralise
from runner.base.paths import PYPROJECT, PYPROJECT_TABLE, data_home, home_key, repo_key, sessions_root
from runner.loop.flagged import FlagReason, classify, in_journal, journal_roots
from runner.record.gitops import HostGit
from runner.record.journal import Journal, save_model
from runner.record.models import CamelModel, DiffStat, JournalModel, RunSummary
from runner.sandbox.images import DEFAULT_IMAGE

if TYPE_CHECKING:  # status and list import this module: the backend and the copy's code only for discard
    from runner.backends.base import Backend


@dataclass(frozen=True)
class SessionRef:
    repo: Path
    session: str


class DiffResult(CamelModel):
    session_id: str
    branch: str
    base_commit: str
    head_commit: str
    files: list[str]
    flagged: list[str]  # paths that could run code on the host later: review them first
    reasons: dict[str, list[FlagReason]]  # why each flagged path is flagged
    links: dict[str, str]  # symlinks (their targets) and submodules in any commit of the branch
    would_overwrite: list[str]  # untracked or ignored files of the working tree a merge would replace
    journal_paths: list[str]  # paths under the harness journal root: a merge never writes them
    diff_stat: DiffStat
    patch: str


@dataclass(frozen=True)
class Review:
    """What the branch would change in the user's tree, and what of it needs care."""

    files: list[str]  # changed from the base (and from the merge base with `onto`)
    reasons: dict[str, list[FlagReason]]
    links: dict[str, str]
    would_overwrite: list[str]
    journal_paths: list[str]

    @property
    def flagged(self) -> list[str]:
        return list(self.reasons)


@dataclass(frozen=True)
class BranchChanges:
    """What the branch's commits change (from the base, and from the merge base with `onto`): read from
    commits only, so it holds for as long as base, head and onto are the same commits."""

    files: list[str]
    links: list[str]  # of `files`, those that are symlinks or submodules now
    history: dict[str, str]  # symlinks and submodules in any commit of the branch (their targets)
    tree: set[str]  # every path of the head's tree
    harness_config: list[str] = field(default_factory=list)  # of `files`, those whose [tool.harness] changed

    @property
    def dirs(self) -> set[str]:
        """Every directory above a changed path."""
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}


def branch_changes(git: HostGit, base: str, head: str, *, onto: str | None = None) -> BranchChanges:
    """base..head; with `onto` (the commit a merge goes into) also what merging it there writes: from
    another branch, or after the agent rewrote its history, the merge base is not the run's base."""
    files, links = git.changes(base, head)
    history = git.links_in_history(base, head)
    since = git.merge_base(onto, head) if onto else None
    olds = [base]
    if since and since != base:
        more, more_links = git.changes(since, head)
        files, links = sorted(set(files) | set(more)), sorted(set(links) | set(more_links))
        history = {**git.links_in_history(since, head), **history}
        olds.append(since)
    config = []
    if PYPROJECT in files:
        now = _harness_table(git.blob(head, PYPROJECT))
        config = [PYPROJECT] if any(_harness_table(git.blob(old, PYPROJECT)) != now for old in olds) else []
    return BranchChanges(files=files, links=links, history=history, tree=git.tree_paths(head), harness_config=config)


def _harness_table(data: bytes | None) -> object:
    """pyproject.toml's [tool.harness] table (run's defaults, runner/record/settings.py), as compared between commits:
    a file that does not parse is compared by its bytes."""
    if data is None:
        return None
    try:
        table: object = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return data
    for key in PYPROJECT_TABLE:
        table = table.get(key) if isinstance(table, dict) else None
    return table


def judge(git: HostGit, top: Path, changes: BranchChanges) -> Review:
    """What of `changes` needs care, given the user's working tree as it is now: its ignore rules, the
    virtualenvs on its disk and the files git does not track there (status.review_inputs names all of
    what this reads)."""
    roots = journal_roots(top, sessions_root(top))
    files = changes.files
    reasons = classify(
        files,
        links=changes.links,
        history_links=list(changes.history),
        ignored=git.ignored(files),
        journal=roots,
        venvs=git.venvs(changes.tree, changes.dirs),
        harness_config=changes.harness_config,
    )
    return Review(
        files=files,
        reasons=reasons,
        links=changes.history,
        would_overwrite=git.in_the_way([p for p in files if p in changes.tree]),
        journal_paths=[p for p in files if in_journal(p, roots)],
    )


def review(git: HostGit, top: Path, base: str, head: str, *, onto: str | None = None) -> Review:
    """Review base..head (and what merging it into `onto` writes) against the user's working tree."""
    return judge(git, top, branch_changes(git, base, head, onto=onto))


def _show(paths: list[str], limit: int = 20) -> str:
    """Agent-chosen paths for a one-line message: escapes made visible, newlines too."""
    shown = [neutralise(p).replace("\n", "\\n") for p in paths[:limit]]
    return ", ".join(shown) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _open(ref: SessionRef, git: HostGit) -> tuple[Path, Journal, RunSummary]:
    top = git.info().top
    journal = Journal.for_repo(top, validate_session(ref.session))
    return top, journal, journal.read_summary()


def _head(git: HostGit, session: str) -> str:
    head = git.ref_commit(branch_for(session))
    if head is None:
        raise InvalidStateError(f"branch harness/{session} does not exist (discarded, or deleted by hand)")
    return head


def diff(ref: SessionRef, *, stat_only: bool = False) -> DiffResult:
    """The branch against its base, with the paths that need a careful look."""
    with HostGit(ref.repo.resolve()) as git:
        top, _, summary = _open(ref, git)
        base = summary.worktree.base_commit
        head = _head(git, ref.session)
        files, _ = git.changes(base, head)
        seen = review(git, top, base, head, onto=git.ref_commit("HEAD"))
        return DiffResult(
            session_id=ref.session,
            branch=summary.worktree.branch,
            base_commit=base,
            head_commit=head,
            files=files,
            flagged=seen.flagged,
            reasons=seen.reasons,
            links=seen.links,
            would_overwrite=seen.would_overwrite,
            journal_paths=seen.journal_paths,
            diff_stat=git.diff_stat(base, head),
            patch=git.patch(base, head, stat_only=stat_only),
        )


class MergeResult(CamelModel):
    session_id: str
    branch: str
    into: str  # the branch that was checked out (or "detached HEAD"): the merge goes there
    squash: bool
    merged_commit: str  # the user's HEAD after the merge
    flagged: list[str]
    reasons: dict[str, list[FlagReason]]


def _refuse_if_running(journal: Journal, session: str) -> None:
    if journal.supervisor_alive():
        raise InvalidStateError(f"session {session!r} is running: stop it first ('harness stop --session {session}')")


def _refuse_overwrites(seen: Review) -> None:
    """Never, not even with --accept-flagged: git replaces ignored files when it merges, and the journal
    is the harness's record of every session."""
    parts = []
    if seen.would_overwrite:
        parts.append(f"replace files git does not track in your working tree ({_show(seen.would_overwrite)})")
    if seen.journal_paths:
        parts.append(f"write into the harness journal ({_show(seen.journal_paths)})")
    if parts:
        raise MergeWouldOverwriteError(
            f"the branch would {' and '.join(parts)}: not merged, even with --accept-flagged; "
            "move your files aside, or take what you want from the branch by hand"
        )


def merge(ref: SessionRef, *, squash: bool = False, accept_flagged: bool = False) -> MergeResult:
    """Merge the branch into the user's current branch with the user's own git (never automatically)."""
    with HostGit(ref.repo.resolve()) as git:
        top, journal, summary = _open(ref, git)
        _refuse_if_running(journal, ref.session)
        head = _head(git, ref.session)
        dirty = git.run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise UnsafeToProceedError("the working tree has uncommitted changes: commit or stash them, then merge")
        onto = git.ref_commit("HEAD")
        into = git.run("symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.strip() or "detached HEAD"
        seen = review(git, top, summary.worktree.base_commit, head, onto=onto)
        _refuse_overwrites(seen)
        if seen.flagged and not accept_flagged:
            raise UnsafeToProceedError(
                f"the branch changes paths that can run code on this machine ({_show(seen.flagged)}): "
                "review them with 'harness diff', then merge with --accept-flagged"
            )
    branch = summary.worktree.branch
    message = f"Merge harness session {ref.session} ({branch})"
    # The reviewed commit, not the branch name: what was checked is what is merged. --no-overwrite-ignore
    # is a second guard only: git 2.39 replaces ignored files even with it (see Review.would_overwrite).
    steps = [["merge", "--squash", "--no-overwrite-ignore", head], ["commit", "-q", "-m", message]] if squash else [
        ["merge", "--no-ff", "--no-overwrite-ignore", "-q", "-m", message, head]
    ]  # fmt: skip
    # The user's own git and identity: this is the user's merge, made on request.
    for step in steps:
        proc = subprocess.run(["git", "-C", str(top), *step], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        if proc.returncode != 0:
            # `merge --abort` needs MERGE_HEAD, which --squash never writes: `reset --merge` undoes both
            # (and keeps untracked files), so a failed commit does not leave the branch staged.
            subprocess.run(["git", "-C", str(top), "reset", "-q", "--merge"], capture_output=True, check=False,
                           stdin=subprocess.DEVNULL)  # fmt: skip
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise WorkspaceError(f"git {step[0]} failed and was undone: {neutralise(detail[0])}")
    with HostGit(top) as git:
        merged = git.ref_commit("HEAD") or ""
    return MergeResult(session_id=ref.session, branch=branch, into=into, squash=squash, merged_commit=merged,
                       flagged=seen.flagged, reasons=seen.reasons)  # fmt: skip


DISCARDED_PREFIX = "refs/harness-discarded"  # <prefix>/<session>/<UTC time of the discard>: an undo
_STAMP = "%Y%m%dT%H%M%S.%fZ"  # sorts as it happened; a valid ref name component


def harness_command(*args: str, repo: Path) -> str:
    """A command line to paste into a shell, from anywhere (the repository is named)."""
    return shlex.join(["harness", *args, "--repo", str(repo)])


def discarded_at(ref: str) -> datetime | None:
    """When the discard that made `ref` happened (None: not a name discard makes)."""
    try:
        return datetime.strptime(ref.rsplit("/", 1)[-1], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def discarded_refs(git: HostGit, session: str) -> dict[str, str]:
    """The session's discarded branch tips (ref -> commit), newest first."""
    return newest_first(git.refs_under(f"{DISCARDED_PREFIX}/{session}"))


def newest_first(found: dict[str, str]) -> dict[str, str]:
    """Discarded tips (ref -> commit), the newest discard first."""
    return dict(sorted(found.items(), key=lambda kv: discarded_at(kv[0]) or datetime.min.replace(tzinfo=UTC),
                       reverse=True))  # fmt: skip


class DiscardedRepo(JournalModel):
    """<harness home>/discarded/<repo key>.json: a repository holding discarded branch tips, for `gc`
    (the discarded session's copy and owner.json are gone, so nothing else names the repository)."""

    schema_version: int = Field(default=1, description="Version of this file's schema.")
    kind: Literal["solo-harness.discarded-repo"] = Field(
        default="solo-harness.discarded-repo", description="What this file is."
    )
    repo: str = Field(description="The repository's top directory, where refs/harness-discarded/ is kept.")


def discarded_repos_dir() -> Path:
    return data_home() / "discarded"


class DiscardResult(CamelModel):
    session_id: str
    removed: list[str]
    kept_ref: str | None  # where the branch tip stays until `gc` expires it
    restore_command: str | None  # the one command that brings the branch back
    kept_journal: str | None  # with --keep-journal


def discard(backend: Backend, ref: SessionRef, *, keep_journal: bool = False) -> DiscardResult:
    """Throw the run away: its copy, its containers and (unless kept) its journal. The branch goes too,
    but its tip is kept under refs/harness-discarded/ so `restore` can undo this until `gc` expires it."""
    from runner.backends.base import LABEL_HOME, LABEL_REPO, LABEL_SESSION
    from runner.loop.workspace import RunDir, Workspace

    with HostGit(ref.repo.resolve()) as git:
        top, journal, summary = _open(ref, git)
        _refuse_if_running(journal, ref.session)
        branch = branch_for(ref.session)
        # Deleting a checked-out branch leaves its files in that tree, staged for the next commit on an
        # unborn branch: discarded in name only.
        where = git.checked_out_in(branch)
        if where:
            raise InvalidStateError(
                f"harness/{ref.session} is checked out in {neutralise(where[0])}: "
                "check out another branch there first, then discard"
            )
        removed = []
        backend.reap({LABEL_HOME: home_key(), LABEL_SESSION: ref.session, LABEL_REPO: repo_key(top)})
        run_dir = RunDir(Path(summary.run_dir))
        if run_dir.root.exists():
            Workspace(backend=backend, run_dir=run_dir, image=DEFAULT_IMAGE, limits=summary.limits,
                      session=ref.session, repo_key=repo_key(top), runtime=None).delete()  # fmt: skip
            removed.append(str(run_dir.root))
        kept_ref = restore_command = None
        head = git.ref_commit(branch)
        if head is not None:
            discarded_repos_dir().mkdir(parents=True, exist_ok=True)
            save_model(discarded_repos_dir() / f"{repo_key(top)}.json", DiscardedRepo(repo=str(top)))
            kept_ref = f"{DISCARDED_PREFIX}/{ref.session}/{datetime.now(UTC).strftime(_STAMP)}"
            # One transaction: the tip is kept exactly when the branch goes (and only the tip reviewed here).
            git.update_refs([f"create {kept_ref} {head}", f"delete {branch} {head}"])
            removed.append(f"branch harness/{ref.session}")
            restore_command = harness_command("restore", "--session", ref.session, repo=top)
        session_dir = journal.dir.parent.parent
        if not keep_journal:
            shutil.rmtree(session_dir)
            removed.append(str(session_dir))
        return DiscardResult(session_id=ref.session, removed=removed, kept_ref=kept_ref,
                             restore_command=restore_command,
                             kept_journal=str(journal.dir) if keep_journal else None)  # fmt: skip


class RestoreResult(CamelModel):
    session_id: str
    branch: str
    commit: str
    restored_from: str  # the discarded ref, removed now that the branch is back


def restore(ref: SessionRef, *, which: str | None = None) -> RestoreResult:
    """Bring back the branch of a discarded session from its newest discarded tip (or `which`: a ref
    name or its last component). Never replaces an existing branch."""
    session = validate_session(ref.session)
    branch = branch_for(session)
    with HostGit(ref.repo.resolve()) as git:
        git.info()
        kept = discarded_refs(git, session)
        if not kept:
            raise SessionNotFoundError(f"nothing of session {session!r} was discarded in this repository "
                                       "(or 'harness gc' expired it)")  # fmt: skip
        if which is None:
            chosen = next(iter(kept))
        else:
            full = which if which.startswith(f"{DISCARDED_PREFIX}/") else f"{DISCARDED_PREFIX}/{session}/{which}"
            if full not in kept:
                raise UsageError(f"--ref: {neutralise(which)!r} is not a discarded tip of {session!r}; "
                                 f"there are: {', '.join(kept)}")  # fmt: skip
            chosen = full
        existing = git.ref_commit(branch)
        if existing is not None:
            raise InvalidStateError(
                f"branch harness/{session} exists (at {existing[:12]}): not replaced; rename or delete it "
                f"first (git branch -m harness/{session} NEW-NAME), then restore"
            )
        commit = kept[chosen]
        # `create` fails if the branch appeared meanwhile; the discarded ref goes in the same transaction.
        git.update_refs([f"create {branch} {commit}", f"delete {chosen} {commit}"])
        return RestoreResult(session_id=session, branch=f"harness/{session}", commit=commit, restored_from=chosen)


def expire_discarded(git: HostGit, *, older_than_seconds: float, now: datetime | None = None) -> list[str]:
    """Delete the discarded tips of every session of a repository discarded more than the given time ago."""
    now = now or datetime.now(UTC)
    expired = []
    for name, commit in git.refs_under(DISCARDED_PREFIX).items():
        when = discarded_at(name)
        if when is not None and (now - when).total_seconds() > older_than_seconds:
            git.update_refs([f"delete {name} {commit}"])
            expired.append(name)
    return expired
