"""Core of `harness list` (every session on this machine) and `harness gc` (what no live session owns).

Every copy carries an owner.json (written by the host before the copy is made) naming its session,
repository and journal; containers carry labels with the session and a key of the repository.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from runner.backends import open_engine
from runner.backends.base import (
    LABEL_HOME,
    LABEL_MANAGED,
    LABEL_REPO,
    LABEL_SESSION,
    Backend,
    ImageStore,
    Overlays,
)
from runner.base.errors import HarnessError, NotARepositoryError
from runner.base.paths import data_home, home_key, repo_key
from runner.loop.seed import remove_seed, remove_unused_trees, trees_dir
from runner.loop.workspace import RunDir, Workspace
from runner.record.gitops import HostGit
from runner.record.journal import Journal, load_model
from runner.record.models import CamelModel, EngineRef, Limits, RunOwner
from runner.record.notify import forget_orphans
from runner.sandbox.images import DEFAULT_IMAGE
from runner.usecases.discard import DiscardedRepo, discarded_repos_dir, expire_discarded
from runner.usecases.known_repos import forget_gone_repos
from runner.usecases.repository import DISCARDED_PREFIX
from runner.usecases.status import supervisor_alive

log = logging.getLogger(__name__)

HALF_MADE_GRACE_SECONDS = 3600.0  # a copy without owner.json younger than this may be being made


def _run_dirs() -> list[Path]:
    runs = data_home() / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def _owner(run_dir: Path) -> RunOwner | None:
    try:
        return load_model(run_dir / "owner.json", RunOwner)
    except HarnessError:
        return None


class GcResult(CamelModel):
    containers: list[str]
    copies: list[str]
    images: list[str]
    kept: list[str]  # sessions whose copies stay: they can still be resumed
    expired_refs: list[str]  # "<repo>:<ref>": discarded branch tips older than --discarded-after
    notify_targets: list[str]  # kept --notify targets of sessions whose journal is gone, removed
    seeds: list[str]  # repositories' shared seeds (runner/loop/seed.py) that no copy borrows from any more
    trees: list[str]  # a kept seed's trees (the checkouts racers' overlays lie over) that no copy lies over
    forgotten_repos: list[str]  # repositories gone from disk, dropped from the index of `report --all`


DISCARDED_AFTER_SECONDS = 14 * 86400.0  # how long `harness restore` can undo a discard


def expire_discarded_refs(older_than_seconds: float) -> list[str]:
    """Delete discarded branch tips older than the given age in every repository a discard recorded;
    a repository with none left (or gone) is forgotten."""
    expired: list[str] = []
    folder = discarded_repos_dir()
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            repo = Path(load_model(record, DiscardedRepo).repo)
            with HostGit(repo) as git:
                git.info()
                expired += [f"{repo}:{ref}" for ref in expire_discarded(git, older_than_seconds=older_than_seconds)]
                left = git.refs_under(DISCARDED_PREFIX)
        except NotARepositoryError:
            left = {}  # the repository is gone: so are its refs
        except HarnessError as exc:
            log.warning("gc: discarded refs of %s left alone: %s", record, exc.message)
            continue
        if not left:
            record.unlink(missing_ok=True)
    return expired


def collect_garbage(backend: Backend, *, discarded_after_seconds: float = DISCARDED_AFTER_SECONDS) -> GcResult:
    """Remove containers of sessions no supervisor drives, copies of sessions that no longer exist,
    superseded harness images, and discarded branch tips older than `discarded_after_seconds`.
    Copies of resumable sessions are kept."""
    live: set[tuple[str, str]] = set()
    kept: list[str] = []
    copies: list[str] = []
    engines = {EngineRef().model_dump_json(): backend}  # the local engine, and each other one a copy names
    for run_dir in _run_dirs():
        owner = _owner(run_dir)
        if owner is None:
            if time.time() - run_dir.stat().st_mtime > HALF_MADE_GRACE_SECONDS:
                _delete_copy(backend, run_dir, run_dir.name, "unknown")
                copies.append(str(run_dir))
            continue
        key = owner.backend.model_dump_json()
        if key not in engines:
            try:
                engines[key] = open_engine(owner.backend)
            except HarnessError as exc:  # an engine this harness does not know (a newer one's): left alone
                log.warning("gc: %s left alone: %s", run_dir, exc.message)
                continue
        own = engines[key]
        journal = Journal(Path(owner.journal_dir), owner.session_id)
        if journal.exists():
            kept.append(f"{owner.repo}:{owner.session_id}")
            try:
                if supervisor_alive(journal.read_summary(), journal):
                    live.add((repo_key(Path(owner.repo)), owner.session_id))
            except HarnessError:
                live.add((repo_key(Path(owner.repo)), owner.session_id))  # unreadable: leave it alone
            continue
        _delete_copy(own, run_dir, owner.session_id, repo_key(Path(owner.repo)))  # discarded, or repo gone
        copies.append(str(run_dir))
    containers: list[str] = []
    mine = {LABEL_MANAGED: "1", LABEL_HOME: home_key()}  # never another user's or home's containers
    for engine in engines.values():
        for labels in engine.list_containers(mine).values():
            owner_key = (labels.get(LABEL_REPO), labels.get(LABEL_SESSION))
            if None in owner_key or owner_key in live:
                continue
            containers += engine.reap({**mine, LABEL_REPO: str(owner_key[0]), LABEL_SESSION: str(owner_key[1])})
    if isinstance(backend, Overlays):  # the overlay of a copy whose run directory is gone (a crash mid-discard)
        for labels in backend.overlays(mine).values():
            repo, session = labels.get(LABEL_REPO), labels.get(LABEL_SESSION)
            if repo and session and not (data_home() / "runs" / f"{repo}-{session}").exists():
                backend.remove_overlays({**mine, LABEL_REPO: repo, LABEL_SESSION: session})
    images = backend.prune_images({LABEL_MANAGED: "1"}) if isinstance(backend, ImageStore) else []
    expired = expire_discarded_refs(discarded_after_seconds)
    return GcResult(containers=sorted(set(containers)), copies=copies, images=images, kept=kept,
                    expired_refs=expired, notify_targets=forget_orphans(), seeds=_drop_unused_seeds(backend),
                    trees=_drop_unused_trees(backend), forgotten_repos=forget_gone_repos())  # fmt: skip


def _drop_unused_seeds(backend: Backend) -> list[str]:
    """Remove each repository's seed that no copy of that repository remains to borrow from: a copy's run
    directory (`runs/<repo key>-<session>`) exists before its copy asks for the seed, and the check is made
    under the seed's lock, so a copy being made keeps it (or makes it again)."""
    seeds = data_home() / "seeds"
    dropped: list[str] = []
    for seed in sorted(seeds.iterdir()) if seeds.is_dir() else []:
        if not seed.is_dir() or "." in seed.name:
            continue  # a lock file, or a seed being made
        if remove_seed(
            seed, unless=functools.partial(_borrowed, seed.name), remove_trees=_trees_remover(backend, seed.name)
        ):
            dropped.append(str(seed))
    return dropped


def _drop_unused_trees(backend: Backend) -> list[str]:
    """Remove each kept seed's trees that no copy lies over any more: a checkout of a base commit per race, which
    would otherwise stay while any session of the repository is kept."""
    seeds = data_home() / "seeds"
    dropped: list[str] = []
    for seed in sorted(seeds.iterdir()) if seeds.is_dir() else []:
        if seed.is_dir() and "." not in seed.name and trees_dir(seed).is_dir():
            helper = _workspace_for_seed(backend, seed.name)
            dropped += remove_unused_trees(
                seed, in_use=functools.partial(_trees_in_use, seed), remove=helper.delete_some_trees
            )
    return dropped


def _trees_in_use(seed: Path) -> set[str] | None:
    """The base commits whose trees the copies of the seed's repository lie over (journals say: `lower`); None
    when a copy's cannot be read (a copy being made, a torn journal): then every tree stays."""
    used: set[str] = set()
    for run_dir in (data_home() / "runs").glob(f"{seed.name}-*"):
        owner = _owner(run_dir)
        if owner is None:
            return None
        try:
            lower = Journal(Path(owner.journal_dir), owner.session_id).read_summary().worktree.lower
        except HarnessError:
            return None
        if lower is not None:
            used.add(Path(lower).name)
    return used


def _workspace_for_seed(backend: Backend, key: str) -> Workspace:
    """A workspace of no session, whose helpers remove a seed's trees (their files are the agent uid's)."""
    return Workspace(backend=backend, run_dir=RunDir(data_home() / "runs" / f"{key}-gc"), image=DEFAULT_IMAGE,
                     limits=Limits(), session="gc", repo_key=key)  # fmt: skip


def _trees_remover(backend: Backend, key: str) -> Callable[[Path], None]:
    """What removes a seed's trees: their files are the agent uid's, so a helper (as a copy's are)."""
    return _workspace_for_seed(backend, key).delete_trees


def _borrowed(key: str) -> bool:
    """Whether a run directory of the repository whose key is `key` exists (its copy may borrow the seed)."""
    return any((data_home() / "runs").glob(f"{key}-*"))


def _delete_copy(backend: Backend, run_dir: Path, session: str, key: str) -> None:
    # The session's own image may be gone with it: the base image can delete any copy.
    Workspace(backend=backend, run_dir=RunDir(run_dir), image=DEFAULT_IMAGE, limits=Limits(), session=session,
              repo_key=key).delete()  # fmt: skip
