"""The check's view of the copy (runner/loop/protect.py), made by its helper on the real engine from a copy the
way an agent can leave it: a protected file's parent replaced by a symlink, a directory it closed (mode 000),
an ignored file, a FIFO and a name with a newline in a protected directory, a protected file deleted and one
modified. What the view holds is read from the host; the view is gone after the check. Each on a copy of its own
and on an overlay of the seed's tree (a racer's copy), whose files the view copies rather than links."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

import pytest

from runner.backends.base import Backend
from runner.base.layout import AGENT_UID
from runner.base.paths import repo_key, run_dir, seed_dir
from runner.loop.copy_scripts import VIEW_DIR
from runner.loop.seed import tree_dir
from runner.loop.workspace import RunDir, Workspace
from runner.record.gitops import HostGit
from runner.record.models import Limits, RunOwner
from tests.helpers import GitRepo

pytestmark = pytest.mark.docker

PATTERNS = ["tests", "**/conftest.py", "pyproject.toml"]

AGENT = r"""set -eu
cd /workspace
mkdir elsewhere && printf 'AGENT\n' > elsewhere/conftest.py && printf 'agent mod\n' > elsewhere/mod.py
rm -r pkg && ln -s elsewhere pkg
mkdir closed && printf 'kept\n' > closed/f && chmod 000 closed
printf 'noise\n' > tests/debug.log
mkdir tests/__pycache__ && printf 'stale' > tests/__pycache__/test_a.cpython-311.pyc
mkfifo tests/pipe
printf 'x\n' > "tests/new
line.py"
rm tests/test_a.py
printf '[tool.pytest.ini_options]\naddopts = "-k nothing"\n' > pyproject.toml
printf 'print("fixed")\n' > app.py
"""


@contextlib.contextmanager
def _workspace(repo: GitRepo, how: str, agent: str, backend: Backend | None = None) -> Iterator[Workspace]:
    """A copy (a clone of its own, or an overlay of the seed's tree as a racer's is) as `agent` left it, on
    `backend` (Docker when None; tests/integration/test_kubernetes_protect.py gives the k8s lab's)."""
    from runner.backends.docker.engine import DockerBackend

    for path, text in {
        "tests/test_a.py": "def test_a():\n    assert 0\n",
        "tests/unit/test_b.py": "def test_b():\n    assert 0\n",
        "pkg/conftest.py": "BASE\n",
        "pkg/mod.py": "base mod\n",
        "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n",
        ".gitignore": "*.log\n",
    }.items():
        (repo.path / path).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / path).write_text(text)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "tests")
    base = repo.git("rev-parse", "HEAD")
    seed = seed_dir(repo.path)
    rd = RunDir(run_dir(repo.path, "view"))
    if how == "overlay":
        rd = RunDir(rd.root, seed=seed, lower=tree_dir(seed, base))
    ws = Workspace(
        backend=backend or DockerBackend(), run_dir=rd, image="harness-base:latest", limits=Limits(), session="view",
        repo_key=repo_key(repo.path),
    )  # fmt: skip
    ws.create(
        source_git_dir=repo.path / ".git", base_commit=base, branch="harness/view",
        owner=RunOwner(session_id="view", repo=str(repo.path), journal_dir=str(repo.path / "journal")),
    )  # fmt: skip
    try:
        ws._helper(agent, ws.dir.copy_mounts(read_only=False), {}, "the agent's changes")
        yield ws
    finally:
        ws.close()
        ws.delete()


@pytest.fixture(params=["clone", "overlay"])
def workspace(repo: GitRepo, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    with _workspace(repo, request.param, AGENT) as ws:
        yield ws


def test_the_view_has_the_bases_protected_files_and_the_agents_others(repo: GitRepo, workspace: Workspace) -> None:
    copy = workspace.dir.workspace
    with HostGit(repo.path) as git:
        with workspace.check_view(git=git, base=repo.git("rev-parse", "HEAD"), patterns=PATTERNS) as view:
            v = view.path
            assert v != copy and v.parent == workspace.dir.root
            # Protected paths as the base has them: deleted ones back, the agent's additions gone.
            assert (v / "tests/test_a.py").read_text() == "def test_a():\n    assert 0\n"
            assert (v / "tests/unit/test_b.py").read_text() == "def test_b():\n    assert 0\n"
            # No debug.log, pipe, new\nline.py or __pycache__ (which the changes do not list: a test run's cache).
            assert sorted(os.listdir(v / "tests")) == ["test_a.py", "unit"]
            assert (v / "pyproject.toml").read_text() == "[tool.pytest.ini_options]\naddopts = '-q'\n"
            # The symlinked parent of a protected file is a real directory again, with the base's file only.
            assert not (v / "pkg").is_symlink() and (v / "pkg").is_dir()
            assert sorted(os.listdir(v / "pkg")) == ["conftest.py"] and (v / "pkg/conftest.py").read_text() == "BASE\n"
            assert not (v / "elsewhere/conftest.py").exists()  # the agent's conftest.py, wherever it is
            # Everything else is the agent's: the same files, linked; copied from an overlay (another mount).
            assert (v / "app.py").read_text() == 'print("fixed")\n'
            linked = os.stat(v / "app.py").st_ino == os.stat(copy / "app.py").st_ino
            assert linked is (workspace.dir.lower is None)
            assert (v / "elsewhere/mod.py").read_text() == "agent mod\n"
            assert (v / "closed/f").read_text() == "kept\n"  # a closed directory is opened, not a failure
            assert stat.S_ISDIR(os.lstat(v / ".git").st_mode)  # the copy's own .git, for a check that runs git
        changes = {(c.path, c.change) for c in view.changes}
        assert changes == {
            ("tests/test_a.py", "deleted"),
            ("tests/debug.log", "added"),  # ignored: still the agent's change to a protected directory
            ("tests/pipe", "added"),
            ("tests/new\nline.py", "added"),
            ("pyproject.toml", "modified"),
            ("pkg/conftest.py", "deleted"),  # behind a link, which is not followed
            ("elsewhere/conftest.py", "added"),
        }
        assert view.more == 0
    assert not v.exists()  # removed after the check
    assert stat.S_ISFIFO(os.lstat(copy / "tests/pipe").st_mode)  # the copy is as the agent left it
    assert (copy / "pkg").is_symlink()
    gone = copy / "tests/test_a.py"  # deleted: gone from a clone; a whiteout in an overlay's upper directory
    assert not gone.exists() if workspace.dir.lower is None else stat.S_ISCHR(os.lstat(gone).st_mode)
    assert (copy / "app.py").read_text() == 'print("fixed")\n'


UNTOUCHED = r"""set -eu
cd /workspace
printf 'print("fixed")\n' > app.py
mkdir -p docs && printf 'notes\n' > docs/notes.md
"""
CACHE_ONLY = UNTOUCHED + "mkdir tests/__pycache__ && printf stale > tests/__pycache__/test_a.cpython-311.pyc\n"


@pytest.mark.parametrize("how", ["clone", "overlay"])
def test_a_copy_whose_protected_paths_are_the_bases_is_its_own_view(repo: GitRepo, how: str) -> None:
    """No view is made when it would be the copy: the check runs on the copy itself (read-only)."""
    with (
        _workspace(repo, how, UNTOUCHED) as ws,
        HostGit(repo.path) as git,
        ws.check_view(git=git, base=repo.git("rev-parse", "HEAD"), patterns=PATTERNS) as view,
    ):
        assert view.path == ws.dir.workspace and view.changes == []
        assert not (ws.dir.root / VIEW_DIR).exists()


@pytest.mark.parametrize("how", ["clone", "overlay"])
def test_one_file_more_in_a_protected_path_makes_a_view_even_a_cache(repo: GitRepo, how: str) -> None:
    """Control: a test run's cache is no change to report, but the copy is no longer the base there."""
    with (
        _workspace(repo, how, CACHE_ONLY) as ws,
        HostGit(repo.path) as git,
        ws.check_view(git=git, base=repo.git("rev-parse", "HEAD"), patterns=PATTERNS) as view,
    ):
        assert view.path == ws.dir.root / VIEW_DIR and view.changes == []
        assert sorted(os.listdir(view.path / "tests")) == ["test_a.py", "unit"]
        assert (view.path / "app.py").read_text() == 'print("fixed")\n'


NO_CLOSED = AGENT.replace("mkdir closed && printf 'kept\\n' > closed/f && chmod 000 closed\n", "")


def test_an_engine_that_does_not_say_its_mounts_are_the_hosts_gets_a_view_of_its_own(repo: GitRepo) -> None:
    """An engine without `HostMounts` (Kubernetes; here the minimal one of tests/backends/delegating.py, on Docker)
    gets the copy read-only and a directory of its own for the view (runner/loop/workspace.py): its files are
    copies, the copy is as the agent left it, and the view, whose files are the agent uid's here, is removed after
    the check (by a helper when the host user cannot: not as root)."""
    from tests.backends.delegating import DelegatingBackend

    assert "closed" not in NO_CLOSED  # a directory the agent closed is not opened in a read-only copy
    with _workspace(repo, "clone", NO_CLOSED, DelegatingBackend()) as ws, HostGit(repo.path) as git:
        copy = ws.dir.workspace
        with ws.check_view(git=git, base=repo.git("rev-parse", "HEAD"), patterns=PATTERNS) as view:
            v = view.path
            assert v.parent == ws.dir.root / VIEW_DIR
            assert sorted(os.listdir(v / "tests")) == ["test_a.py", "unit"]
            assert (v / "pkg/conftest.py").read_text() == "BASE\n" and not (v / "elsewhere/conftest.py").exists()
            assert (v / "app.py").read_text() == 'print("fixed")\n'
            assert os.stat(v / "app.py").st_ino != os.stat(copy / "app.py").st_ino  # copied across two mounts
            assert os.stat(v / "app.py").st_uid == AGENT_UID  # made by the helper, not brought back by a copy
        assert ("tests/test_a.py", "deleted") in {(c.path, c.change) for c in view.changes}
        assert not (ws.dir.root / VIEW_DIR).exists()
        assert stat.S_ISFIFO(os.lstat(copy / "tests/pipe").st_mode) and (copy / "pkg").is_symlink()
