"""Paths whose change could run code on the host later (design §4 item 7): flagged in the morning report.

An editor task, an agent's settings, a direnv file, a hooks directory, git attributes (filters,
diff drivers) or a CI file is executed by some tool on the user's machine without a review step.
"""

from __future__ import annotations

from fnmatch import fnmatch

# Directory prefixes (any depth below) and file patterns (matched on the whole path and on the name).
FLAGGED_DIRS = (
    ".vscode/", ".idea/", ".claude/", ".cursor/", ".githooks/", ".husky/", ".github/", ".circleci/",
    ".devcontainer/", ".gitlab/", ".buildkite/",
)  # fmt: skip
FLAGGED_FILES = (
    ".envrc", ".env", ".env.*", ".gitattributes", ".gitmodules", ".gitconfig", ".gitlab-ci.yml",
    ".pre-commit-config.yaml", ".travis.yml", "Jenkinsfile", "azure-pipelines.yml", ".tool-versions",
    ".npmrc", ".yarnrc", ".yarnrc.yml", ".pypirc", "CLAUDE.md", ".mcp.json", "AGENTS.md",
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
