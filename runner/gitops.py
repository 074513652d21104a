"""Git on the host: only ever on the user's own repository, with a sanitized environment.

The host never runs git with its working directory or --git-dir inside the agent's copy
(design §4 item 2). Harvested data arrives as a bundle and is fetched with fsck, hooks off,
no system or user config (the hardening settings come with every command), and no submodule recursion.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.errors import NotARepositoryError, UsageError, WorkspaceError
from runner.models import DiffStat

_HARDENING = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "transfer.fsckObjects=true",
    "-c", "fetch.fsckObjects=true",
    "-c", "protocol.file.allow=user",
    "-c", "submodule.recurse=false",
)  # fmt: skip


@dataclass(frozen=True)
class RepoInfo:
    top: Path  # the working tree's top level
    common_dir: Path  # the main .git directory (shared by linked worktrees)


class HostGit:
    """Runs git on the user's repository with a sanitized environment."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # No user or system config at all: the hardening settings come with every command (-c).
            "HOME": "/nonexistent",
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_NO_LAZY_FETCH": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_OPTIONAL_LOCKS": "0",
        }

    def close(self) -> None:
        """Nothing to release: kept so callers can scope a HostGit with `with`."""

    def __enter__(self) -> HostGit:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["git", *_HARDENING, "-C", str(self.repo), *args],
            env=self._env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
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
        """Fetch `src_ref` of a host-private bundle copy into `dest_ref` (forced), after a strict fsck."""
        self.verify_pack(bundle)
        self.run(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            "--no-auto-gc", str(bundle), f"+{src_ref}:{dest_ref}",
        )  # fmt: skip

    def verify_pack(self, bundle: Path) -> None:
        """fsck every object of a bundle in a quarantine before any of it enters the repository.

        `git fetch` from a bundle ignores transfer.fsckObjects (git 2.39), so the pack is indexed with
        `index-pack --strict` into a private object directory that borrows the repository's objects
        as alternates: a `.git` path in a tree or a symlinked `.gitmodules` is refused there."""
        common = self.info().common_dir
        # Unbuffered: the header is read here, and index-pack reads the pack from the same file offset.
        with (
            tempfile.TemporaryDirectory(prefix="harness-quarantine-") as quarantine,
            bundle.open("rb", buffering=0) as data,
        ):
            while data.readline() not in (b"\n", b""):
                pass  # the header: signature, capabilities, prerequisites and refs, up to a blank line
            (Path(quarantine) / "pack").mkdir()
            env = {
                **self._env,
                "GIT_OBJECT_DIRECTORY": quarantine,
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(common / "objects"),
            }
            proc = subprocess.run(
                ["git", *_HARDENING, "-C", str(self.repo), "index-pack", "--strict", "--fix-thin", "--stdin"],
                env=env, stdin=data, capture_output=True, text=True, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            reason = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "no output")
            raise WorkspaceError(f"harvest refused: fsck of the bundle failed: {reason}")

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
