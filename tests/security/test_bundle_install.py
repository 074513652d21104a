"""The host side of a harvest on its own: a bundle the agent's copy produced is checked in a quarantine
and only then installed into the user's repository (its pack moved into objects/pack, the branch set with
update-ref). Real git, no container: each bundle here is what a malicious agent could hand over, and the
clean ones are the positive controls that the same path accepts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from runner.base.errors import WorkspaceError
from runner.record.gitops import HostGit
from tests.helpers import GIT_ID, GitRepo, make_repo

SRC = "refs/harness/export"
DEST = "refs/heads/harness/s1"


@pytest.fixture
def user(tmp_path: Path) -> GitRepo:
    repo = make_repo(tmp_path / "user")
    repo.git("update-ref", DEST, "main")
    return repo


@pytest.fixture
def agent(tmp_path: Path, user: GitRepo) -> GitRepo:
    """The agent's copy: a --no-local clone, where it can build any object with plumbing."""
    subprocess.run(["git", "clone", "-q", "--no-local", str(user.path), str(tmp_path / "agent")], check=True)
    return GitRepo(tmp_path / "agent")


def fed(repo: GitRepo, text: str, *args: str) -> str:
    """git with `text` on its stdin (the plumbing that builds objects)."""
    proc = subprocess.run(["git", *GIT_ID, "-C", str(repo.path), *args], input=text, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return proc.stdout.strip()


def commit_with(agent: GitRepo, entry: str) -> str:
    """A commit whose tree is HEAD's plus one raw ls-tree line (git add would refuse the bad ones)."""
    root = fed(agent, agent.git("ls-tree", "HEAD") + "\n" + entry + "\n", "mktree")
    return agent.git("commit-tree", root, "-p", "HEAD", "-m", "crafted")


def blob(agent: GitRepo, text: str) -> str:
    return fed(agent, text, "hash-object", "-w", "--stdin")


def tree(agent: GitRepo, *lines: str) -> str:
    return fed(agent, "".join(f"{line}\n" for line in lines), "mktree")


def bundle(agent: GitRepo, tip: str, path: Path, *, exclude: str | None = "origin/main") -> Path:
    agent.git("update-ref", SRC, tip)
    agent.git("bundle", "create", "-q", str(path), SRC, *([f"^{exclude}"] if exclude else []))
    return path


def state(user: GitRepo) -> dict[str, object]:
    objects = user.path / ".git" / "objects"
    return {
        "refs": user.git("for-each-ref", "--format=%(refname) %(objectname)"),
        "packs": sorted(p.name for p in (objects / "pack").iterdir()),
        "loose": sorted(str(p.relative_to(objects)) for p in objects.glob("??/*")),
        "other": sorted(p.name for p in objects.iterdir() if p.name not in {"pack", "info"} and len(p.name) != 2),
    }


def refused(user: GitRepo, path: Path, why: str) -> str:
    before = state(user)
    with pytest.raises(WorkspaceError, match="harvest refused") as caught:
        HostGit(user.path).fetch_bundle(path, SRC, DEST)
    assert re.search(why, caught.value.message), caught.value.message
    assert state(user) == before, "something of a refused bundle stayed in the repository"
    return caught.value.message


def test_a_clean_bundle_is_installed_once_checked(user: GitRepo, agent: GitRepo, tmp_path: Path) -> None:
    """Positive control: the pack lands in objects/pack, the branch points at the tip, git's own fsck
    agrees, and neither the quarantine nor the pack's .keep is left behind."""
    (agent.path / "new.txt").write_text("new work\n")
    agent.git("add", "-A")
    agent.git("commit", "-q", "-m", "work")
    tip = agent.git("rev-parse", "HEAD")
    before = state(user)
    HostGit(user.path).fetch_bundle(bundle(agent, tip, tmp_path / "b.bundle"), SRC, DEST)
    after = state(user)
    assert user.git("rev-parse", DEST) == tip
    assert user.git("show", f"{tip}:new.txt") == "new work"
    assert user.git("fsck", "--strict", "--no-dangling") == ""
    new = sorted(set(after["packs"]) - set(before["packs"]))  # type: ignore[call-overload]
    assert [Path(p).suffix for p in new] == [".idx", ".pack"], new
    assert after["other"] == before["other"] == [], after["other"]
    assert after["loose"] == before["loose"]


def test_a_full_bundle_without_prerequisites_is_installed(user: GitRepo, agent: GitRepo, tmp_path: Path) -> None:
    """Positive control: a bundle of the whole history (objects the user already has, in it again)."""
    (agent.path / "more.txt").write_text("more\n")
    agent.git("add", "-A")
    agent.git("commit", "-q", "-m", "more")
    tip = agent.git("rev-parse", "HEAD")
    HostGit(user.path).fetch_bundle(bundle(agent, tip, tmp_path / "b.bundle", exclude=None), SRC, DEST)
    assert user.git("rev-parse", DEST) == tip


@pytest.mark.parametrize(
    ("name", "why"),
    [("dotgit", r"fsck.*(hasDotgit|'\.git')"), ("gitmodules-link", r"fsck.*(gitmodulesSymlink|\.gitmodules)")],
)
def test_fsck_still_refuses_what_would_run_on_checkout(
    user: GitRepo, agent: GitRepo, tmp_path: Path, name: str, why: str
) -> None:
    if name == "dotgit":
        hook = blob(agent, "#!/bin/sh\ntouch /tmp/pwned\n")
        hooks = tree(agent, f"100755 blob {hook}\tpost-checkout")
        entry = f"040000 tree {tree(agent, f'040000 tree {hooks}' + chr(9) + 'hooks')}\t.git"
    else:
        entry = f"120000 blob {blob(agent, '.git/config')}\t.gitmodules"
    bad = commit_with(agent, entry)
    refused(user, bundle(agent, bad, tmp_path / "bad.bundle"), why)
    probe = subprocess.run(["git", "-C", str(user.path), "cat-file", "-e", bad], capture_output=True, check=False)
    assert probe.returncode != 0, "the refused commit is in the user's objects"
    assert user.git("rev-parse", DEST) == user.git("rev-parse", "main")


@pytest.fixture
def good(agent: GitRepo, tmp_path: Path) -> tuple[str, bytes]:
    (agent.path / "data.bin").write_bytes(bytes(range(256)) * 64)
    agent.git("add", "-A")
    agent.git("commit", "-q", "-m", "data")
    tip = agent.git("rev-parse", "HEAD")
    return tip, bundle(agent, tip, tmp_path / "good.bundle").read_bytes()


def _split(raw: bytes) -> tuple[bytes, bytes]:
    head, _, pack = raw.partition(b"\n\n")
    return head + b"\n\n", pack


def test_a_corrupt_pack_is_refused(user: GitRepo, good: tuple[str, bytes], tmp_path: Path) -> None:
    _, raw = good
    head, pack = _split(raw)
    flipped = bytearray(pack)
    flipped[len(pack) // 2] ^= 0xFF
    (tmp_path / "flipped.bundle").write_bytes(head + bytes(flipped))
    refused(user, tmp_path / "flipped.bundle", "fsck of the bundle failed")
    (tmp_path / "short.bundle").write_bytes(head + pack[: len(pack) // 2])
    refused(user, tmp_path / "short.bundle", "fsck of the bundle failed")


def test_the_header_is_checked(user: GitRepo, agent: GitRepo, good: tuple[str, bytes], tmp_path: Path) -> None:
    tip, raw = good
    head, pack = _split(raw)
    elsewhere = user.git("rev-parse", "main^{tree}")  # an object the user has, but not a commit
    cases = {
        "absent.bundle": (head.replace(tip.encode(), b"1" * 40), "not a commit"),
        "tree.bundle": (head.replace(tip.encode(), elsewhere.encode()), r"not a commit \(tree\)"),
        "no-ref.bundle": (head.replace(SRC.encode(), b"refs/heads/other"), "names refs/harness/export 0 times"),
        "twice.bundle": (head.replace(b"\n\n", f"\n{tip} {SRC}\n\n".encode()), "2 times"),
        "filter.bundle": (b"# v3 git bundle\n@filter=blob:none\n" + head.split(b"\n", 1)[1], "capability"),
        "sha256.bundle": (b"# v3 git bundle\n@object-format=sha256\n" + head.split(b"\n", 1)[1], "capability"),
        "v9.bundle": (b"# v9 git bundle\n" + head.split(b"\n", 1)[1], "not a git bundle"),
    }
    for name, (header, why) in cases.items():
        (tmp_path / name).write_bytes(header + pack)
        refused(user, tmp_path / name, why)
    (tmp_path / "endless.bundle").write_bytes(head.rstrip(b"\n") + b"\n" + b"x" * 70_000)
    refused(user, tmp_path / "endless.bundle", "header")
    # Positive control: the untouched bytes go in.
    (tmp_path / "same.bundle").write_bytes(head + pack)
    HostGit(user.path).fetch_bundle(tmp_path / "same.bundle", SRC, DEST)
    assert user.git("rev-parse", DEST) == tip


def test_a_tip_that_is_a_blob_is_refused(user: GitRepo, agent: GitRepo, tmp_path: Path) -> None:
    refused(user, bundle(agent, blob(agent, "not a commit\n"), tmp_path / "blob.bundle", exclude=None), "not a commit")


def test_a_prerequisite_the_user_lacks_is_refused(user: GitRepo, agent: GitRepo, tmp_path: Path) -> None:
    """A thin bundle on top of a commit only the copy has: its history would be incomplete."""
    for n in (1, 2):
        (agent.path / "f.txt").write_text(f"{n}\n" * 1000)
        agent.git("add", "-A")
        agent.git("commit", "-q", "-m", f"c{n}")
    refused(
        user,
        bundle(agent, agent.git("rev-parse", "HEAD"), tmp_path / "thin.bundle", exclude="HEAD~1"),
        "fsck of the bundle failed",
    )


def test_a_checked_out_branch_is_not_moved(user: GitRepo, agent: GitRepo, tmp_path: Path) -> None:
    """As `git fetch` refuses: the user's working tree would no longer match the branch it has out."""
    (agent.path / "new.txt").write_text("x\n")
    agent.git("add", "-A")
    agent.git("commit", "-q", "-m", "x")
    user.git("checkout", "-q", "harness/s1")
    refused(user, bundle(agent, agent.git("rev-parse", "HEAD"), tmp_path / "b.bundle"), "checked out")
