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
    if any(path.startswith(d) or f"/{d}" in f"/{path}" for d in FLAGGED_DIRS):
        return True
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch(name, pattern) or fnmatch(path, pattern) for pattern in FLAGGED_FILES)


def flagged(paths: list[str]) -> list[str]:
    return sorted(p for p in paths if is_flagged(p))
