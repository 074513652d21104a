"""Attack rows 1 and 2: reach the host through git.

Row 1 plants every git trap the container can reach (config, hooks, fsmonitor, aliases, filters, diff
drivers) with commands that write a canary file under a host path; inside the container that path is on a
tmpfs, so a canary on the host means the trap ran on the host. The agent fires its own traps first (positive
control: they are live), then the user reviews and merges the branch with git and `harness`.

Row 2 commits what fsck must refuse: a tree entry `.git/hooks/post-checkout`, a symlinked `.gitmodules`.
The harvest has to reject it; a commit built the same way with harmless paths is harvested (positive control).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import GitRepo, harness
from tests.security.conftest import iteration, run_agent

pytestmark = pytest.mark.docker

RUN_TIMEOUT = 120  # seconds for one `harness run` (each takes a few seconds here)
HOOKS = (
    "pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout", "post-merge",
    "pre-merge-commit", "reference-transaction", "post-rewrite", "pre-rebase", "pre-push", "pre-auto-gc",
    "post-index-change", "fsmonitor-watchman", "push-to-checkout", "sendemail-validate",
)  # fmt: skip

# Run with `sh -c`. @C@ is the canary directory. Every trap is `mkdir -p C && touch C/fired-<name>`,
# with absolute paths, so that it would work just as well on the host.
PLANT = r"""
set -u
C="@C@"
fire() { printf 'mkdir -p %s && touch %s/fired-%s' "$C" "$C" "$1"; }
plant_hooks() {  # $1: directory, $2: label
  mkdir -p "$1"
  for h in @HOOKS@; do
    printf '#!/bin/sh\nmkdir -p %s && touch %s/fired-%s-%s\nexit 0\n' "$C" "$C" "$2" "$h" > "$1/$h"
    chmod 755 "$1/$h"
  done
}
cd /workspace

# Hooks: the copy's own hooks directory, and a committed .githooks/ that core.hooksPath points at.
plant_hooks .git/hooks git-hooks
plant_hooks .githooks githooks

# The copy's .git/config.
git config core.fsmonitor "$(fire fsmonitor); false"
git config core.hooksPath .githooks
git config alias.status "!$(fire alias-status)"
git config alias.log "!$(fire alias-log)"
git config alias.diff "!$(fire alias-diff)"
git config alias.st "!$(fire alias-st)"
git config alias.lg "!$(fire alias-lg)"
git config filter.x.clean "$(fire filter-clean); cat"
git config filter.x.smudge "$(fire filter-smudge); cat"
git config diff.x.textconv "$(fire textconv); cat"
git config core.pager "$(fire pager); cat"
git config core.editor "$(fire editor); true"
git config core.sshCommand "$(fire ssh-command); false"
git config merge.x.driver "$(fire merge-driver); false"
# $HOME/.gitconfig (the tmpfs home) and the XDG config file.
git config --global alias.gst "!$(fire global-alias-gst)"
git config --global core.fsmonitor "$(fire global-fsmonitor); false"
git config --global filter.x.clean "$(fire global-filter-clean); cat"
mkdir -p "$HOME/.config/git"
git config --file "$HOME/.config/git/config" alias.xst "!$(fire xdg-alias-xst)"
# Attributes that use the filter and the diff and merge drivers: committed, and in .git/info.
printf '*.dat filter=x diff=x merge=x\n' > .gitattributes
mkdir -p .git/info
printf '*.dat filter=x diff=x merge=x\n' > .git/info/attributes

# Commit the traps (pre-commit & co. from .githooks, the clean filter).
printf 'data\n' > secret.dat
git add -A
git commit -q -m "plant git traps"

# Positive control: fire them here, in the container.
git status > /dev/null 2>&1
git st > /dev/null 2>&1
git lg > /dev/null 2>&1
git gst > /dev/null 2>&1
git xst > /dev/null 2>&1
git checkout -q -b probe && git checkout -q -
rm secret.dat && git checkout -- secret.dat
printf 'more\n' >> secret.dat && git diff > /dev/null && git checkout -- secret.dat
git -c core.hooksPath=.git/hooks commit -q --allow-empty -m "probe .git/hooks"
# Refs the user also has: the bundle must carry none of them.
git tag -f v1 HEAD > /dev/null
git branch -f main HEAD
git branch -f feature HEAD

echo "CONTAINER-CANARIES-BEGIN"
for f in "$C"/*; do echo "${f##*/}"; done  # not ls: coreutils' statx fails under gVisor here
echo "CONTAINER-CANARIES-END"
printf '{"state": "done", "summary": "planted"}' > "$HARNESS_STATUS_FILE"
"""

# Fired in the container by the positive control above: proves each kind of trap is live.
MUST_FIRE_IN_CONTAINER = (
    "fsmonitor", "alias-st", "alias-lg", "global-alias-gst", "xdg-alias-xst", "filter-clean", "filter-smudge",
    "textconv", "githooks-pre-commit", "githooks-commit-msg", "githooks-post-commit", "githooks-post-checkout",
    "githooks-reference-transaction", "git-hooks-pre-commit", "git-hooks-reference-transaction",
)  # fmt: skip


@pytest.fixture
def canary_dir() -> Iterator[Path]:
    """A host directory under /tmp (a tmpfs inside every container), writable by anyone who runs a trap."""
    path = Path(f"/tmp/harness-canary-{uuid.uuid4().hex}")
    path.mkdir(mode=0o777)
    path.chmod(0o777)  # whatever the umask: a trap run as any host user could write here
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def user_git(repo: GitRepo, *args: str) -> subprocess.CompletedProcess[str]:
    """The user's own git, in the user's own environment, as they would type it."""
    return subprocess.run(
        ["git", "-C", str(repo.path), *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip


def git_state(repo: GitRepo) -> dict[str, object]:
    """What must not change: the user's .git/config, hooks (names, modes, bytes) and refs."""
    git_dir = repo.path / ".git"
    hooks = {
        p.name: (stat.S_IMODE(p.lstat().st_mode), p.read_bytes() if p.is_file() else None)
        for p in sorted((git_dir / "hooks").iterdir())
    }
    refs = dict(
        line.split(" ", 1) for line in repo.git("for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    )
    return {"config": (git_dir / "config").read_bytes(), "hooks": hooks, "refs": refs}


def without(refs: object, *names: str) -> dict[str, str]:
    assert isinstance(refs, dict)
    return {k: v for k, v in refs.items() if k not in names}


@pytest.mark.attack(row=1, name="plant git config, hooks, fsmonitor, aliases, filters")
def test_planted_git_traps_never_fire_on_the_host(repo: GitRepo, runtime: str, canary_dir: Path) -> None:
    session = f"traps-{runtime}"
    branch = f"refs/heads/harness/{session}"
    repo.git("tag", "v1")
    repo.git("branch", "feature")
    before = git_state(repo)
    main_before = repo.git("rev-parse", "main")

    def no_canary(after: str) -> None:
        fired = sorted(p.name for p in canary_dir.iterdir())
        assert not fired, f"a planted trap ran on the host after {after}: {fired}"

    script = PLANT.replace("@C@", str(canary_dir)).replace("@HOOKS@", " ".join(HOOKS))
    r = run_agent(repo, session, script, runtime, "--iteration-timeout", "2m", timeout=RUN_TIMEOUT)
    assert r.code == 0, r.stderr
    no_canary("the run and its harvest")

    # Positive control: every kind of trap fired inside the container.
    log = (repo.journal(session) / "iteration-0001.log").read_text()
    block = re.search(r"CONTAINER-CANARIES-BEGIN\n(.*?)CONTAINER-CANARIES-END", log, re.DOTALL)
    assert block, log
    fired_inside = set(block.group(1).split())
    missing = sorted(f"fired-{name}" for name in MUST_FIRE_IN_CONTAINER if f"fired-{name}" not in fired_inside)
    assert not missing, (missing, log)

    record = iteration(repo, session)
    assert record["outcome"] == "done", record
    assert record["harvestError"] is None, record
    # The traps' files did come back as data: the user's repository holds them, inert.
    tree = repo.git("ls-tree", "-r", "--name-only", branch).splitlines()
    assert {".gitattributes", ".githooks/post-checkout", ".githooks/pre-commit", "secret.dat"} <= set(tree), tree
    after_run = git_state(repo)
    assert after_run["config"] == before["config"]
    assert after_run["hooks"] == before["hooks"]
    assert without(after_run["refs"], branch) == before["refs"]

    # The morning review, with the user's own git (aliases included) and with harness.
    for args in (
        ("status",),
        ("st",),
        ("lg",),
        ("log", "-p", f"harness/{session}"),
        ("log", "--stat", "--format=fuller", "-3", f"harness/{session}"),
        ("diff", "main", f"harness/{session}"),
        ("show", f"harness/{session}:secret.dat"),
    ):
        user_git(repo, *args)
        no_canary(f"git {' '.join(args)}")
    assert "secret.dat" in user_git(repo, "diff", "--stat", "main", f"harness/{session}").stdout

    shown = harness("diff", "--session", session, "--json", cwd=repo.path)
    assert shown.code == 0, shown.stderr
    assert {".gitattributes", ".githooks/post-checkout"} <= set(shown.json()["flagged"]), shown.stdout
    no_canary("harness diff")
    assert harness("diff", "--session", session, cwd=repo.path).code == 0
    no_canary("harness diff (text)")

    merged = harness("merge", "--session", session, "--accept-flagged", "--json", cwd=repo.path)
    assert merged.code == 0, merged.stderr
    no_canary("harness merge --accept-flagged")
    head = repo.git("rev-parse", "HEAD")
    assert repo.git("rev-parse", "main") == head == merged.json()["mergedCommit"]
    assert repo.git("rev-list", "--parents", "-n", "1", head).split()[1:] == [
        main_before, repo.git("rev-parse", branch)
    ]  # fmt: skip

    # The user goes on working on the merged tree: .gitattributes and .githooks/ are now checked out.
    assert (repo.path / ".gitattributes").read_text() == "*.dat filter=x diff=x merge=x\n"
    assert os.access(repo.path / ".githooks/post-checkout", os.X_OK)
    (repo.path / "secret.dat").write_text("data\nedited by the user\n")
    for args in (
        ("status",),
        ("diff",),
        ("log", "-p", "-2"),
        ("diff", "HEAD^1", "HEAD"),
        ("checkout", "-q", "-b", "after-merge"),
        ("checkout", "-q", "main"),
        ("branch", "-q", "-D", "after-merge"),
        ("checkout", "--", "secret.dat"),
        ("status",),
    ):
        user_git(repo, *args)
        no_canary(f"git {' '.join(args)} after the merge")

    after = git_state(repo)
    assert after["config"] == before["config"]
    assert after["hooks"] == before["hooks"]
    assert without(after["refs"], branch, "refs/heads/main") == without(before["refs"], "refs/heads/main")


# Row 2. The agent builds a commit with plumbing (git add refuses these paths) and makes it HEAD;
# `git reset --hard` refuses to check the bad ones out, so HEAD is then moved with update-ref.
CRAFT = r"""
set -eu
cd /workspace
ENTRY
root=$( (git ls-tree HEAD; printf '%s\n' "$entry") | git mktree)
bad=$(git commit-tree "$root" -p HEAD -m "CRAFTED")
git reset -q --hard "$bad" 2>/dev/null || git update-ref HEAD "$bad"
echo "crafted $bad"
printf '{"state": "done", "summary": "crafted %s"}' "$bad" > "$HARNESS_STATUS_FILE"
"""
DOTGIT_ENTRY = r"""
hook=$(printf '#!/bin/sh\ntouch /tmp/pwned\n' | git hash-object -w --stdin)
hooks=$(printf '100755 blob %s\tpost-checkout\n' "$hook" | git mktree)
dir=$(printf '040000 tree %s\thooks\n' "$hooks" | git mktree)
entry=$(printf '040000 tree %s\t.git' "$dir")
"""
GITMODULES_ENTRY = r"""
target=$(printf '.git/config' | git hash-object -w --stdin)
entry=$(printf '120000 blob %s\t.gitmodules' "$target")
"""
CLEAN_ENTRY = r"""
hook=$(printf '#!/bin/sh\necho fine\n' | git hash-object -w --stdin)
hooks=$(printf '100755 blob %s\tpost-checkout\n' "$hook" | git mktree)
dir=$(printf '040000 tree %s\thooks\n' "$hooks" | git mktree)
entry=$(printf '040000 tree %s\tdocs' "$dir")
"""
CRAFTED = {
    "dotgit-hooks-entry": (DOTGIT_ENTRY, r"hasDotgit|'\.git'"),
    "symlinked-gitmodules": (GITMODULES_ENTRY, r"gitmodulesSymlink|\.gitmodules"),
}


def crafted_sha(repo: GitRepo, session: str) -> str:
    found = re.findall(r"^crafted ([0-9a-f]{40})$", (repo.journal(session) / "iteration-0001.log").read_text(), re.M)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.attack(row=2, name="commit a .git/hooks path and a symlinked .gitmodules")
@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_harvest_rejects_commits_fsck_refuses(repo: GitRepo, kind: str) -> None:
    entry, why = CRAFTED[kind]
    session = f"craft-{kind}"
    base = repo.git("rev-parse", "main")
    r = run_agent(repo, session, CRAFT.replace("ENTRY", entry), "runc", "--iteration-timeout", "2m",
                  timeout=RUN_TIMEOUT)  # fmt: skip
    assert r.code == 0, r.stderr
    bad = crafted_sha(repo, session)
    record = iteration(repo, session)
    assert record["outcome"] == "done", record

    # The branch stays where it was, the iteration says why, and the bad commit is not in the user's objects.
    assert repo.git("rev-parse", f"harness/{session}") == base
    error = record["harvestError"]
    assert isinstance(error, str), record
    assert re.search(r"fsck", error, re.IGNORECASE) and re.search(why, error), error
    assert bad not in record.get("commits", []), record
    probe = subprocess.run(["git", "-C", str(repo.path), "cat-file", "-e", f"{bad}^{{commit}}"],
                           capture_output=True, check=False)  # fmt: skip
    assert probe.returncode != 0, f"{bad} landed in the user's objects"
    assert repo.git("rev-parse", "main") == base


def test_harvest_takes_a_crafted_but_clean_commit(repo: GitRepo) -> None:
    """Positive control for row 2: the same plumbing with harmless paths is harvested."""
    session = "craft-clean"
    base = repo.git("rev-parse", "main")
    r = run_agent(repo, session, CRAFT.replace("ENTRY", CLEAN_ENTRY), "runc", "--iteration-timeout", "2m",
                  timeout=RUN_TIMEOUT)  # fmt: skip
    assert r.code == 0, r.stderr
    good = crafted_sha(repo, session)
    record = iteration(repo, session)
    assert record["outcome"] == "done" and record["harvestError"] is None, record
    assert repo.git("rev-parse", f"harness/{session}") == good
    assert record["commits"] == [good], record
    assert repo.git("rev-parse", f"{good}^") == base
    assert repo.git("show", f"{good}:docs/hooks/post-checkout") == "#!/bin/sh\necho fine"


# An agent names a file with bytes that are not UTF-8. Every morning command prints paths as text: harvested,
# such a name would break `status`, `diff` and `report` for the session (exit 1, an internal error). The
# harvest refuses it and says which name; the same agent with a UTF-8 name is harvested (positive control).
NAMED = r"""
set -eu
cd /workspace
name=$(printf 'NAME')
echo hello > "$name"
printf '{"state": "done", "summary": "named a file"}' > "$HARNESS_STATUS_FILE"
"""


ROW23 = pytest.mark.attack(row=23, name="name a file with bytes that are not UTF-8 (break the morning commands)")


@pytest.mark.parametrize(
    ("name", "harvested"),
    [pytest.param("caf\\351.txt", False, marks=ROW23), pytest.param("caf\\303\\251.txt", True, id="control")],
)
def test_a_path_that_is_not_utf8_is_not_harvested(repo: GitRepo, name: str, harvested: bool) -> None:
    session = "named-utf8" if harvested else "named-latin1"
    base = repo.git("rev-parse", "main")
    r = run_agent(repo, session, NAMED.replace("NAME", name), timeout=RUN_TIMEOUT)
    assert r.code == 0, r.stderr
    record = iteration(repo, session)
    assert record["outcome"] == "done", record
    if harvested:
        assert record["harvestError"] is None, record
        assert repo.git("show", "--name-only", "--format=", f"harness/{session}") == '"caf\\303\\251.txt"'
    else:
        error = record["harvestError"]
        assert isinstance(error, str) and "not UTF-8" in error and "caf\\xe9.txt" in error, error
        assert repo.git("rev-parse", f"harness/{session}") == base
    # The morning commands work either way.
    for command in (["status"], ["diff", "--json"], ["report", "--format", "json"]):
        shown = harness(*command, "--session", session, cwd=repo.path, timeout=60)
        assert shown.code == 0, (command, shown.stdout, shown.stderr)
