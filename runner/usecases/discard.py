"""Core of `discard` and `restore`, and the expiry of what discard kept (run by `gc`).

Discard throws a run away (its copy, its containers, its journal unless kept) but keeps the tip of its
branch under refs/harness-discarded/ in the user's repository, so that `restore` can undo it until `gc`
expires the tip. Both are one ref transaction: a tip is kept exactly when the branch goes.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from runner.base.errors import InvalidStateError, SessionNotFoundError, UsageError
from runner.base.names import branch_for, validate_session
from runner.base.output import neutralise
from runner.base.paths import data_home, repo_key
from runner.record import queue
from runner.record.gitops import HostGit
from runner.record.journal import save_model
from runner.record.models import CamelModel, JournalModel
from runner.record.notify import remove_targets, targets_path
from runner.sandbox.images import DEFAULT_IMAGE
from runner.usecases.repository import (
    DISCARDED_PREFIX,
    SessionRef,
    discarded_at,
    discarded_ref,
    harness_command,
    newest_first,
    open_session,
    refuse_if_running,
)

if TYPE_CHECKING:  # gc imports this module: the backend and the copy's code only for discard
    from runner.backends.base import Backend


def discarded_refs(git: HostGit, session: str) -> dict[str, str]:
    """The session's discarded branch tips (ref -> commit), newest first."""
    return newest_first(git.refs_under(f"{DISCARDED_PREFIX}/{session}"))


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
    from runner.loop.workspace import RunDir, Workspace
    from runner.sandbox.container import session_labels

    with open_session(ref.repo, ref.session) as opened:
        git, top, journal = opened.git, opened.top, opened.journal
        summary = journal.read_summary()
        refuse_if_running(journal)
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
        if queue.remove(top, ref.session):  # a session parked in the queue (its supervisor gone) leaves it
            removed.append("its place in the queue")
        backend.reap(session_labels(ref.session, repo_key(top)))
        run_dir = RunDir(Path(summary.run_dir))
        if run_dir.root.exists():
            Workspace(backend=backend, run_dir=run_dir, image=DEFAULT_IMAGE, limits=summary.limits,
                      session=ref.session, repo_key=repo_key(top), runtime=None).delete()  # fmt: skip
            removed.append(str(run_dir.root))
        if targets_path(top, ref.session).exists():
            remove_targets(top, ref.session)  # the notification targets, secrets included
            removed.append(str(targets_path(top, ref.session)))
        kept_ref = restore_command = None
        head = git.ref_commit(branch)
        if head is not None:
            discarded_repos_dir().mkdir(parents=True, exist_ok=True)
            save_model(discarded_repos_dir() / f"{repo_key(top)}.json", DiscardedRepo(repo=str(top)))
            kept_ref = discarded_ref(ref.session, datetime.now(UTC))
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
