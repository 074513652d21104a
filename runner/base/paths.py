"""Where things live on the host. One seam (`HARNESS_HOME`) that tests point at a temp dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from runner.base.seams import harness_env

JOURNAL_SUBPATH = Path("memory/context-db/sessions")
JOURNAL_LEAF = Path("artifacts/solo-harness")
EXCLUDE_LINE = "/memory/context-db/sessions/*/artifacts/solo-harness/"
# A repository's own harness settings (runner/record/settings.py reads them; a change to them is flagged).
REPO_FILE = "harness.toml"
PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = ("tool", "harness")


def data_home() -> Path:
    """The harness's own data: isolated copies and helper files. Outside any repository."""
    explicit = harness_env().home
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(xdg) / "harness").resolve()


def sessions_root(repo: Path) -> Path:
    """The directory holding one journal directory per session (overridable for tests and CI)."""
    explicit = harness_env().journal_root
    return Path(explicit).resolve() if explicit else repo / JOURNAL_SUBPATH


def journal_dir(repo: Path, session: str) -> Path:
    return sessions_root(repo) / session / JOURNAL_LEAF


def home_key() -> str:
    """Tells apart the containers of different harness homes (users) on one engine."""
    return hashlib.sha256(str(data_home()).encode()).hexdigest()[:12]


def repo_key(repo: Path) -> str:
    return hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:12]


def run_dir(repo: Path, session: str) -> Path:
    """Per-session directory of the isolated copy, its outbox and its export bundles."""
    return data_home() / "runs" / f"{repo_key(repo)}-{session}"


def seed_dir(repo: Path) -> Path:
    """The repository's shared seed: the object store its copies borrow from (runner/loop/seed.py)."""
    return data_home() / "seeds" / repo_key(repo)
