"""Racers' copies as overlays of one checkout (runner/loop/workspace.py, `RunDir.lower`), on the real engine.

Copies made from a repository's seed on an engine with overlays share one checkout of the base commit, the
seed's tree, made once by a helper as the agent uid; each copy's own directory holds only its .git and its
changes. What must hold: the agent works on its copy as on a checkout of its own (edits in place, chmod, deletes,
git without any safe.directory), its harvest carries exactly its changes, and no racer sees another's. That
nothing an agent does reaches the shared tree is attack row 32 (tests/security/test_tree_attacks.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from runner.backends.docker.engine import DockerBackend
from runner.base.paths import data_home, home_key, repo_key, run_dir, seed_dir
from runner.loop.seed import tree_dir
from runner.loop.workspace import RunDir, Workspace
from runner.record.models import Limits, RunState, RunSummary
from runner.usecases.plan import RunRequest
from runner.usecases.sessions import start_run
from tests.helpers import GitRepo, harness
from tests.seeded import race_at_once, start_seeded, tree_digest

pytestmark = pytest.mark.docker

# Works on the copy as an agent would: an edit in place, a chmod of a file it did not create, a delete, a new
# file; and says who owns the copy's top and whether the agent's own git (no safe.directory) reads it clean.
WORK = r"""set -eu
cd /workspace
before=$(git status --porcelain | wc -l)
echo "more from $HARNESS_SESSION" >> notes.txt
chmod +x tool.sh
rm gone.txt
echo "$HARNESS_SESSION" > mine.txt
printf '{"state": "done", "summary": "owner %s clean-before %s"}' "$(stat -c %u /workspace)" "$before" \
  > "$HARNESS_STATUS_FILE"
"""


def _project(repo: GitRepo) -> None:
    (repo.path / "notes.txt").write_text("notes\n")
    (repo.path / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (repo.path / "gone.txt").write_text("to be deleted\n")
    (repo.path / "victim.txt").write_text("base\n")
    (repo.path / "untouched.txt").write_text("as the base has it\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "project")


def _volumes(session: str) -> list[str]:
    """The engine's volumes of `session` in this test's harness home (other tests run at once)."""
    filters = [f"label=io.solo-harness.session={session}", f"label=io.solo-harness.home={home_key()}"]
    out = subprocess.run(["docker", "volume", "ls", "-q", *(a for f in filters for a in ("--filter", f))],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return out.split()


def test_racers_work_on_overlays_of_one_tree_and_harvest_only_their_own_changes(repo: GitRepo) -> None:
    _project(repo)
    base = repo.git("rev-parse", "HEAD")
    results = race_at_once(repo, ["ov-1", "ov-2"], WORK)
    tree = tree_dir(seed_dir(repo.path), base)
    assert sorted(p.name for p in tree.parent.iterdir()) == [base, f"{base}.index"]  # one tree for both racers
    for session in ("ov-1", "ov-2"):
        summary = results[session]
        assert isinstance(summary, RunSummary), summary
        assert summary.status == RunState.COMPLETED, summary.error
        assert summary.worktree.lower == str(tree)
        # The copy's top is the agent's, and its git reads the copy clean before any change: a checkout of its own.
        assert summary.last_summary == "owner 10001 clean-before 0"
        branch = f"harness/{session}"
        assert repo.git("show", f"{branch}:notes.txt") == f"notes\nmore from {session}"
        assert repo.git("show", f"{branch}:mine.txt") == session  # its own, never the other racer's
        assert repo.git("ls-tree", branch, "tool.sh").startswith("100755 ")
        assert repo.git("ls-tree", branch, "gone.txt") == ""
        assert repo.git("diff", "--name-only", base, branch).split() == ["gone.txt", "mine.txt", "notes.txt",
                                                                         "tool.sh"]  # fmt: skip
        # What the copy wrote is all its own directory holds: the files it did not touch are the tree's alone.
        upper = run_dir(repo.path, session) / "workspace"
        assert (upper / "mine.txt").is_file() and (upper / ".git").is_dir()
        assert not (upper / "untouched.txt").exists() and not (upper / "app.py").exists()
    # The tree is the base's checkout, untouched by either racer.
    assert (tree / "notes.txt").read_text() == "notes\n" and (tree / "gone.txt").is_file()
    assert not (tree / "tool.sh").stat().st_mode & 0o111 and not (tree / "mine.txt").exists()


def test_discard_and_gc_remove_the_overlay_and_the_tree(repo: GitRepo) -> None:
    from runner.usecases.gc import collect_garbage

    done = """printf '{"state": "done", "summary": "ok"}' > "$HARNESS_STATUS_FILE" """
    summary = start_seeded(repo, "kept", done)
    assert summary.status == RunState.COMPLETED and summary.worktree.lower is not None
    tree = Path(summary.worktree.lower)
    assert tree.is_dir() and len(_volumes("kept")) == 1  # the engine keeps the overlay between containers
    assert harness("discard", "--session", "kept", cwd=repo.path).code == 0
    assert _volumes("kept") == []
    assert tree.is_dir()  # the seed's, until no copy borrows from it
    assert collect_garbage(DockerBackend()).seeds == [str(seed_dir(repo.path))]
    assert not tree.parent.exists()


def test_gc_removes_an_overlay_whose_copy_is_gone(repo: GitRepo) -> None:
    """A copy deleted without its overlay (by a harness that did not know overlays): gc finds it by its labels."""
    from runner.usecases.gc import collect_garbage

    done = """printf '{"state": "done", "summary": "ok"}' > "$HARNESS_STATUS_FILE" """
    assert start_seeded(repo, "orphan", done).status == RunState.COMPLETED
    assert start_seeded(repo, "live", done).status == RunState.COMPLETED

    class Forgetful(DockerBackend):
        def remove_overlays(self, labels: dict[str, str]) -> list[str]:
            return []  # the copy is deleted, its overlay left behind

    Workspace(backend=Forgetful(), run_dir=RunDir(run_dir(repo.path, "orphan")), image="harness-base:latest",
              limits=Limits(), session="orphan", repo_key=repo_key(repo.path)).delete()  # fmt: skip
    assert not run_dir(repo.path, "orphan").exists() and len(_volumes("orphan")) == 1
    collect_garbage(DockerBackend())
    assert _volumes("orphan") == []
    assert len(_volumes("live")) == 1  # a copy that still exists keeps its overlay


def test_an_engine_that_cannot_mount_an_overlay_here_gets_copies_of_their_own(repo: GitRepo, tmp_path: Path) -> None:
    """The engine refuses the overlay (here: its scratch directory on another file system than its upper one, which
    the kernel refuses as it refuses a harness home on a share or a rootless engine): asked once, before the first
    copy over a tree, the refusal is kept for this engine and the racers' copies are checkouts of their own."""
    from dataclasses import replace

    from runner.backends.base import ContainerSpec
    from runner.base.output import OutputSink
    from runner.loop.overlay_probe import OverlayVerdict
    from runner.record.journal import load_model

    elsewhere = Path(tempfile.mkdtemp(prefix="harness-test-", dir="/dev/shm"))

    class Refusing(DockerBackend):
        def start(self, spec: ContainerSpec, output: OutputSink) -> str:
            mounts = tuple(replace(m, work=elsewhere) if m.lower is not None else m for m in spec.mounts)
            return super().start(replace(spec, mounts=mounts), output)

    verdict = data_home() / "seeds" / "overlays.json"
    done = """printf '{"state": "done", "summary": "%s"}' "$(cat /workspace/app.py)" > "$HARNESS_STATUS_FILE" """
    try:
        request = RunRequest(session="refused", objective="overlay", repo=repo.path, agent_cmd=done,
                             max_iterations=1, seed=True)  # fmt: skip
        summary = start_run(Refusing(), request)
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
    assert summary.status == RunState.COMPLETED, summary.error
    assert summary.worktree.seed is not None and summary.worktree.lower is None
    assert summary.last_summary == "print('hello')"
    assert (run_dir(repo.path, "refused") / "workspace" / "app.py").is_file()  # a checkout of its own
    known = load_model(verdict, OverlayVerdict)
    assert not known.mountable and known.reason is not None and "mounting volume" in known.reason
    assert _volumes("overlay-probe") == []
    # The answer is kept for this engine: the next copy is not asked for again, even where the engine could.
    assert start_seeded(repo, "after", done).worktree.lower is None
    verdict.unlink()  # Control: asked again, this engine mounts it.
    again = start_seeded(repo, "asked", done)
    assert again.status == RunState.COMPLETED and again.worktree.lower is not None
    assert load_model(verdict, OverlayVerdict).mountable


def test_gc_removes_the_trees_no_copy_lies_over_and_keeps_the_others(repo: GitRepo) -> None:
    """A kept session of the repository keeps its seed, and with it every tree a race ever made: one checkout per
    base commit. gc keeps the trees copies lie over and removes the rest."""
    from runner.usecases.gc import collect_garbage

    done = """printf '{"state": "done", "summary": "ok"}' > "$HARNESS_STATUS_FILE" """
    old = start_seeded(repo, "at-old", done)
    (repo.path / "later.txt").write_text("a later commit\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "later")
    new = start_seeded(repo, "at-new", done)
    assert old.worktree.lower is not None and new.worktree.lower is not None
    old_tree, new_tree = Path(old.worktree.lower), Path(new.worktree.lower)
    assert old_tree != new_tree and old_tree.parent == new_tree.parent
    before = tree_digest(new_tree)

    assert collect_garbage(DockerBackend()).trees == []  # both lie over their trees: both kept
    assert old_tree.is_dir() and new_tree.is_dir()
    assert harness("discard", "--session", "at-old", cwd=repo.path).code == 0
    result = collect_garbage(DockerBackend())
    assert result.trees == [str(old_tree)] and result.seeds == []  # the seed stays: at-new borrows from it
    assert sorted(p.name for p in old_tree.parent.iterdir()) == [new_tree.name, f"{new_tree.name}.index"]
    assert tree_digest(new_tree) == before
    # The session left works on as before: its copy over the kept tree runs another iteration.
    resumed = harness("resume", "--session", "at-new", "--max-iterations", "1", "--json", cwd=repo.path)
    assert resumed.code == 0 and resumed.json()["iterationCount"] == 2, resumed
