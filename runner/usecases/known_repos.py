"""The repositories of this machine that have had a session: a small index in the harness home.

`report --all` must find every session of the night, in every repository, including those whose copy is
gone (a discarded session kept with --keep-journal, a copy `gc` removed): the copies' owner.json files
cannot say it alone. So creating (or resuming) a session writes <harness home>/repositories/<repo key>.json
naming its repository: one file per repository, written atomically, so that two sessions starting at once
never lose each other's line. The sessions themselves are read from each repository's journal, which stays
the one record of them. Only `harness gc` shrinks the index (`forget_gone_repos`): it drops the entries of
repositories that no longer exist; until then a repository moved or deleted since is reported as missing
(until it was last used before `--since`). The owner.json of every copy adds the repositories that had
sessions before the index existed.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from runner.base.errors import HarnessError
from runner.base.paths import data_home, repo_key
from runner.record.journal import load_model, save_model
from runner.record.models import JournalModel, RunOwner, utcnow


class KnownRepo(JournalModel):
    """<harness home>/repositories/<repo key>.json: a repository that has had a session on this machine,
    for `report --all` (its sessions are read from its own journal)."""

    schema_version: int = Field(default=1, description="Version of this file's schema.")
    kind: Literal["solo-harness.known-repo"] = Field(
        default="solo-harness.known-repo", description="What this file is."
    )
    repo: str = Field(description="The repository's top directory.")
    first_seen_at: datetime = Field(default_factory=utcnow, description="When it was first named here (UTC).")
    last_used_at: datetime = Field(
        default_factory=utcnow, description="When a session was last created or resumed in it (UTC)."
    )


def known_repos_dir() -> Path:
    return data_home() / "repositories"


def remember_repo(top: Path) -> None:
    """Name `top` in the index, used now. Never fails a run: an index that cannot be written costs
    `report --all` this repository until one of its copies exists."""
    path = known_repos_dir() / f"{repo_key(top)}.json"
    with contextlib.suppress(OSError, HarnessError):
        entry = KnownRepo(repo=str(top))
        if path.is_file():
            with contextlib.suppress(HarnessError):  # a torn entry is written anew
                entry.first_seen_at = load_model(path, KnownRepo).first_seen_at
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, entry)


def known_repos() -> dict[Path, datetime]:
    """Every repository the index or a copy's owner.json names, sorted, with when it was last used (a
    copy's: when it was made). An unreadable entry is skipped (it names nothing that can be read)."""
    found: dict[str, datetime] = {}

    def saw(repo: str, at: datetime) -> None:
        found[repo] = max(at, found.get(repo, at))

    index = known_repos_dir()
    for entry in sorted(index.glob("*.json")) if index.is_dir() else []:
        with contextlib.suppress(HarnessError):
            known = load_model(entry, KnownRepo)
            saw(known.repo, known.last_used_at)
    runs = data_home() / "runs"
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        with contextlib.suppress(HarnessError):
            owner = load_model(run_dir / "owner.json", RunOwner)
            saw(owner.repo, owner.created_at)
    return {Path(repo): found[repo] for repo in sorted(found)}


def repo_gone(top: Path) -> bool:
    """Whether the repository whose top directory was `top` no longer exists there: nothing named .git
    (a directory, or a worktree's file) at `top`. Anything that cannot be looked at (a permission, an I/O
    error) counts as existing: an entry is never dropped on a doubt."""
    try:
        (top / ".git").lstat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def forget_gone_repos() -> list[str]:
    """Drop the index's entries whose repository no longer exists (`harness gc`); the repositories dropped,
    sorted.
    An unreadable entry is left alone. A repository made again at the same place is named again by its next
    session (and an entry a session wrote while this looked is put back)."""
    index = known_repos_dir()
    dropped: list[str] = []
    for path in sorted(index.glob("*.json")) if index.is_dir() else []:
        try:
            entry = load_model(path, KnownRepo)
        except HarnessError:
            continue
        top = Path(entry.repo)
        if not repo_gone(top):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if not repo_gone(top):  # made again meanwhile: its entry back
            with contextlib.suppress(OSError, HarnessError):
                save_model(path, entry)
            continue
        dropped.append(entry.repo)
    return sorted(dropped)
