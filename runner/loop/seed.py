"""A repository's shared seed: one verified object store that the copies of many sessions borrow from.

A race starts N sessions on one repository; each needs its own copy, and a full `git clone --no-local` per
copy pays for the whole history N times. With a seed, the history is cloned once per repository, by the
host user, into the harness home (`seeds/<repo key>`); every copy made from it holds only its checkout, its
own new objects and one line in `.git/objects/info/alternates` naming the seed as mounted inside the
container (`SEED_DIR`, read-only). On an engine with overlays, the checkout too is made once: the seed's
*tree* of a base commit (`tree_dir`, made by a helper in runner.loop.workspace) is the shared lower layer of
every copy over it, which then holds only its .git and its changes. What makes that safe (docs/security.md,
"The shared seed" and "A race's shared checkout"):

- **Nothing of the seed is writable from a container.** It is mounted read-only into every container that
  reads a copy (agent, setup, check, helpers), and its files belong to the host user with no write bit for
  anyone else, so the agent's uid could not write them even through a writable path. Hard links are not
  used anywhere: the seed is a `--no-local --no-hardlinks` clone (its own files, never the user's), and a
  copy is a fresh repository whose objects are either its own or read through the alternates line.
- **Nothing writable is shared between racers.** A racer's new objects, refs, index and config are in its
  own copy; it can rewrite its alternates line, which only breaks its own copy.
- **The harvest still carries everything.** `git bundle create` packs every object reachable from the tip
  and not from the prerequisite, wherever the copy finds it (its own store or the seed), and the host
  fetches it with the usual checks (runner.record.gitops). `git gc` and `git repack -l` in a copy touch only
  the copy's own objects; the seed is never gc'd while it exists (gc.auto=0, fetch --no-auto-gc). When git
  writes an object the seed already holds (a file hashed again by `git add`), it cannot freshen the seed's
  read-only copy and writes one of its own: a copy may duplicate the blobs of files it touches, never the history.
- **The user's repository is only read**, by host git with the hardened environment of `HostGit`: no hook,
  no user or system config, the clone's template empty.

The seed holds what a session's own full clone would: the objects of the user's branches and tags (never
refs/stash, notes, remote-tracking or other refs, nor unreachable objects), and of the commit a copy starts from.
It is made and refreshed under a lock (several racers, in several processes, start at once): made by
`git clone --bare --no-local` into a temporary directory (index-pack checks every object's id), verified (the
base commit and every object of its tree are present: `rev-list --objects`), then renamed into place;
refreshed with `git fetch` when a commit a copy starts from is not in it. A fetch only adds objects, so copies
made before it go on working.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from runner.base.errors import WorkspaceError
from runner.record.gitops import sanitized_env

log = logging.getLogger(__name__)

SEED_TIMEOUT = 3600.0
_BRANCHES_AND_TAGS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")  # what `git clone` itself takes
# Host git on the user's repository and on the seed: hooks and fsmonitor off, no config but the repository's own.
_HARDENING = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "protocol.file.allow=always",
    "-c", "submodule.recurse=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)  # fmt: skip
_ENV = sanitized_env()


def _git(*args: str, what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            ["git", *_HARDENING, *args], env=_ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=SEED_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"{what}: git timed out") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WorkspaceError(f"{what}: {detail}")
    return proc


def _fetch(seed: Path, source_git_dir: Path, refspecs: tuple[str, ...], what: str) -> None:
    """Objects only ever added: no gc, no maintenance, no FETCH_HEAD (the seed is read by running copies)."""
    _git(f"--git-dir={seed}", "fetch", "--quiet", "--no-auto-gc", "--no-auto-maintenance", "--no-write-fetch-head",
         str(source_git_dir), *refspecs, what=what)  # fmt: skip


def has_commit(seed: Path, commit: str) -> bool:
    """Whether the seed holds `commit` and every object of its tree (what a checkout of it reads)."""
    if not (seed / "objects").is_dir():
        return False
    args = ("rev-list", "--objects", "--quiet", "--no-walk", f"{commit}^{{commit}}")
    proc = subprocess.run(
        ["git", *_HARDENING, f"--git-dir={seed}", *args],
        env=_ENV, capture_output=True, stdin=subprocess.DEVNULL, timeout=SEED_TIMEOUT, check=False,
    )  # fmt: skip
    return proc.returncode == 0


def trees_dir(seed: Path) -> Path:
    """Where the seed's trees are, each with its index beside it (`<commit>.index`)."""
    return seed.parent / f"{seed.name}.trees"


def tree_dir(seed: Path, commit: str) -> Path:
    """The seed's checkout of `commit`: the shared lower layer of the copies made over it (overlays, on an
    engine that has them: runner.loop.workspace), made once by a helper as the agent uid."""
    return trees_dir(seed) / commit


@contextlib.contextmanager
def tree_lock(seed: Path) -> Iterator[None]:
    """The lock held while one of the seed's trees is made (apart from the seed's own: both are made at once)."""
    with _locked(seed, "trees.lock"):
        yield


@contextlib.contextmanager
def _locked(seed: Path, suffix: str = "lock") -> Iterator[None]:
    """The seed's lock (held while it is made or refreshed): released by the kernel when its holder dies."""
    path = seed.parent / f"{seed.name}.{suffix}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _readable(root: Path) -> None:
    """Everyone may read the seed (the agent's uid reads it through the mount); only its owner may write."""
    for top, _, files in os.walk(root):
        Path(top).chmod(0o755)
        for name in files:
            (Path(top) / name).chmod(0o444)


def ensure_seed(seed: Path, source_git_dir: Path, commit: str) -> bool:
    """Make `seed` from the user's repository (its git directory `source_git_dir`), or refresh it, until it
    holds `commit`. True when it had to be made or refreshed. Raises WorkspaceError."""
    seed.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if has_commit(seed, commit):
        return False  # the common case of a race's 2nd..Nth racer: no lock taken
    with _locked(seed):
        if has_commit(seed, commit):
            return False  # made or refreshed by a racer that held the lock before us
        for stale in seed.parent.glob(f"{seed.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a process killed while making it
        if (seed / "objects").is_dir():
            log.info("refreshing the seed %s from %s", seed, source_git_dir)
            _fetch(seed, source_git_dir, _BRANCHES_AND_TAGS, "refreshing the seed")
            if not has_commit(seed, commit):  # a commit on no ref (a detached HEAD): fetched by its id
                _fetch(seed, source_git_dir, (f"+{commit}:refs/harness-seed/{commit}",), "refreshing the seed")
            _readable(seed)
        else:
            log.info("making the seed %s from %s", seed, source_git_dir)
            tmp = seed.parent / f"{seed.name}.tmp-{os.getpid()}"
            try:
                _git("clone", "--quiet", "--bare", "--no-local", "--no-hardlinks", "--template=",
                     str(source_git_dir), str(tmp), what="making the seed")  # fmt: skip
                _git(f"--git-dir={tmp}", "config", "gc.auto", "0", what="making the seed")
                if not has_commit(tmp, commit):
                    _fetch(tmp, source_git_dir, (f"+{commit}:refs/harness-seed/{commit}",), "making the seed")
                _readable(tmp)
                tmp.rename(seed)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        if not has_commit(seed, commit):
            raise WorkspaceError(f"the seed {seed} lacks {commit[:12]} or part of its tree after a fetch")
    return True


_TREE_NAME = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")  # a commit id (SHA-1 or SHA-256): nothing else is a tree


def remove_unused_trees(
    seed: Path, *, in_use: Callable[[], set[str] | None], remove: Callable[[Path, list[str]], None]
) -> list[str]:
    """Delete the seed's trees that no copy lies over (each with its index and what a killed maker left), and
    return their paths. `in_use()` names the base commits of the copies made over the seed's trees, or None
    when it cannot tell (every tree is then kept). It is asked under the trees' lock, under which a copy's tree
    is made once its run directory exists: a copy being made is named, or makes its tree again. `remove` gets the
    trees' directory and the commits whose files go (a helper, where the host user is not root)."""
    trees = trees_dir(seed)
    if not trees.is_dir():
        return []
    with tree_lock(seed):
        used = in_use()
        if used is None:
            return []
        made = {entry.name.split(".", 1)[0] for entry in trees.iterdir()}
        unused = sorted(c for c in made - used if _TREE_NAME.match(c))
        if unused:
            remove(trees, unused)
    return [str(trees / commit) for commit in unused]


def remove_seed(
    seed: Path, *, unless: Callable[[], bool] = lambda: False, remove_trees: Callable[[Path], None] = shutil.rmtree
) -> bool:  # fmt: skip
    """Delete a seed and its trees, under its lock, unless `unless()` says (under that lock) that a copy still
    borrows from it: a copy made from a removed seed no longer works. The trees' files are the agent uid's:
    `remove_trees` removes their directory (a helper, where the host user is not root). True when removed."""
    if not seed.parent.is_dir():
        return False
    with _locked(seed):
        if unless():
            return False
        trees = trees_dir(seed)
        if trees.exists():
            remove_trees(trees)
        for path in (seed, *seed.parent.glob(f"{seed.name}.tmp-*")):
            if path.exists():
                shutil.rmtree(path)
    return True
