"""The review of a session's branch: what it would change in the user's tree, and what of it needs care.

Read from commits (what the branch changes, from its base and from the merge base with where a merge
goes) and from the user's working tree as it is now (its ignore rules, virtualenvs, the files git does
not track): every path the agent's branch would write is checked against the list of what runs later,
the user's ignore rules, the journal root and tool directories (runner/loop/flagged.py).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from runner.base.paths import PYPROJECT, PYPROJECT_TABLE, sessions_root
from runner.loop.flagged import FlagReason, classify, in_journal, journal_roots
from runner.record.gitops import HostGit


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
    virtualenvs on its disk and the files git does not track there (cache.review_inputs names all of
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
