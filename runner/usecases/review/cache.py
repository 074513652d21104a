"""The review of a session's branch as `status`, `list`, `hud` and `report` show it: cached in its journal.

The review takes a dozen host git commands. Its result is kept in the session's journal
(.review-cache.json, hidden like its locks) with what it was computed from (the commits, and a digest of
every other input: the review's code, the journal roots, and the state of each path of the user's tree
and .git that the review reads), and it is used only while all of that is unchanged. So `list` runs git
once per repository, not per session. `diff` and `merge` always review afresh: nothing is ever refused or
allowed on a cached review.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from runner.base.errors import JournalError
from runner.record.flagged import journal_roots
from runner.record.gitops import HostGit, user_excludes_file
from runner.record.journal import Journal, load_model, save_model
from runner.record.models import JournalModel
from runner.usecases.repository import RepoState
from runner.usecases.review.findings import Findings, branch_changes, judge


class _ReviewedCommits(JournalModel):
    """What a cached review was computed from: the first keys of .review-cache.json."""

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


class ReviewCache(Findings, _ReviewedCommits):
    """.review-cache.json in a session's journal: the last review of its branch shown by `status`, `list`,
    `hud` or `report`, with what it was computed from. Used only while every input is unchanged; written
    by whichever of those commands reviewed the branch last."""

    commits_ahead: int = Field(description="Commits from the base to the branch's head.")


REVIEW_CODE = (
    "runner.record.flagged",
    "runner.record.gitops",
    "runner.usecases.repository",
    "runner.usecases.review.findings",
    __name__,
)


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
        _EXCLUDES[key] = user_excludes_file()
    return _EXCLUDES[key]


def _state(path: Path, *, content: bool) -> str:
    """A path's type, and for a file whose content is read its identity, size and times."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "-"
    kind = f"{stat.S_IFMT(st.st_mode):o}"
    return f"{kind} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}" if content else kind


def review_inputs(git: HostGit, repo: RepoState, files: list[str], protected: Sequence[str] = ()) -> str | None:
    """The digest of what the review reads besides commits (see findings.judge, and the session's protected
    paths), for these changed paths.
    None when it cannot be summed up by a few stats: a changed path that is a directory on the disk (the
    review looks at every untracked file below it)."""
    code = _code_digest()
    if code is None:
        return None
    top = repo.top
    excludes = _excludes_file() or repo.excludes_in_config(git)
    lines = [code.hex(), *journal_roots(top, repo.sessions_root), f"excludes {excludes}"]
    lines += [f"protect {p}" for p in protected]
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


def branch_review(
    git: HostGit, repo: RepoState, journal: Journal, base: str, head: str, protected: Sequence[str] = ()
) -> ReviewCache:
    """The same review as `diff` and `merge` (ignored paths, the journal root, tool scripts, links, the
    protected paths), from the journal's cache while its inputs are unchanged."""
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
        and cached.inputs == review_inputs(git, repo, cached.files, protected)
    ):
        return cached
    changes = branch_changes(git, base, head, onto=repo.head)
    inputs = review_inputs(git, repo, changes.files, protected)  # before the tree is read: a change shows next time
    seen = judge(git, repo.top, changes, protected)
    fresh = ReviewCache(
        base_commit=base, head_commit=head, onto_commit=repo.head, inputs=inputs or "",
        commits_ahead=len(git.commits_between(base, head)), **dict(seen),
    )  # fmt: skip
    if inputs is not None:
        with contextlib.suppress(JournalError):  # a journal that cannot be written is still shown
            save_model(path, fresh)
    return fresh
