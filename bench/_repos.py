"""Large generated repositories for the benchmarks, made with `git fast-import` and cached under build/.

Deterministic (a seeded generator): the first commit adds every file, each later commit rewrites a
few of them with fresh incompressible text, so the history's size is set by `history_mb`.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench._common import GIT, BenchError, git

CACHE = Path(__file__).resolve().parent.parent / "build" / "bench-repos"
FILES_PER_DIR = 100
CHANGED_PER_COMMIT = 10
VERSION = 1  # bump when the generator changes: the cache key holds it


@dataclass(frozen=True)
class RepoShape:
    files: int
    commits: int
    history_mb: int  # the rewritten blobs' total size, roughly the pack's size (they do not compress)
    file_bytes: int = 320  # each file's size in the first commit (hex text)

    @property
    def key(self) -> str:
        size = "" if self.file_bytes == 320 else f"-b{self.file_bytes}"
        return f"v{VERSION}-f{self.files}-c{self.commits}-h{self.history_mb}{size}"


def _path(i: int) -> str:
    return f"src/d{i // FILES_PER_DIR:04d}/f{i % FILES_PER_DIR:03d}.txt"


def generate(shape: RepoShape) -> Path:
    """The cached repository of `shape` (a working tree with nothing checked out), made if missing."""
    repo = CACHE / shape.key
    if (repo / ".complete").exists():
        return repo
    if repo.exists():
        subprocess.run(["rm", "-rf", str(repo)], check=True)
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    rng = random.Random(shape.files * 7919 + shape.commits)  # noqa: S311 - test data, not secrets
    later = max(shape.commits - 1, 1)
    blob_bytes = max(256, shape.history_mb * 1024**2 // (later * CHANGED_PER_COMMIT))
    proc = subprocess.Popen(
        [*GIT, "-C", str(repo), "fast-import", "--quiet", "--done"], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None
    out = proc.stdin
    for n in range(shape.commits):
        when = 1_700_000_000 + n * 60
        message = b"initial" if n == 0 else f"change {n}".encode()
        out.write(b"commit refs/heads/main\n")
        out.write(f"committer bench <bench@example.invalid> {when} +0000\n".encode())
        out.write(b"data %d\n%s\n" % (len(message), message))
        touched = range(shape.files) if n == 0 else rng.sample(range(shape.files), CHANGED_PER_COMMIT)
        for i in touched:
            size = shape.file_bytes if n == 0 else blob_bytes * 2
            data = rng.randbytes(size // 2).hex().encode()
            out.write(b"M 100644 inline %s\ndata %d\n%s\n" % (_path(i).encode(), len(data), data))
    out.write(b"done\n")
    out.close()
    if proc.wait(timeout=3600) != 0:
        detail = proc.stderr.read().decode(errors="replace")[-400:] if proc.stderr else ""
        raise BenchError(f"git fast-import failed: {detail}")
    if proc.stderr:
        proc.stderr.close()
    git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
    git(repo, "read-tree", "HEAD")  # an index that matches HEAD: the harness reads only refs and objects
    (repo / ".complete").write_text(shape.key + "\n")
    return repo


def pack_mb(repo: Path) -> float:
    size = sum(p.stat().st_size for p in (repo / ".git" / "objects").rglob("*") if p.is_file())
    return size / 1024**2
