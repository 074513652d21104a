"""Copies made from a repository's shared seed (runner/loop/seed.py), on the real engine and real git.

Racers of one repository borrow the objects of one seed, made once and refreshed with `git fetch` when the base
moves; each racer's copy holds only its checkout and its own new objects, and its harvest still carries everything
the user's repository lacks, even after the agent gc'd and repacked its copy.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from runner.backends.docker.engine import DockerBackend
from runner.base.paths import run_dir, seed_dir
from runner.loop.seed import ensure_seed, has_commit
from runner.record.models import RunState, RunSummary
from tests.helpers import GitRepo, harness
from tests.seeded import race_at_once, start_seeded

pytestmark = pytest.mark.docker

# The agent merges a commit that only the seed holds (a side branch, not the base), adds a file, then gc's and
# repacks its copy as hard as git lets it: the harvest must still carry every object the user's repo lacks.
AGENT = r"""set -eu
cd /workspace
git merge -q --no-edit "$SIDE" >/dev/null
echo "work of $HARNESS_SESSION" > work.txt
git add work.txt && git commit -q -m "work of $HARNESS_SESSION"
git gc -q --prune=now --aggressive
git repack -q -a -d -l
git fsck --connectivity-only --no-dangling
printf '{"state": "done", "summary": "alternates: %s"}' "$(cat .git/objects/info/alternates)" \
  > "$HARNESS_STATUS_FILE"
"""


def _history(repo: GitRepo) -> str:
    """A base with a large blob in its history, and a side branch the user then deletes (its commit is only
    in the seed once the user's repository forgets it)."""
    (repo.path / "big.bin").write_bytes(os.urandom(2 * 1024**2))
    repo.git("add", "big.bin")
    repo.git("commit", "-q", "-m", "big")
    # History only, not in the checkout: git writes a local copy of a blob it finds only in the (read-only) seed
    # when it hashes that file again (`git add` of a racily clean file), so a checked-out blob may be duplicated.
    repo.git("rm", "-q", "big.bin")
    repo.git("commit", "-q", "-m", "no longer big")
    repo.git("checkout", "-q", "-b", "side")
    (repo.path / "side.txt").write_text("from the side branch\n")
    repo.git("add", "side.txt")
    repo.git("commit", "-q", "-m", "side")
    side = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "main")
    return side


def _object_bytes(git_dir: Path) -> int:
    return sum(p.stat().st_size for p in (git_dir / "objects").rglob("*") if p.is_file())


def test_racers_share_one_seed_and_harvest_everything(repo: GitRepo) -> None:
    side = _history(repo)
    results = race_at_once(repo, ["racer-1", "racer-2"], AGENT.replace('"$SIDE"', side))
    seed = seed_dir(repo.path)
    # The user forgets the side branch: only the seed (and now the harvested branches) hold its commit.
    repo.git("branch", "-D", "side")
    for session, summary in results.items():
        assert isinstance(summary, RunSummary), summary
        assert summary.status == RunState.COMPLETED, summary.error
        assert summary.worktree.seed == str(seed)
        assert summary.last_summary == "alternates: /harness-seed/objects"
        branch = f"harness/{session}"
        assert repo.git("show", f"{branch}:work.txt") == f"work of {session}"
        assert repo.git("show", f"{branch}:side.txt") == "from the side branch"
        repo.git("merge-base", "--is-ancestor", side, branch)
        copy_git = run_dir(repo.path, session) / "workspace" / ".git"
        # The copy holds its own few objects; the history (a 2 MB blob) is the seed's alone.
        assert _object_bytes(copy_git) < 512 * 1024 < _object_bytes(seed)
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "-q", "--prune=now")
    repo.git("fsck", "--connectivity-only", "--no-dangling")  # the harvested history is whole on its own
    assert all(not (p.stat().st_mode & 0o022) for p in seed.rglob("*")), "the seed is writable by others"


def test_the_seed_is_refreshed_when_the_base_moves(repo: GitRepo) -> None:
    done = r"""printf '{"state": "done", "summary": "%s"}' "$(cat /workspace/news.txt 2>/dev/null || echo none)" \
      > "$HARNESS_STATUS_FILE" """
    first = start_seeded(repo, "before", done)
    assert first.status == RunState.COMPLETED and first.last_summary == "none"
    seed = seed_dir(repo.path)
    old_base = first.worktree.base_commit
    (repo.path / "news.txt").write_text("the base moved\n")
    repo.git("add", "news.txt")
    repo.git("commit", "-q", "-m", "news")
    new_base = repo.git("rev-parse", "HEAD")
    assert not has_commit(seed, new_base)
    second = start_seeded(repo, "after", done)
    assert second.status == RunState.COMPLETED and second.last_summary == "the base moved"
    assert second.worktree.base_commit == new_base
    assert has_commit(seed, new_base) and has_commit(seed, old_base)  # a fetch only adds


def test_gc_removes_a_seed_once_no_copy_borrows_from_it(repo: GitRepo) -> None:
    from runner.usecases.gc import collect_garbage

    done = """printf '{"state": "done", "summary": "ok"}' > "$HARNESS_STATUS_FILE" """
    assert start_seeded(repo, "kept", done).status == RunState.COMPLETED
    seed = seed_dir(repo.path)
    assert collect_garbage(DockerBackend()).seeds == []  # the session's copy borrows from it
    assert has_commit(seed, repo.git("rev-parse", "HEAD"))
    assert harness("discard", "--session", "kept", cwd=repo.path).code == 0
    assert collect_garbage(DockerBackend()).seeds == [str(seed)]
    assert not seed.exists()


def test_a_session_without_the_seed_is_a_full_clone(repo: GitRepo) -> None:
    done = """printf '{"state": "done", "summary": "ok"}' > "$HARNESS_STATUS_FILE" """
    summary = start_seeded(repo, "alone", done, seed=False)
    assert summary.status == RunState.COMPLETED and summary.worktree.seed is None
    copy_git = run_dir(repo.path, "alone") / "workspace" / ".git"
    assert not (copy_git / "objects" / "info" / "alternates").exists()
    assert not seed_dir(repo.path).exists()
    data = json.loads((repo.journal("alone") / "run-summary.json").read_text())
    assert data["worktree"]["seed"] is None


def test_concurrent_racers_make_the_seed_once(repo: GitRepo, tmp_path: Path) -> None:
    """Host git only: four racers ask for the seed at once; one makes it, the others wait and use it."""
    seed = tmp_path / "seeds" / "key"
    base = repo.git("rev-parse", "HEAD")
    made: list[bool] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            made.append(ensure_seed(seed, repo.path / ".git", base))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(made) == [False, False, False, True]
    assert has_commit(seed, base)
    assert [p.name for p in seed.parent.iterdir() if ".tmp-" in p.name] == []


def test_the_seed_holds_what_a_clone_would_and_no_more(repo: GitRepo, tmp_path: Path) -> None:
    """Host git only: a stash (work the user kept aside) and a ref outside branches and tags stay out of the
    seed, made or refreshed, as they stay out of a full clone; a commit on no branch is fetched by its id."""
    (repo.path / "app.py").write_text("TOKEN = 'kept aside'\n")
    repo.git("stash", "-q")
    stash = repo.git("rev-parse", "refs/stash")
    repo.git("update-ref", "refs/private/x", stash)
    seed = tmp_path / "seeds" / "key"
    base = repo.git("rev-parse", "HEAD")
    assert ensure_seed(seed, repo.path / ".git", base)
    (repo.path / "new.txt").write_text("new\n")
    repo.git("add", "new.txt")
    repo.git("commit", "-q", "-m", "new")
    repo.git("checkout", "-q", "--detach", "HEAD")
    (repo.path / "detached.txt").write_text("detached\n")
    repo.git("add", "detached.txt")
    repo.git("commit", "-q", "-m", "on no branch")
    detached = repo.git("rev-parse", "HEAD")
    assert ensure_seed(seed, repo.path / ".git", detached)  # refreshed
    assert has_commit(seed, base) and has_commit(seed, detached)
    assert not has_commit(seed, stash)  # control: the same check finds what is there
