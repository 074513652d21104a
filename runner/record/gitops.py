"""Git on the host: only ever on the user's own repository, with a sanitized environment.

The host never runs git with its working directory or --git-dir inside the agent's copy
(design §4 item 2). Harvested data arrives as a bundle and is fetched with fsck, hooks off,
no system or user config (the hardening settings come with every command), and no submodule recursion.

Why one module of this size: it holds every git command the host runs on the user's repository, each with
the same sanitized environment and hardening options; split, each part would need them again, and the one
place to read what the host asks of git would become several.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runner.base.errors import NotARepositoryError, UsageError, WorkspaceError
from runner.record.models import DiffStat

_HARDENING = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "transfer.fsckObjects=true",
    "-c", "fetch.fsckObjects=true",
    "-c", "protocol.file.allow=user",
    "-c", "submodule.recurse=false",
)  # fmt: skip


Proc = subprocess.CompletedProcess[str]
_OID = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a commit's tree: `mode` 100644/100755 (file), 120000 (link), 040000 (tree), 160000."""

    mode: str
    kind: str  # blob, tree, commit
    sha: str
    size: int | None  # blobs only

    @property
    def is_file(self) -> bool:
        return self.kind == "blob" and self.mode in {"100644", "100755"}


@dataclass(frozen=True)
class RepoInfo:
    top: Path  # the working tree's top level
    common_dir: Path  # the main .git directory (shared by linked worktrees)


def sanitized_env() -> dict[str, str]:
    """The environment of host git on the user's repository (and a race's seed): no user or system config at
    all, no prompt, no lazy fetch; the hardening settings come with every command (-c)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_NO_LAZY_FETCH": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
    }


class HostGit:
    """Runs git on the user's repository with a sanitized environment."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._env = sanitized_env()

    def close(self) -> None:
        """Nothing to release: kept so callers can scope a HostGit with `with`."""

    def __enter__(self) -> HostGit:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["git", *_HARDENING, "-C", str(self.repo), *args],
            env=self._env,
            capture_output=True,
            text=True,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            check=False,
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise WorkspaceError(f"git {args[0]} failed in {self.repo}: {detail}")
        return proc

    def info(self) -> RepoInfo:
        proc = self.run("rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir", check=False)
        if proc.returncode != 0:
            raise NotARepositoryError(f"{self.repo} is not a git repository (or has no working tree)")
        top, common = proc.stdout.splitlines()[:2]
        common_path = Path(common)
        if not common_path.is_absolute():
            common_path = (Path(top) / common_path).resolve()
        return RepoInfo(top=Path(top).resolve(), common_dir=common_path.resolve())

    def resolve_commit(self, ref: str) -> str:
        if ref.startswith("-"):
            raise UsageError(f"--base: {ref!r} is not a ref")
        proc = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
        if proc.returncode != 0:
            raise UsageError(f"--base: {ref!r} does not name a commit in {self.repo}")
        return proc.stdout.strip()

    def ref_commit(self, ref: str) -> str | None:
        proc = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def fetch_bundle(self, bundle: Path, src_ref: str, dest_ref: str) -> None:
        """Set `dest_ref` (forced) to `src_ref` of a host-private bundle copy, after a strict fsck.

        As receive-pack does with a push: the bundle's pack is indexed once, with `index-pack --strict`, in a
        quarantine object directory that borrows the repository's objects as alternates (`git fetch` from a
        bundle ignores transfer.fsckObjects in git 2.39, and would index the pack a second time); the tip
        must be a commit whose whole history is then present (the connectivity check `git fetch` runs), and
        only then is the checked pack moved into objects/pack and the ref set with update-ref. A `.git` path
        in a tree or a symlinked `.gitmodules` is refused in the quarantine, and nothing of the bundle is
        left in the repository when any check fails."""
        objects = self.info().common_dir / "objects"
        # Unbuffered: the header is read here, and index-pack reads the pack from the same file offset.
        with (
            tempfile.TemporaryDirectory(prefix="tmp_objdir-harness-", dir=objects) as quarantine,
            bundle.open("rb", buffering=0) as data,
        ):
            tip = _bundle_tip(data, src_ref)
            (Path(quarantine) / "pack").mkdir()
            env = {**self._env, "GIT_OBJECT_DIRECTORY": quarantine, "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects)}
            # --keep: once moved, the pack is protected from a concurrent repack until the ref points into it.
            proc = self._quarantined(env, "index-pack", "--strict", "--fix-thin", "--keep=harness harvest",
                                     "--stdin", stdin=data)  # fmt: skip
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines()
                reason = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "no output")
                raise WorkspaceError(f"harvest refused: fsck of the bundle failed: {reason}")
            kind = self._quarantined(env, "cat-file", "-t", tip).stdout.strip()
            if kind != "commit":
                raise WorkspaceError(f"harvest refused: the bundle's {src_ref} is not a commit ({kind or 'missing'})")
            if self._quarantined(env, "rev-list", "--objects", "--quiet", tip, "--not", "--all").returncode != 0:
                raise WorkspaceError(f"harvest refused: the history of {tip[:12]} is incomplete")
            _refuse_undecodable_paths(env, str(self.repo), tip)
            where = self.checked_out_in(dest_ref)
            if where:  # as `git fetch` refuses: the working tree there would no longer match its branch
                raise WorkspaceError(f"harvest refused: {dest_ref} is checked out in {where[0]}")
            kept = _install_pack(Path(quarantine) / "pack", objects / "pack")
        try:
            self.update_refs([f"update {dest_ref} {tip}"])
        finally:
            if kept is not None:
                kept.unlink(missing_ok=True)

    def _quarantined(self, env: dict[str, str], *args: str, stdin: IO[bytes] | None = None) -> Proc:
        return subprocess.run(
            ["git", *_HARDENING, "-C", str(self.repo), *args],
            env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL, capture_output=True, text=True,
            check=False,
        )  # fmt: skip

    def commits_between(self, old: str, new: str) -> list[str]:
        out = self.run("rev-list", "--reverse", f"{old}..{new}").stdout
        return out.split()

    def diff_stat(self, old: str, new: str) -> DiffStat:
        out = self.run("diff", "--no-ext-diff", "--no-textconv", "--shortstat", old, new).stdout
        stat = DiffStat()
        for part in out.split(","):
            words = part.split()
            if len(words) >= 2 and words[0].isdigit():
                if words[1].startswith("file"):
                    stat.files_changed = int(words[0])
                elif words[1].startswith("insertion"):
                    stat.insertions = int(words[0])
                elif words[1].startswith("deletion"):
                    stat.deletions = int(words[0])
        return stat

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.run("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0

    def changes(self, old: str, new: str) -> tuple[list[str], list[str]]:
        """(paths that differ between two commits, those of them that are now symlinks or submodules).
        Renames count as delete + add, so both names are listed."""
        out = self.run("diff", "--no-ext-diff", "--no-textconv", "--no-renames", "--raw", "-z", old, new).stdout
        fields = out.split("\0")
        paths, links = [], []
        # -z --raw: ":oldmode newmode oldsha newsha status" NUL path NUL, repeated.
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(":") or not path:
                continue
            paths.append(path)
            if meta.split()[1] in {"120000", "160000"}:
                links.append(path)
        return paths, links

    def patch(self, old: str, new: str, *, stat_only: bool = False) -> str:
        args = ["--stat"] if stat_only else ["--stat", "--patch"]
        return self.run("diff", "--no-ext-diff", "--no-textconv", "--no-color", *args, old, new).stdout

    # One file at a time, for a page that shows each file's diff on its own (`report --all`).

    def numstat(self, old: str, new: str) -> list[tuple[str, int | None, int | None]]:
        """(path, lines added, lines removed) of every path that differs, in git's order (None: binary).
        No renames: a renamed file is its old path removed and its new one added."""
        out = self.run("diff", "--no-ext-diff", "--no-textconv", "--no-renames", "--numstat", "-z", old, new).stdout
        rows = [row.split("\t", 2) for row in out.split("\0")]
        return [(p, int(a) if a.isdigit() else None, int(d) if d.isdigit() else None) for a, d, p in
                (row for row in rows if len(row) == 3)]  # fmt: skip

    def file_patch(self, old: str, new: str, path: str, *, limit: int) -> tuple[str, bool]:
        """The patch of one path between two commits, at most `limit` bytes cut at a line's end (True: it was
        cut), decoded with replacement characters: a patch to read, never to apply."""
        argv = ["git", *_HARDENING, "-C", str(self.repo), "diff", "--no-ext-diff", "--no-textconv", "--no-color",
                "--no-renames", old, new, "--", f":(literal){path}"]  # fmt: skip
        with subprocess.Popen(argv, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as proc:  # fmt: skip
            data = proc.stdout.read(limit + 1) if proc.stdout is not None else b""
            cut = len(data) > limit
            if cut:
                proc.kill()
        if not cut and proc.returncode != 0:
            raise WorkspaceError(f"git diff failed in {self.repo} for one path")
        if cut:
            data = data[: data.rfind(b"\n", 0, limit) + 1]  # nothing when not even one line fits
        return data.decode("utf-8", "replace"), cut

    # What a merge would write, and what is already there: used by `merge` and `diff` (issue 8).

    def merge_base(self, a: str, b: str) -> str | None:
        proc = self.run("merge-base", a, b, check=False)
        if proc.returncode != 0:
            return None  # unrelated histories
        return proc.stdout.strip() or None

    def links_in_history(self, old: str, new: str) -> dict[str, str]:
        """Paths that are a symlink (target) or a submodule (commit) in any commit of old..new, merges
        compared with each parent: the tip's tree alone hides a link that a later commit made a file."""
        out = self.run(
            "log", "-m", "--root", "--no-renames", "--no-abbrev", "--raw", "-z", "--format=", f"{old}..{new}"
        ).stdout  # fmt: skip
        found: dict[str, str] = {}
        fields = iter(out.split("\0"))
        for meta in fields:
            if not meta.startswith(":"):
                continue
            path = next(fields, "")
            parts = meta[1:].split()
            if len(parts) >= 4 and parts[1] in {"120000", "160000"} and path not in found:
                found[path] = self._link_target(parts[1], parts[3])
        return found

    def blob(self, commit: str, path: str, *, limit: int = 1024**2) -> bytes | None:
        """A file's bytes at a commit: None when it is absent, not a file, or over `limit` bytes."""
        spec = f"{commit}:{path}"
        size = self.run("cat-file", "-s", spec, check=False)
        if size.returncode != 0 or int(size.stdout) > limit:
            return None
        # `cat-file blob` refuses a tree or a submodule: only a file's bytes come back.
        proc = subprocess.run(["git", *_HARDENING, "-C", str(self.repo), "cat-file", "blob", spec], env=self._env,
                              capture_output=True, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        return proc.stdout if proc.returncode == 0 else None

    def _link_target(self, mode: str, sha: str) -> str:
        if mode == "160000":
            return f"submodule commit {sha[:12]}"
        proc = self.run("cat-file", "blob", sha, check=False)
        return proc.stdout[:4096] if proc.returncode == 0 else "?"

    def ignored(self, paths: list[str]) -> set[str]:
        """The paths the user's working tree ignores: its .gitignore files, .git/info/exclude and the user's
        global excludes file. By pattern (--no-index): a path need not exist, nor be untracked."""
        if not paths:
            return set()
        excludes = user_excludes_file()
        extra = ["-c", f"core.excludesFile={excludes}"] if excludes else []
        proc = subprocess.run(
            ["git", *_HARDENING, *extra, "-C", str(self.repo), "check-ignore", "--no-index", "--stdin", "-z"],
            env=self._env, input="".join(f"{p}\0" for p in paths), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode not in (0, 1):  # 1: none ignored
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise WorkspaceError(f"git check-ignore failed in {self.repo}: {detail}")
        return {p for p in proc.stdout.split("\0") if p}

    def in_the_way(self, paths: list[str]) -> list[str]:
        """Files of the working tree that writing `paths` would replace although git does not track them
        (untracked or ignored): the path itself, a file or symlink where a parent directory would go, or a
        directory holding untracked files. `git merge --no-overwrite-ignore` does not stop git 2.39 from
        replacing ignored files, so they are looked for here, on the disk."""
        top = self.info().top
        tracked = set(self.run("ls-files", "-z", "--cached").stdout.split("\0"))
        found: set[str] = set()
        for path in paths:
            parts = path.split("/")
            for depth in range(1, len(parts) + 1):
                rel = "/".join(parts[:depth])
                full = top / rel
                if not os.path.lexists(full):
                    break
                is_dir = full.is_dir() and not full.is_symlink()
                if is_dir and depth < len(parts):
                    continue  # a directory on the way down: fine, its files are checked as paths
                if is_dir:
                    others = self.run("ls-files", "-z", "--others", "--", f":(literal){rel}/").stdout
                    if others.strip("\0"):
                        found.add(rel)
                elif rel not in tracked:
                    found.add(rel)
                break
        return sorted(found)

    def refs_under(self, prefix: str) -> dict[str, str]:
        """Every ref below `prefix` (a directory of refs, without the trailing slash) and its object."""
        out = self.run("for-each-ref", "--format=%(refname) %(objectname)", f"{prefix}/").stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def update_refs(self, commands: list[str]) -> None:
        """One atomic `update-ref --stdin` transaction (create/update/delete lines with their old values):
        every change is made, or none."""
        self.run("update-ref", "--stdin", input="".join(f"{c}\n" for c in commands))

    def checked_out_in(self, ref: str) -> list[str]:
        """The working trees (main and linked) that have `ref` checked out."""
        out = self.run("worktree", "list", "--porcelain", "-z").stdout
        found, tree = [], ""
        for line in out.split("\0"):
            if line.startswith("worktree "):
                tree = line.removeprefix("worktree ")
            elif line == f"branch {ref}":
                found.append(tree)
        return found

    def tree_paths(self, commit: str) -> set[str]:
        """Every file, symlink and submodule path of a commit's tree."""
        return {p for p in self.run("ls-tree", "-r", "-z", "--name-only", commit).stdout.split("\0") if p}

    def tree_entry(self, commit: str, path: str) -> TreeEntry | None:
        """What `path` is in a commit's tree (read from git, never from the disk): None when absent. A path
        through a symbolic link is absent: git does not follow links inside a tree."""
        if not path or path == ".":
            sha = self.run("rev-parse", "--verify", "-q", f"{commit}^{{tree}}", check=False).stdout.strip()
            return TreeEntry(mode="040000", kind="tree", sha=sha, size=None) if sha else None
        proc = self.run("ls-tree", "-l", "-z", commit, "--", path.rstrip("/"), check=False)
        for record in proc.stdout.split("\0"):
            meta, _, name = record.partition("\t")
            if name == path.rstrip("/"):
                mode, kind, sha, size = meta.split()
                return TreeEntry(mode=mode, kind=kind, sha=sha, size=None if size == "-" else int(size))
        return None

    def archive(self, tree: str, dest: Path, paths: Sequence[str] = ()) -> None:
        """Extract the tree (a tree id or `commit:path`) into the directory `dest`, from git's own objects;
        with `paths`, only those (taken literally) and what is below them. Only what stays inside `dest` is
        written: a link pointing out of it, a device or an absolute path is left out (tarfile's data filter)."""
        spec = ["--", *(f":(literal){p}" for p in paths)] if paths else []
        proc = subprocess.Popen(["git", *_HARDENING, "-C", str(self.repo), "archive", "--format=tar", tree, *spec],
                                env=self._env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - both are pipes
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(dest, filter=_inside)  # noqa: S202 - filtered: nothing lands outside dest
            while proc.stdout.read(65536):  # the archive's end padding: git must not die writing it
                pass
        except tarfile.TarError as exc:
            proc.kill()
            raise WorkspaceError(f"git archive of {tree} in {self.repo} could not be read: {exc}") from None
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode("utf-8", "replace")
            proc.stderr.close()
            code = proc.wait()
        if code != 0:
            detail = (err.strip().splitlines() or ["no output"])[-1]
            raise WorkspaceError(f"git archive failed in {self.repo}: {detail}")

    def venvs(self, tree: set[str], dirs: set[str]) -> set[str]:
        """Those of `dirs` that hold a pyvenv.cfg on the disk or in `tree` (a commit's paths):
        virtualenvs, whatever their name."""
        top = self.info().top
        found = {d for d in dirs if os.path.lexists(top / d / "pyvenv.cfg")}
        return found | ({p.rsplit("/", 1)[0] for p in tree if p.endswith("/pyvenv.cfg")} & dirs)


def _inside(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's data filter, skipping (not failing on) what it refuses: a link out of the tree."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


def _refuse_undecodable_paths(env: dict[str, str], repo: str, tip: str) -> None:
    """Refuse a harvest whose new commits name a path that is not UTF-8. Every command of the morning prints
    paths as text (JSON, the terminal, the report); one such name, made by the agent, would break them all
    for the session. The work stays in the copy, and the iteration says which name to change."""
    proc = subprocess.run(
        ["git", *_HARDENING, "-C", repo, "log", "-m", "--root", "--no-renames", "--name-only", "-z", "--format=",
         tip, "--not", "--all"],
        env=env, capture_output=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise WorkspaceError(f"harvest refused: cannot list the paths of {tip[:12]}: {detail[0]}")
    for raw in proc.stdout.split(b"\0"):
        path = raw.strip(b"\n")
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            shown = "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in path)  # printable, whatever it holds
            raise WorkspaceError(f"harvest refused: the path '{shown}' is not UTF-8: rename it") from None


def user_excludes_file() -> str | None:
    """The user's global excludes file (core.excludesFile, else git's default), which the sanitized
    environment hides: a path read from the user's config, nothing executed."""
    proc = subprocess.run(
        ["git", "config", "--global", "--includes", "--path", "--get", "core.excludesFile"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, cwd="/",
        env={k: v for k, v in os.environ.items() if k in {"HOME", "XDG_CONFIG_HOME", "PATH", "GIT_CONFIG_GLOBAL"}},
    )  # fmt: skip
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path(os.environ.get("HOME", "/nonexistent")) / ".config")
    default = Path(xdg) / "git" / "ignore"
    return str(default) if default.is_file() else None


_BUNDLE_SIGNATURES = (b"# v2 git bundle\n", b"# v3 git bundle\n")
_MAX_HEADER_LINE = 64 * 1024
_MAX_HEADER_LINES = 100_000


def _bundle_tip(data: IO[bytes], src_ref: str) -> str:
    """The commit a bundle's header names for `src_ref`; `data` is left at the start of the pack.

    The header is the agent's: a SHA-1 repository's v2 or v3 signature, no capability but the object
    format (a filtered bundle is refused), and exactly one line for `src_ref`."""
    signature = data.readline(_MAX_HEADER_LINE)
    if signature not in _BUNDLE_SIGNATURES:
        raise WorkspaceError("harvest refused: not a git bundle (v2 or v3)")
    found = []
    for _ in range(_MAX_HEADER_LINES):
        line = data.readline(_MAX_HEADER_LINE)
        if line == b"\n":
            break
        if not line.endswith(b"\n"):
            raise WorkspaceError("harvest refused: the bundle's header is cut short or has an overlong line")
        text = line[:-1].decode("utf-8", "replace")
        if text.startswith("@"):
            if text != "@object-format=sha1":
                raise WorkspaceError(f"harvest refused: unsupported bundle capability {text[:80]!r}")
        elif not text.startswith("-"):  # prerequisites: index-pack --strict needs them as objects
            oid, _, name = text.partition(" ")
            if name == src_ref:
                found.append(oid)
    else:
        raise WorkspaceError("harvest refused: the bundle's header has no end")
    if len(found) != 1 or not _OID.fullmatch(found[0]):
        raise WorkspaceError(f"harvest refused: the bundle names {src_ref} {len(found)} times, or not as an object id")
    return found[0]


def _install_pack(quarantine_pack: Path, pack_dir: Path) -> Path | None:
    """Move a checked pack into the repository (the index last: git sees the pack once its index is there).
    Returns its .keep file, which the caller removes once a ref points into the pack."""
    packs = list(quarantine_pack.glob("pack-*.pack"))
    if len(packs) != 1:
        raise WorkspaceError(f"harvest: index-pack left {len(packs)} packs in the quarantine")
    stem = packs[0].stem
    pack_dir.mkdir(exist_ok=True)
    if (pack_dir / f"{stem}.idx").exists():
        return None  # the same objects are already installed
    moved = None
    for suffix in (".keep", ".pack", ".rev", ".idx"):
        src = quarantine_pack / f"{stem}{suffix}"
        if src.exists():
            src.rename(pack_dir / src.name)  # same filesystem: the quarantine is inside objects/
            moved = pack_dir / src.name if suffix == ".keep" else moved
    return moved
