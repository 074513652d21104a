"""The review of a session's branch: what it would change in the user's tree, and what of it needs care.

Read from commits (what the branch changes, from its base and from the merge base with where a merge
goes) and from the user's working tree as it is now (its ignore rules, virtualenvs, the files git does
not track): every path the agent's branch would write is checked against the list of what runs later,
the user's ignore rules, the journal root and tool directories (runner/record/flagged.py).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer, model_validator
from pydantic.alias_generators import to_camel

from runner.base.paths import PYPROJECT, PYPROJECT_TABLE, sessions_root
from runner.record.flagged import FlagReason, classify, in_journal, journal_roots
from runner.record.gitops import HostGit
from runner.record.models import CamelModel


class Findings(CamelModel):
    """What a branch would change in the user's tree, and what of it needs care: the review's result."""

    files: list[str] = Field(description="The changed paths (from the base, and from the merge base with HEAD).")
    reasons: dict[str, list[FlagReason]] = Field(description="Flagged paths and why each is flagged.")
    links: dict[str, str] = Field(description="Symlinks and submodules in any commit of the branch.")
    would_overwrite: list[str] = Field(description="Files git does not track that a merge would replace.")
    journal_paths: list[str] = Field(description="Changed paths under the harness journal root.")

    @property
    def flagged(self) -> list[str]:
        """The changed paths that could run code on the host later: to review first."""
        return list(self.reasons)

    @classmethod
    def none(cls) -> Findings:
        """Nothing to review: the session has no branch."""
        return cls(files=[], reasons={}, links={}, would_overwrite=[], journal_paths=[])


class ShowsFindings(CamelModel):
    """A command's result that embeds the review's findings. Its JSON shows some of them as keys of its
    own, the flat shape the commands have always printed: SHOWN names, for a field of the result, the
    findings shown right after it (`flagged` included). A result whose JSON holds all of its findings
    reads it back (`findings_from`): the findings are rebuilt from those keys."""

    SHOWN: ClassVar[dict[str, tuple[str, ...]]] = {}
    findings: Findings = Field(exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _unflat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "findings" not in data:
            found = cls.findings_from(data)
            if found is not None:
                return {**data, "findings": found}
        return data

    @classmethod
    def findings_from(cls, data: dict[str, Any]) -> Findings | None:
        """The findings of a result read back from its flat JSON (or its dump by field names); None when
        they are not all there (this result's JSON does not show them all, or is not a result's)."""
        return None

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        own: dict[str, Any] = handler(self)
        found = self.findings.model_dump(mode=info.mode, by_alias=info.by_alias)
        found["flagged"] = self.findings.flagged
        out: dict[str, Any] = {}
        for name, spec in type(self).model_fields.items():
            key = (spec.alias or name) if info.by_alias else name
            if key in own:
                out[key] = own[key]
            for shown in self.SHOWN.get(name, ()):
                shown_key = to_camel(shown) if info.by_alias else shown
                out[shown_key] = found[shown_key]
        return out


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


def judge(git: HostGit, top: Path, changes: BranchChanges, protected: Sequence[str] = ()) -> Findings:
    """What of `changes` needs care, given the user's working tree as it is now: its ignore rules, the
    virtualenvs on its disk and the files git does not track there (cache.review_inputs names all of
    what this reads); `protected`: the session's protected paths, flagged first."""
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
        protected=protected,
    )
    return Findings(
        files=files,
        reasons=reasons,
        links=changes.history,
        would_overwrite=git.in_the_way([p for p in files if p in changes.tree]),
        journal_paths=[p for p in files if in_journal(p, roots)],
    )


def review(
    git: HostGit, top: Path, base: str, head: str, *, onto: str | None = None, protected: Sequence[str] = ()
) -> Findings:
    """Review base..head (and what merging it into `onto` writes) against the user's working tree;
    `protected`: the session's protected paths (--protect), flagged first."""
    return judge(git, top, branch_changes(git, base, head, onto=onto), protected)
