"""Core of the morning commands `diff`, `merge` and `discard`.

Only the user's own repository is touched, by git on the host: the branch is data fetched with fsck,
and nothing here ever runs inside the copy.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runner.backends.base import LABEL_HOME, LABEL_REPO, LABEL_SESSION, Backend
from runner.errors import InvalidStateError, UnsafeToProceedError, WorkspaceError
from runner.flagged import flagged
from runner.gitops import HostGit
from runner.journal import Journal
from runner.models import CamelModel, DiffStat, RunSummary
from runner.names import branch_for, validate_session
from runner.paths import home_key, repo_key
from runner.workspace import RunDir, Workspace


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
    diff_stat: DiffStat
    patch: str


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
        _, _, summary = _open(ref, git)
        base = summary.worktree.base_commit
        head = _head(git, ref.session)
        files, links = git.changes(base, head)
        return DiffResult(
            session_id=ref.session,
            branch=summary.worktree.branch,
            base_commit=base,
            head_commit=head,
            files=files,
            flagged=flagged(files, links=links),
            diff_stat=git.diff_stat(base, head),
            patch=git.patch(base, head, stat_only=stat_only),
        )


class MergeResult(CamelModel):
    session_id: str
    branch: str
    squash: bool
    merged_commit: str  # the user's HEAD after the merge
    flagged: list[str]


def _refuse_if_running(journal: Journal, session: str) -> None:
    if journal.supervisor_alive():
        raise InvalidStateError(f"session {session!r} is running: stop it first ('harness stop --session {session}')")


def merge(ref: SessionRef, *, squash: bool = False, accept_flagged: bool = False) -> MergeResult:
    """Merge the branch into the user's current branch with the user's own git (never automatically)."""
    with HostGit(ref.repo.resolve()) as git:
        top, journal, summary = _open(ref, git)
        _refuse_if_running(journal, ref.session)
        head = _head(git, ref.session)
        dirty = git.run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise UnsafeToProceedError("the working tree has uncommitted changes: commit or stash them, then merge")
        marked = flagged(*git.changes(summary.worktree.base_commit, head))
        if marked and not accept_flagged:
            raise UnsafeToProceedError(
                f"the branch changes paths that can run code on this machine ({', '.join(marked)}): "
                "review them with 'harness diff', then merge with --accept-flagged"
            )
    branch = summary.worktree.branch
    message = f"Merge harness session {ref.session} ({branch})"
    # The user's own git and identity: this is the user's merge, made on request.
    steps = [["merge", "--squash", branch], ["commit", "-q", "-m", message]] if squash else [
        ["merge", "--no-ff", "-q", "-m", message, branch]
    ]  # fmt: skip
    for step in steps:
        proc = subprocess.run(["git", "-C", str(top), *step], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        if proc.returncode != 0:
            subprocess.run(["git", "-C", str(top), "merge", "--abort"], capture_output=True, check=False)
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise WorkspaceError(f"git {step[0]} failed and was aborted: {detail[0]}")
    with HostGit(top) as git:
        merged = git.ref_commit("HEAD") or ""
    return MergeResult(session_id=ref.session, branch=branch, squash=squash, merged_commit=merged, flagged=marked)


class DiscardResult(CamelModel):
    session_id: str
    removed: list[str]


def discard(backend: Backend, ref: SessionRef) -> DiscardResult:
    """Throw the whole run away: its copy, its branch, its containers and its journal."""
    with HostGit(ref.repo.resolve()) as git:
        top, journal, summary = _open(ref, git)
        _refuse_if_running(journal, ref.session)
        removed = []
        backend.reap({LABEL_HOME: home_key(), LABEL_SESSION: ref.session, LABEL_REPO: repo_key(top)})
        run_dir = RunDir(Path(summary.run_dir))
        if run_dir.root.exists():
            Workspace(backend=backend, run_dir=run_dir, image=summary.image, limits=summary.limits,
                      session=ref.session, repo_key=repo_key(top), runtime=None).delete()  # fmt: skip
            removed.append(str(run_dir.root))
        if git.ref_commit(branch_for(ref.session)) is not None:
            git.run("update-ref", "-d", branch_for(ref.session))
            removed.append(f"branch harness/{ref.session}")
        session_dir = journal.dir.parent.parent
        shutil.rmtree(session_dir)
        removed.append(str(session_dir))
        return DiscardResult(session_id=ref.session, removed=removed)
