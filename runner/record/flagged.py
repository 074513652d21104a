"""Paths whose change could run code on the host later (design §4 item 7): flagged in the morning report.

An editor task, an agent's settings, a direnv file, a hooks directory, git attributes (filters,
diff drivers) or a CI file is executed by some tool on the user's machine without a review step.
So is a script in a virtualenv or node_modules, and a file the user's tree ignores is one git
replaces without asking (issue 8); the journal is the harness's own record. All of them are flagged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path

from runner.base.paths import JOURNAL_SUBPATH, REPO_FILE
from runner.base.protect import is_protected
from runner.record.models import DescribedEnum

# Directory prefixes (any depth below) and file patterns (matched on the whole path and on the name).
FLAGGED_DIRS = (
    ".vscode/", ".idea/", ".claude/", ".cursor/", ".githooks/", ".husky/", ".github/", ".circleci/",
    ".devcontainer/", ".gitlab/", ".buildkite/",
)  # fmt: skip
FLAGGED_FILES = (
    ".envrc", ".env", ".env.*", ".gitattributes", ".gitmodules", ".gitconfig", ".gitlab-ci.yml",
    ".pre-commit-config.yaml", ".travis.yml", "Jenkinsfile", "azure-pipelines.yml", ".tool-versions",
    ".npmrc", ".yarnrc", ".yarnrc.yml", ".pypirc", "CLAUDE.md", ".mcp.json", "AGENTS.md",
    ".lfsconfig",  # git-lfs reads it from the tree: an lfs.url the next checkout fetches from
    REPO_FILE,  # the next run's defaults (agent command, check, image, budget) come from it
)  # fmt: skip


def is_flagged(path: str) -> bool:
    """Whether a changed path needs a look before it reaches the user's machine. Compared without
    case: on a case-insensitive checkout `.VSCode/` is `.vscode/`."""
    folded = path.casefold()
    parts = folded.split("/")
    for d in FLAGGED_DIRS:
        name = d.rstrip("/")
        # The directory itself (e.g. a symlink named .vscode) or anything below it, at any depth.
        if name in parts:
            return True
    name = parts[-1]
    return any(fnmatch(name, pattern.casefold()) or fnmatch(folded, pattern.casefold()) for pattern in FLAGGED_FILES)


def flagged(paths: list[str], links: list[str] | None = None) -> list[str]:
    """The flagged paths, plus every symlink and submodule (`links`): they can point anywhere."""
    return sorted({p for p in paths if is_flagged(p)} | set(links or []))


class FlagReason(DescribedEnum):
    """Why a changed path needs a look before it reaches the user's machine."""

    RUNS_LATER = "runs-later"  # on the list above: a tool runs it without a review step
    LINK = "link"  # a symlink or submodule in the branch's tree: it can point anywhere
    LINK_IN_HISTORY = "link-in-history"  # a symlink in some commit of the branch, a file in its tip
    IGNORED = "ignored"  # ignored in the user's tree: git treats such files as expendable
    JOURNAL = "journal"  # under the harness journal root: other sessions' records
    TOOL_DIR = "tool-dir"  # a script or executable of a virtualenv, node_modules and the like
    HARNESS_CONFIG = "harness-config"  # pyproject.toml whose [tool.harness] table changed
    PROTECTED = "protected"  # a protected path (--protect): the check ran with the base's version

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return REASON_TEXT


REASON_TEXT: dict[str, str] = {
    FlagReason.RUNS_LATER: "run by a tool without review",
    FlagReason.LINK: "symlink or submodule",
    FlagReason.LINK_IN_HISTORY: "a symlink in one of the branch's commits",
    FlagReason.IGNORED: "ignored in your working tree",
    FlagReason.JOURNAL: "inside the harness journal",
    FlagReason.TOOL_DIR: "inside a tool directory (virtualenv, node_modules...)",
    FlagReason.HARNESS_CONFIG: "changes [tool.harness]: the next run's defaults",
    FlagReason.PROTECTED: "protected: the check ran with the base's version, not this one",
}

# Directories whose files some tool imports or executes (any depth). node_modules: every package's code
# runs on `require`; the others hold virtualenvs or interpreters that shells and IDEs activate.
TOOL_DIRS = ("node_modules", ".direnv", ".tox", ".nox", "__pypackages__", "site-packages", "dist-packages")
# A directory with this name and a bin/ or Scripts/ below it is taken for a virtualenv.
VENV_NAMES = (".venv", "venv", "env", ".env", "virtualenv", ".virtualenv")
VENV_BIN = ("bin", "scripts")
# Wrapper scripts that build tools download and run.
TOOL_FILES = ("gradlew", "gradlew.bat", "mvnw", "mvnw.cmd", "pyvenv.cfg")
TOOL_PREFIXES = ("gradle/wrapper/", ".mvn/wrapper/", ".yarn/releases/", ".yarn/plugins/")


def in_tool_dir(path: str, venvs: Collection[str] = ()) -> bool:
    """Whether `path` is a script or executable of a tool directory. `venvs` are directories known to
    be virtualenvs (they hold a `pyvenv.cfg`) whatever their name."""
    folded = path.casefold()
    parts = folded.split("/")
    venvs = {v.casefold() for v in venvs}
    if any(d in parts[:-1] for d in TOOL_DIRS) or parts[-1] in TOOL_FILES:
        return True
    if any(folded.startswith(p) or f"/{p}" in folded for p in TOOL_PREFIXES):
        return True
    for i, part in enumerate(parts[:-2]):
        venv = "/".join(parts[: i + 1])
        if (part in VENV_NAMES or venv in venvs) and parts[i + 1] in VENV_BIN:
            return True
    return False


def journal_roots(top: Path, configured: Path) -> list[str]:
    """The journal roots inside the repository, as repository paths (folded): the default one, and the
    configured one when it lies inside the working tree."""
    roots = {JOURNAL_SUBPATH.as_posix()}
    with contextlib.suppress(ValueError):
        roots.add(configured.resolve().relative_to(top.resolve()).as_posix())
    return sorted(r.casefold() for r in roots if r not in ("", "."))


def in_journal(path: str, roots: Collection[str]) -> bool:
    """`path` is under a journal root, or is one of its parents (a file or link there replaces it)."""
    folded = path.casefold().rstrip("/")
    return any(folded == r or folded.startswith(r + "/") or r.startswith(folded + "/") for r in roots)


def classify(
    paths: list[str],
    *,
    links: Collection[str] = (),
    history_links: Collection[str] = (),
    ignored: Collection[str] = (),
    journal: Collection[str] = (),
    venvs: Collection[str] = (),
    harness_config: Collection[str] = (),
    protected: Sequence[str] = (),
) -> dict[str, list[FlagReason]]:
    """Every flagged path with its reasons: the protected ones first (the check did not see them as they are
    here), each group in path order. `paths` are the changed paths; `links` and `history_links` may name paths
    outside them (a link of an earlier commit); `protected`: the session's --protect patterns."""
    reasons: dict[str, list[FlagReason]] = {}
    changed = set(paths)
    for path in sorted(changed | set(links) | set(history_links)):
        why = [FlagReason.PROTECTED] if path in changed and is_protected(protected, path, fold=True) else []
        why += [FlagReason.RUNS_LATER] if is_flagged(path) else []
        why += [FlagReason.LINK] if path in links else []
        why += [FlagReason.LINK_IN_HISTORY] if path in history_links and path not in links else []
        why += [FlagReason.IGNORED] if path in ignored else []
        why += [FlagReason.JOURNAL] if in_journal(path, journal) else []
        why += [FlagReason.TOOL_DIR] if in_tool_dir(path, venvs) else []
        why += [FlagReason.HARNESS_CONFIG] if path in harness_config else []
        if why:
            reasons[path] = why
    first = [p for p, why in reasons.items() if FlagReason.PROTECTED in why]
    return {p: reasons[p] for p in first} | {p: why for p, why in reasons.items() if p not in first}
