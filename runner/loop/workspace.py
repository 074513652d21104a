"""The isolated copy: make it, checkpoint and harvest it, delete it (design §4 items 1-2).

Whatever must happen as the agent uid runs in a short helper container (same image, no network,
same hardening), because an ordinary host user in the docker group cannot chown. The host only
ever reads a bundle (copied defensively to a private file) and fetches it into the user's repo.

Why one module of this size: a Workspace is one object whose helpers (make, checkpoint and harvest, the check's
view, delete) share its run directory, engine, limits and resident helper; the helpers' scripts are in
copy_scripts.py, the view's program in protect.py, the seed in seed.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runner.backends.base import Backend, Exec, HostMounts, Mount, Overlays
from runner.backends.watchdog import run_container
from runner.base.atomic import write_atomic
from runner.base.errors import BackendError, WorkspaceError
from runner.base.layout import OUTBOX_DIR, SEED_DIR, WORKSPACE
from runner.base.output import CappedBuffer
from runner.base.saferead import UnsafeFileError, copy_untrusted
from runner.loop.copy_scripts import (
    CHECKPOINT,
    CREATE,
    CREATE_FROM_SEED,
    CREATE_OVER_TREE,
    DELETE,
    DELETE_SOME_TREES,
    DELETE_TREES,
    EXPORT_REF,
    IMAGE_CHECK,
    MAKE_TREE,
    OUTSIDE_GIT,
    TREE_INDEX,
    VIEW,
    VIEW_DIR,
    VIEW_OWN,
    VIEW_REMOVE,
    VIEW_REMOVE_OWN,
)
from runner.loop.protect import MAX_CHANGES, MAX_DEPTH, parse_changes, protected_roots, view_script
from runner.loop.resident import ResidentHelper
from runner.loop.seed import ensure_seed, tree_lock
from runner.record.gitops import HostGit
from runner.record.models import DiffStat, Limits, ProtectedChange, RunOwner
from runner.sandbox.container import bind, hardened_spec, labels, session_labels

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 900.0
HELPER_PIDS = 512  # git needs a few; never fewer than this, whatever --pids the agent gets
# pack-objects compresses on as many threads as it has cores, and a helper only runs while the agent is
# stopped: it may burst to two cores even under --cpus 1 (the harvest of a large change, docs/performance.md),
# while it asks a cluster's scheduler for no more than the agent's --cpus.
HELPER_CPU_BURST = float(min(2, os.cpu_count() or 1))
MAX_BUNDLE_BYTES = 8 * 1024**3
_EXPORT_LINE = re.compile(r"^harness-export (bundle|known|none|over) ([0-9a-f]{40})$", re.MULTILINE)
_DISK_LINE = re.compile(r"^harness-disk (\d+)$", re.MULTILINE)

ARCHIVE_PATHS = 500  # paths per `git archive` of the base's protected files


@dataclass(frozen=True)
class RunDir:
    """The host layout of one session's copy (outside any repository)."""

    root: Path
    # The repository's shared seed the copy borrows its objects from (runner/loop/seed.py); None: a full clone.
    seed: Path | None = None
    # The seed's tree the copy is an overlay of (its files; `workspace` then holds only the copy's changes and
    # its .git); None: the copy has a checkout of its own.
    lower: Path | None = None

    def copy_mounts(self, *, read_only: bool) -> tuple[Mount, ...]:
        """The copy at WORKSPACE, and the seed it borrows from (read-only, always) when it has one: what every
        container that reads the copy mounts (agent, setup, check, helpers)."""
        mounts = (self._copy(WORKSPACE, read_only=read_only),)
        return mounts if self.seed is None else (*mounts, bind(self.seed, SEED_DIR, read_only=True))

    def view_mounts(self) -> tuple[Mount, ...]:
        """What the check's view is made with on an engine whose mounts may be copies (not `HostMounts`): the
        copy, read-only, at /run-root/workspace, and the view's own directory (`view_parent`), writable, at
        /run-root/VIEW_DIR. Nothing else of the run directory: a writable mount that is a copy comes back
        over its host directory, and the run directory holds what must stay (the model gateway's sockets)."""
        view = bind(self.view_parent, f"/run-root/{VIEW_DIR}", read_only=False)
        return self._copy("/run-root/workspace", read_only=True), view

    @property
    def view_parent(self) -> Path:
        return self.root / VIEW_DIR

    def root_mounts(self) -> tuple[Mount, ...]:
        """The run directory at /run-root, writable, with the copy as its containers see it at
        /run-root/workspace (a helper that works on the copy's files beside it: the check's view)."""
        root = bind(self.root, "/run-root", read_only=False)
        return (root,) if self.lower is None else (root, self._copy("/run-root/workspace", read_only=False))

    def _copy(self, target: str, *, read_only: bool) -> Mount:
        if self.lower is None:
            return bind(self.workspace, target, read_only=read_only)
        return Mount(
            source=self.workspace, target=target, read_only=read_only, lower=self.lower, work=self.overlay_work
        )

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def overlay_work(self) -> Path:
        """The overlay's scratch directory (a copy over the seed's tree), beside the copy."""
        return self.root / "overlay-work"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def prompt(self) -> Path:
        return self.root / "prompt"

    @property
    def owner(self) -> Path:
        return self.root / "owner.json"

    @property
    def net(self) -> Path:
        """The sockets of the model gateway and egress proxy (host-owned; mounted read-only)."""
        return self.root / "net"

    @property
    def setup_net(self) -> Path:
        """The socket of the setup's own egress proxy (never mounted into the agent's containers)."""
        return self.root / "setup-net"


@dataclass(frozen=True)
class CheckView:
    """The copy as the check sees it: protected paths as the base commit has them."""

    path: Path  # on the host, in the run directory: mounted read-only where the copy would be (the copy itself
    # when its protected paths are exactly the base's)
    changes: list[ProtectedChange]  # the protected paths the agent changed
    more: int = 0  # changed protected paths left out of `changes`


@dataclass
class Harvest:
    head: str  # the branch's commit after the harvest
    disk_bytes: int | None = None  # the copy's size, as the helper measured it
    over_limit: bool = False  # the copy was over --max-disk: nothing was harvested
    commits: list[str] = field(default_factory=list)
    diff_stat: DiffStat = field(default_factory=DiffStat)


class Workspace:
    """One session's isolated copy, driven through helper containers."""

    def __init__(
        self,
        *,
        backend: Backend,
        run_dir: RunDir,
        image: str,
        limits: Limits,
        session: str,
        repo_key: str,
        runtime: str | None = None,
        run_image: str | None = None,
    ) -> None:
        self.backend = backend
        self.dir = run_dir
        self.image = image  # the helpers' (harness-base: git, and python3 for the resident helper's init)
        self.run_image = run_image  # the agent's, checked once when the copy is made
        self.session = session
        self.repo_key = repo_key
        self.runtime = runtime
        self._resident: ResidentHelper | None = None
        # Helpers get the run's limits, but enough memory and processes for git on a large repository.
        self.limits = limits.model_copy(
            update={"memory_bytes": max(limits.memory_bytes, 1024**3), "pids": max(limits.pids, HELPER_PIDS)}
        )

    def _helper(
        self, script: str, mounts: tuple[Mount, ...], env: dict[str, str], what: str, *, resident: bool = False
    ) -> str:
        """Run `script` in a helper as the agent uid; its output. `resident`: as an exec in the session's
        resident helper (same mounts every time), where the backend can."""
        out = CappedBuffer()
        resident = resident and isinstance(self.backend, Exec)
        spec = hardened_spec(
            image=self.image,
            command=["sh", "-c", script],
            limits=self.limits,
            mounts=mounts,
            labels=labels(self.session, self.repo_key, "helper"),
            env=None if resident else env,
            runtime=self.runtime,
            workdir="/tmp",
            cpu_burst=HELPER_CPU_BURST if self.limits.cpus < HELPER_CPU_BURST else None,
        )
        try:
            if resident:
                if self._resident is None:
                    self._resident = ResidentHelper(self.backend, spec)
                code = self._resident.run(script, env, out, HELPER_TIMEOUT)
                timed_out, failure = code is None, None
            else:
                result = run_container(self.backend, spec, timeout=HELPER_TIMEOUT, output=out)
                code, timed_out, failure = result.exit_code, result.timed_out, result.failure
        except BackendError as exc:
            raise WorkspaceError(f"{what}: {exc.message}") from None
        if failure is not None:
            raise WorkspaceError(f"{what}: the backend could not start the helper: {failure}")
        if timed_out or code != 0:
            tail = " | ".join(out.text().strip().splitlines()[-3:]) or "no output"
            why = "timed out" if timed_out else f"exit {code}"
            raise WorkspaceError(f"{what} failed ({why}): {tail}")
        return out.text()

    def close(self) -> None:
        """Remove the resident helper, if one was started (the end of a run)."""
        if self._resident is not None:
            self._resident.close()

    def create(self, *, source_git_dir: Path, base_commit: str, branch: str, owner: RunOwner) -> None:
        """Clone the user's repository (its .git mounted read-only) into a fresh copy; or, when the run
        directory names a seed, make or refresh that seed (on the host, under its lock) and check the copy
        out of it, borrowing its objects."""
        try:
            self.dir.root.mkdir(parents=True, exist_ok=False)
            # The helper runs as the agent uid and must create the copy inside; only this
            # directory is opened up, and its parent is private to the host user.
            self.dir.root.parent.chmod(0o700)
            self.dir.root.chmod(0o777)
            self.dir.prompt.mkdir(mode=0o755)
            write_atomic(self.dir.owner, owner.dump_json())  # first, so `gc` can tell whose it is
        except FileExistsError:
            raise WorkspaceError(f"{self.dir.root} already exists: remove it with 'harness discard'") from None
        except OSError as exc:
            raise WorkspaceError(f"cannot create {self.dir.root}: {exc.strerror}") from None
        env = {"HARNESS_BRANCH": branch, "HARNESS_BASE": base_commit}
        run_root = bind(self.dir.root, "/run-root", read_only=False)
        if self.dir.seed is None or self.dir.lower is None:
            if self.run_image is not None:
                self._check_image(self.run_image)
            if self.dir.seed is None:
                source = bind(source_git_dir, "/source", read_only=True)
                self._helper(CREATE, (source, run_root), env, "making the isolated copy")
                return
            ensure_seed(self.dir.seed, source_git_dir, base_commit)
            seed = bind(self.dir.seed, SEED_DIR, read_only=True)
            self._helper(CREATE_FROM_SEED, (seed, run_root), env, "making the isolated copy from the seed")
            return
        # Over the seed's tree: the image check (a container) and the tree (a helper, from the user's objects) are
        # made while the seed is (host git); a race's other racers wait on the tree's and the seed's locks.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="copy") as pool:
            checked = pool.submit(self._check_image, self.run_image) if self.run_image is not None else None
            tree = pool.submit(self._ensure_tree, base_commit, bind(source_git_dir, "/source", read_only=True))
            ensure_seed(self.dir.seed, source_git_dir, base_commit)
            tree.result()
            if checked is not None:
                checked.result()
        seed = bind(self.dir.seed, SEED_DIR, read_only=True)
        index = bind(self.dir.lower.parent / f"{self.dir.lower.name}.index", TREE_INDEX, read_only=True)
        self._helper(CREATE_OVER_TREE, (seed, run_root, index), env, "making the isolated copy over the seed's tree")

    def _ensure_tree(self, commit: str, source: Mount) -> None:
        """Make the seed's tree of `commit` (the copy's lower layer) from the user's objects (`source`, read-only)
        unless it is made: once for all the copies over it, under the trees' lock."""
        assert self.dir.seed is not None and self.dir.lower is not None  # noqa: S101 - create's overlay branch
        tree = self.dir.lower
        if tree.is_dir() and tree.with_name(f"{tree.name}.index").is_file():
            return
        try:
            self.dir.seed.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as ensure_seed makes it
        except OSError as exc:
            raise WorkspaceError(f"cannot make {self.dir.seed.parent}: {exc.strerror}") from None
        with tree_lock(self.dir.seed):
            if tree.is_dir() and tree.with_name(f"{tree.name}.index").is_file():
                return  # made by a racer that held the lock before us
            try:
                tree.parent.mkdir(exist_ok=True)
                tree.parent.chmod(0o777)  # the helper writes it as the agent uid; the seeds' directory is private
            except OSError as exc:
                raise WorkspaceError(f"cannot make {tree.parent}: {exc.strerror}") from None
            trees = bind(tree.parent, "/trees", read_only=False)
            self._helper(MAKE_TREE, (source, trees), {"HARNESS_BASE": commit}, "making the seed's tree")

    def _copy_mounts(self) -> tuple[Mount, ...]:
        """What the resident helper mounts (the same for every exec in it)."""
        return (
            *self.dir.copy_mounts(read_only=False),
            bind(self.dir.outbox, OUTBOX_DIR, read_only=False),
            bind(self.dir.export, "/export", read_only=False),
        )

    def outside_git(self) -> tuple[list[str], bool]:
        """The paths of the stopped copy that git does not track (untracked or ignored), checked; and
        whether a tracked file was changed too."""
        from runner.loop.setup import changed_tracked, parse_outputs

        text = self._helper(OUTSIDE_GIT, self._copy_mounts(), {}, "listing the setup's outputs", resident=True)
        return parse_outputs(text), changed_tracked(text)

    def _check_image(self, image: str) -> None:
        """Refuse, in one line, a run image that lacks what every agent container needs."""
        out = CappedBuffer()
        spec = hardened_spec(
            image=image, command=["sh", "-c", IMAGE_CHECK], limits=self.limits, mounts=(),
            labels=labels(self.session, self.repo_key, "helper"), runtime=self.runtime, workdir="/tmp",
        )  # fmt: skip
        try:
            result = run_container(self.backend, spec, timeout=HELPER_TIMEOUT, output=out)
        except BackendError as exc:
            raise WorkspaceError(f"checking the image {image}: {exc.message}") from None
        if result.failure is not None or result.exit_code != 0:
            tail = " | ".join(out.text().strip().splitlines()[-2:]) or result.failure or f"exit {result.exit_code}"
            raise WorkspaceError(f"the image {image} cannot run the agent: {tail}")

    def checkpoint_and_harvest(
        self, *, git: HostGit, iteration: int, base: str, last: str, dest_ref: str, max_disk: int | None = None,
        keep_out: Sequence[str] = (),
    ) -> Harvest:  # fmt: skip
        """Commit everything in the stopped copy but `keep_out`, bundle what is new, fetch it into `dest_ref`."""
        text = self._helper(
            CHECKPOINT,
            self._copy_mounts(),
            {
                "HARNESS_ITERATION": str(iteration),
                "HARNESS_LAST": last,
                "HARNESS_BASE": base,
                "HARNESS_MAX_DISK": str(max_disk or ""),
                "HARNESS_KEEP_OUT": "\n".join(keep_out),
            },
            "checkpointing the copy",
            resident=True,
        )
        found = _EXPORT_LINE.findall(text)
        if not found:
            raise WorkspaceError("checkpointing the copy: the helper did not report the copy's head")
        kind, claimed = found[-1]
        sizes = _DISK_LINE.findall(text)
        disk = int(sizes[0]) if sizes else None  # the first: printed before any agent-controlled git ran
        if kind in {"none", "over"}:
            return Harvest(head=last, disk_bytes=disk, over_limit=kind == "over")
        if kind == "known":
            # Only a commit the user's repository already has, on the run's own history.
            if not (git.is_ancestor(claimed, last) or git.is_ancestor(claimed, base)):
                raise WorkspaceError(f"harvest refused: {claimed[:12]} is not on the run's history")
            git.run("update-ref", dest_ref, claimed)
        else:
            self._fetch_bundle(git, dest_ref)
        head = git.ref_commit(dest_ref)
        if head is None:
            raise WorkspaceError(f"harvest: {dest_ref} is missing after the fetch")
        commits = git.commits_between(last, head) if git.is_ancestor(last, head) else git.commits_between(base, head)
        return Harvest(head=head, disk_bytes=disk, commits=commits, diff_stat=git.diff_stat(last, head))

    def _fetch_bundle(self, git: HostGit, dest_ref: str) -> None:
        with tempfile.TemporaryDirectory(prefix="harness-harvest-") as tmp:
            private = Path(tmp) / "export.bundle"
            try:
                copy_untrusted(self.dir.export, "export.bundle", private, max_bytes=MAX_BUNDLE_BYTES)
            except UnsafeFileError as exc:
                raise WorkspaceError(f"harvest refused: the bundle is unsafe to read ({exc})") from None
            git.fetch_bundle(private, EXPORT_REF, dest_ref)

    @contextlib.contextmanager
    def check_view(self, *, git: HostGit, base: str, patterns: Sequence[str]) -> Iterator[CheckView]:
        """The stopped copy with every path that `patterns` protect replaced by the base commit's (none where
        the base has none), for the check to mount read-only; removed when the block ends. The base's files
        come from the user's repository (host git), never from the copy's .git, which the agent controls."""
        # Where the engine's mounts are the host's directories, the helper gets the run directory: the view's files
        # are hard links to the copy's, which link() makes only inside one mount. Elsewhere (Kubernetes: a writable
        # mount travels to the pod and back over its host directory) it gets the copy, read-only, and a directory
        # of its own for the view, so that nothing else of the run directory is carried away and replaced.
        linked = isinstance(self.backend, HostMounts)
        try:
            if not linked:
                self.dir.view_parent.mkdir(exist_ok=True)
                self.dir.view_parent.chmod(0o777)  # the helper writes it as the agent uid
            base_dir = Path(tempfile.mkdtemp(prefix="check-base-", dir=self.dir.root))
        except OSError as exc:
            raise WorkspaceError(f"cannot make the check's view in {self.dir.root}: {exc.strerror}") from None
        made = False
        view = VIEW_DIR if linked else f"{VIEW_DIR}/{VIEW_OWN}"
        mounts = self.dir.root_mounts() if linked else self.dir.view_mounts()
        try:
            roots = protected_roots(patterns, git.tree_paths(base))
            for start in range(0, len(roots), ARCHIVE_PATHS):
                git.archive(base, base_dir, roots[start : start + ARCHIVE_PATHS])
            _readable(base_dir)
            made = True
            text = self._helper(
                VIEW,
                (*mounts, bind(base_dir, "/base", read_only=True)),
                {
                    "HARNESS_VIEW_PY": view_script(),
                    "HARNESS_VIEW": view,
                    "HARNESS_PROTECT": json.dumps(list(patterns)),
                    "HARNESS_MAX_CHANGES": str(MAX_CHANGES),
                    "HARNESS_MAX_DEPTH": str(MAX_DEPTH),
                },
                "making the check's view of the copy",
            )
            if re.search(r"^harness-view same$", text, re.MULTILINE):
                made = False  # the copy is its own view: nothing to remove
                yield CheckView(path=self.dir.workspace, changes=[])
                return
            if not re.search(r"^harness-view ready$", text, re.MULTILINE):
                raise WorkspaceError("making the check's view of the copy: the helper did not finish it")
            changes, more = parse_changes(text)
            yield CheckView(path=self.dir.root / view, changes=changes, more=more)
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            if not linked:
                self._remove_own_view()
            elif made:
                try:
                    self._helper(VIEW_REMOVE, (bind(self.dir.root, "/run-root", read_only=False),), {},
                                 "removing the check's view")  # fmt: skip
                except WorkspaceError as exc:  # the next view replaces it; `discard` and `gc` remove it
                    log.warning("%s", exc.message)

    def _remove_own_view(self) -> None:
        """Remove the view's own directory (`RunDir.view_mounts`): on the host when its files came back as the
        host user's (an engine whose mounts are copies), else the view in a helper first."""
        parent = self.dir.view_parent
        with contextlib.suppress(OSError):  # else files of the agent uid: the mounts were the host's directories
            shutil.rmtree(parent)
        if not parent.exists():
            return
        try:
            self._helper(VIEW_REMOVE_OWN, (bind(parent, f"/run-root/{VIEW_DIR}", read_only=False),), {},
                         "removing the check's view")  # fmt: skip
            shutil.rmtree(parent)
        except WorkspaceError as exc:  # the next view replaces it; `discard` and `gc` remove it
            log.warning("%s", exc.message)
        except OSError as exc:
            log.warning("removing the check's view: %s", exc.strerror)

    def delete(self) -> None:
        """Remove the copy (files owned by the agent uid go in a helper), then the run directory; and what the
        engine kept for it when it was an overlay."""
        if isinstance(self.backend, Overlays):
            try:
                self.backend.remove_overlays(session_labels(self.session, self.repo_key))
            except BackendError as exc:
                raise WorkspaceError(f"deleting the copy's overlay: {exc.message}") from None
        if not self.dir.root.exists():
            return
        if os.geteuid() != 0:
            self._helper(DELETE, (bind(self.dir.root, "/run-root", read_only=False),), {}, "deleting the copy")
        shutil.rmtree(self.dir.root)

    def delete_trees(self, trees: Path) -> None:
        """Remove a seed's trees (files owned by the agent uid go in a helper): `remove_seed`'s `remove_trees`."""
        if os.geteuid() != 0:
            self._helper(DELETE_TREES, (bind(trees, "/trees", read_only=False),), {}, "deleting the seed's trees")
        shutil.rmtree(trees)

    def delete_some_trees(self, trees: Path, commits: list[str]) -> None:
        """Remove the trees of `commits` from a seed's trees (`remove_unused_trees`'s `remove`)."""
        if os.geteuid() != 0:
            self._helper(DELETE_SOME_TREES, (bind(trees, "/trees", read_only=False),),
                         {"HARNESS_TREES": " ".join(commits)}, "deleting the seed's unused trees")  # fmt: skip
        for path in (trees / f"{c}{end}" for c in commits for end in ("", ".index", ".tmp", ".git")):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _readable(top: Path) -> None:
    """Make the base's files readable to the agent uid, whatever the host user's umask."""
    for root, _dirs, files in os.walk(top):
        os.chmod(root, 0o755)  # noqa: PTH101, S103 - the base's own files, for the agent uid to read
        for name in files:
            path = os.path.join(root, name)  # noqa: PTH118
            if not os.path.islink(path):  # noqa: PTH114
                os.chmod(path, os.stat(path).st_mode | 0o444)  # noqa: PTH101, PTH116
