"""Core of the morning commands `diff` and `merge`.

Only the user's own repository is touched, by git on the host: the branch is data fetched with fsck,
and nothing here ever runs inside the copy. Both review the branch afresh (never from status's cache):
a merge is refused over flagged paths without --accept-flagged, and always when it would replace a file
git does not track in the user's tree or write into the journal root (issue 8).
"""

from __future__ import annotations

import subprocess
from typing import ClassVar

from runner.base.errors import InvalidStateError, MergeWouldOverwriteError, UnsafeToProceedError, WorkspaceError
from runner.base.names import branch_for
from runner.base.output import neutralise
from runner.record.gitops import HostGit
from runner.record.models import DiffStat
from runner.usecases.repository import SessionRef, open_session, refuse_if_running
from runner.usecases.review.findings import Findings, ShowsFindings, review


class DiffResult(ShowsFindings):
    SHOWN: ClassVar[dict[str, tuple[str, ...]]] = {
        "files": ("flagged", "reasons", "links", "would_overwrite", "journal_paths")
    }

    session_id: str
    branch: str
    base_commit: str
    head_commit: str
    files: list[str]  # base..head, as in the patch (the findings' files add what merging into HEAD writes)
    diff_stat: DiffStat
    patch: str


def _show(paths: list[str], limit: int = 20) -> str:
    """Agent-chosen paths for a one-line message: escapes made visible, newlines too."""
    shown = [neutralise(p).replace("\n", "\\n") for p in paths[:limit]]
    return ", ".join(shown) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _head(git: HostGit, session: str) -> str:
    head = git.ref_commit(branch_for(session))
    if head is None:
        raise InvalidStateError(f"branch harness/{session} does not exist (discarded, or deleted by hand)")
    return head


def diff(ref: SessionRef, *, stat_only: bool = False) -> DiffResult:
    """The branch against its base, with the paths that need a careful look."""
    with open_session(ref.repo, ref.session) as opened:
        git, summary = opened.git, opened.journal.read_summary()
        base = summary.worktree.base_commit
        head = _head(git, ref.session)
        files, _ = git.changes(base, head)
        seen = review(git, opened.top, base, head, onto=git.ref_commit("HEAD"), protected=summary.protected_paths)
        return DiffResult(
            session_id=ref.session,
            branch=summary.worktree.branch,
            base_commit=base,
            head_commit=head,
            files=files,
            findings=seen,
            diff_stat=git.diff_stat(base, head),
            patch=git.patch(base, head, stat_only=stat_only),
        )


class MergeResult(ShowsFindings):
    SHOWN: ClassVar[dict[str, tuple[str, ...]]] = {"merged_commit": ("flagged", "reasons")}

    session_id: str
    branch: str
    into: str  # the branch that was checked out (or "detached HEAD"): the merge goes there
    squash: bool
    merged_commit: str  # the user's HEAD after the merge


def _refuse_overwrites(seen: Findings) -> None:
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
    with open_session(ref.repo, ref.session) as opened:
        git, top, summary = opened.git, opened.top, opened.journal.read_summary()
        refuse_if_running(opened.journal)
        head = _head(git, ref.session)
        dirty = git.run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise UnsafeToProceedError("the working tree has uncommitted changes: commit or stash them, then merge")
        onto = git.ref_commit("HEAD")
        into = git.run("symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.strip() or "detached HEAD"
        seen = review(git, top, summary.worktree.base_commit, head, onto=onto, protected=summary.protected_paths)
        _refuse_overwrites(seen)
        if seen.flagged and not accept_flagged:
            raise UnsafeToProceedError(
                f"the branch changes paths that can run code on this machine or that the check did not run "
                f"({_show(seen.flagged)}): "
                "review them with 'harness diff', then merge with --accept-flagged"
            )
    branch = summary.worktree.branch
    message = f"Merge harness session {ref.session} ({branch})"
    # The reviewed commit, not the branch name: what was checked is what is merged. --no-overwrite-ignore
    # is a second guard only: git 2.39 replaces ignored files even with it (see Findings.would_overwrite).
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
                       findings=seen)  # fmt: skip
