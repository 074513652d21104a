"""Attack rows 9-14: make the morning's merge the way in (issue 8).

The container holds, but the branch comes back. An agent `git add -f`s files at paths the user's tree
ignores and commits them; git treats ignored files as expendable, so a plain `git merge` replaces the
user's `.venv/bin/activate` (the next `source .venv/bin/activate` runs the agent's code on the host), the
user's `.env`, or another session's journal. Each test first shows the trap is live (positive control: the
user's own `git merge` of the same branch, in a separate worktree, replaces the file, even with git's
`--no-overwrite-ignore`), then that `harness diff` flags it and `harness merge` refuses it, with and without
`--accept-flagged`, leaving the user's file byte-identical. The rest of the way back gets the same look: a
symlink that only an earlier commit of the branch has, a merge into whatever branch is checked out, a
`--squash` whose commit fails, and `discard` of a branch checked out in a working tree.

One `harness run --agent-cmd` per branch, all made once for the module on one repository.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.record.flagged import flagged
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import GitRepo, Result, harness, make_repo, run_args

# One worker makes the module's runs (its `world`) and checks them all (`make test` runs on parallel workers).
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("merge-overwrite")]

UNSAFE = 13  # ExitCode.UNSAFE_TO_PROCEED: flagged paths, needs --accept-flagged
OVERWRITE = 14  # ExitCode.MERGE_WOULD_OVERWRITE: refused even with --accept-flagged
WORKSPACE = 9  # ExitCode.WORKSPACE_ERROR

ROW9 = pytest.mark.attack(row=9, name="commit over an ignored file: .venv/bin/activate, .env")
ROW10 = pytest.mark.attack(row=10, name="commit into the harness journal (another session's files)")
ROW11 = pytest.mark.attack(row=11, name="commit scripts into ignored and tool directories (venv, node_modules)")
ROW12 = pytest.mark.attack(row=12, name="a symlink to ~/.bashrc in one commit, a plain file in the next")
ROW13 = pytest.mark.attack(row=13, name="merge into another branch; --squash whose commit fails")
ROW14 = pytest.mark.attack(row=14, name="discard while the session's branch is checked out")
INVALID_STATE = 11  # ExitCode.INVALID_STATE

COMMIT = "git -c user.name=agent -c user.email=agent@example.invalid commit -q -m"
DONE = """printf '{"state": "done", "summary": "planted"}' > "$HARNESS_STATUS_FILE"\n"""
VICTIM = "memory/context-db/sessions/victim/artifacts/solo-harness/run-summary.json"
SCRIPTS = {
    "activate": "mkdir -p .venv/bin && printf '#!/bin/sh\\necho planted\\n' > .venv/bin/activate"
    " && git add -f .venv/bin/activate",
    "dotenv": "printf 'API_KEY=planted\\n' > .env && git add -f .env",
    "journal": f"mkdir -p {VICTIM.rsplit('/', 1)[0]} && printf '{{\"planted\": true}}' > {VICTIM} && git add -f memory",
    "tools": "mkdir -p build node_modules/.bin tools/venv/bin envs/py/bin src"
    " && for f in build/run.sh node_modules/.bin/tool tools/venv/bin/python envs/py/bin/python; do"
    " printf 'echo planted\\n' > $f; chmod +x $f; done && printf 'home = /usr\\n' > envs/py/pyvenv.cfg"
    " && printf 'print(1)\\n' > src/ok.py && git add -f build node_modules tools envs src",
    "linkhist": f"ln -s /home/user/.bashrc notes.txt && git add notes.txt && {COMMIT} link"
    f" && rm notes.txt && printf 'plain\\n' > notes.txt && git add notes.txt && {COMMIT} file",
    "plain": "mkdir -p src && printf 'print(1)\\n' > src/ok.py",
    "thrown": "mkdir -p src && printf 'print(2)\\n' > src/thrown.py",
}
# The user's own files, which git does not track: each one a target of the branches above.
USER_FILES = {
    ".venv/bin/activate": b"# the user's virtualenv\nexport VIRTUAL_ENV=/home/user/project/.venv\n",
    ".venv/pyvenv.cfg": b"home = /usr/bin\n",
    ".env": b"API_KEY=the-users-own-key\n",
    VICTIM: b'{"kind": "solo-harness.run-summary", "sessionId": "victim"}\n',
}


@dataclass
class World:
    repo: GitRepo
    base: str  # main's head when the runs started
    env: dict[str, str]  # the module's harness home and container labels
    tmp: Path

    def cli(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
        return harness(*args, cwd=cwd or self.repo.path, timeout=120, env={**self.env, **(env or {})})

    def worktree(self, name: str, *, copy: tuple[str, ...] = ()) -> GitRepo:
        """A second working tree of the user's repository on a new branch `name`, holding copies of the
        user's untracked files `copy`: merges there leave the main tree as it is."""
        path = self.tmp / "wt" / name
        self.repo.git("worktree", "add", "-q", "-b", name, str(path), "main")
        for rel in copy:
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_bytes(USER_FILES[rel])
        return GitRepo(path)

    def elsewhere(self) -> dict[str, str]:
        """For `harness` in another worktree: the journal stays in the main one."""
        return {"HARNESS_JOURNAL_ROOT": str(self.repo.path / "memory/context-db/sessions")}


def intact(root: Path, files: tuple[str, ...] = tuple(USER_FILES)) -> None:
    """The user's files, byte for byte."""
    for rel in files:
        assert (root / rel).read_bytes() == USER_FILES[rel], rel


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("merge-attacks")
    repo = make_repo(tmp / "repo")
    (repo.path / ".gitignore").write_text(".venv/\n.env\nbuild/\n")
    repo.git("add", ".gitignore")
    repo.git("commit", "-q", "-m", "ignore the virtualenv, .env and build/")
    env = {
        "HARNESS_HOME": str(tmp_path_factory.mktemp("harness-home")),
        "HARNESS_CONTAINER_LABELS": f"io.solo-harness.test={TEST_RUN_LABEL}",
    }
    w = World(repo=repo, base=repo.git("rev-parse", "HEAD"), env=env, tmp=tmp)
    for session, script in SCRIPTS.items():
        r = w.cli(*run_args(session, "--iteration-timeout", "2m", cmd=f"set -eu\n{script}\n{DONE}", objective="attack",
                            iterations=1))  # fmt: skip
        assert r.code == 0, (session, r.stdout, r.stderr)
    for rel, data in USER_FILES.items():  # after the runs: nothing of it reached a copy
        (repo.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / rel).write_bytes(data)
    assert repo.git("status", "--porcelain") == ""  # all ignored: a clean tree, as the user sees it
    repo.git("config", "user.name", "Test User")
    repo.git("config", "user.email", "test@example.invalid")
    yield w
    shutil.rmtree(tmp / "wt", ignore_errors=True)


def one_error_line(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), r.stderr
    return lines[0]


def untouched(w: World) -> None:
    """The main tree after a refused merge: same HEAD, no merge in progress, every user file as it was."""
    assert w.repo.git("rev-parse", "HEAD") == w.base
    assert w.repo.git("status", "--porcelain") == ""
    assert w.repo.git("rev-parse", "-q", "--verify", "MERGE_HEAD", check=False) == ""
    intact(w.repo.path)


def plain_git_merge(w: World, session: str, name: str, copy: tuple[str, ...]) -> GitRepo:
    """Positive control: the user's own `git merge` of the branch in a worktree holding the same files."""
    wt = w.worktree(name, copy=copy)
    wt.git("merge", "--no-ff", "--no-overwrite-ignore", "-q", "-m", "plain", f"harness/{session}")
    assert wt.git("rev-parse", "HEAD^2") == w.repo.git("rev-parse", f"harness/{session}")
    return wt


def refused(w: World, session: str, code: int, *args: str) -> str:
    m = w.cli("merge", "--session", session, *args)
    assert m.code == code, (args, m.stdout, m.stderr)
    assert m.stdout == ""
    untouched(w)
    return one_error_line(m)


@ROW9
def test_ignored_activate_script(world: World) -> None:
    wt = plain_git_merge(world, "activate", "control-activate", (".venv/bin/activate", ".venv/pyvenv.cfg"))
    assert (wt.path / ".venv/bin/activate").read_bytes() == b"#!/bin/sh\necho planted\n"  # the trap is live

    d = world.cli("diff", "--session", "activate", "--json")
    assert d.code == 0, d.stderr
    assert set(d.json()["reasons"][".venv/bin/activate"]) == {"ignored", "tool-dir"}
    st = world.cli("status", "--session", "activate", "--json")  # the morning report flags it too
    assert ".venv/bin/activate" in st.json()["flagged"], st.stdout
    assert d.json()["wouldOverwrite"] == [".venv/bin/activate"]
    text = world.cli("diff", "--session", "activate")
    assert "refuses this branch" in text.stderr and ".venv/bin/activate" in text.stderr, text.stderr

    for args in ([], ["--accept-flagged"], ["--squash", "--accept-flagged"], ["--json", "--accept-flagged"]):
        line = refused(world, "activate", OVERWRITE, *args)
        assert ".venv/bin/activate" in line and "even with --accept-flagged" in line, line


@ROW9
def test_ignored_dotenv(world: World) -> None:
    wt = plain_git_merge(world, "dotenv", "control-dotenv", (".env",))
    assert (wt.path / ".env").read_bytes() == b"API_KEY=planted\n"  # the trap is live

    d = world.cli("diff", "--session", "dotenv", "--json").json()
    assert set(d["reasons"][".env"]) == {"runs-later", "ignored"} and d["wouldOverwrite"] == [".env"]
    assert ".env" in refused(world, "dotenv", OVERWRITE)
    line = refused(world, "dotenv", OVERWRITE, "--accept-flagged")
    assert ".env" in line and "replace files git does not track" in line, line


@ROW10
def test_journal_files(world: World) -> None:
    wt = plain_git_merge(world, "journal", "control-journal", (VICTIM,))
    assert json.loads((wt.path / VICTIM).read_text()) == {"planted": True}  # the trap is live

    d = world.cli("diff", "--session", "journal", "--json").json()
    assert "journal" in d["reasons"][VICTIM] and d["journalPaths"] == [VICTIM]
    line = refused(world, "journal", OVERWRITE, "--accept-flagged")
    assert VICTIM in line and "harness journal" in line, line

    # Without a file in the way (a session not yet on this machine) the journal root alone refuses it.
    victim = world.repo.path / VICTIM
    aside = world.tmp / "victim-aside.json"
    victim.rename(aside)
    try:
        d = world.cli("diff", "--session", "journal", "--json").json()
        assert d["wouldOverwrite"] == [] and d["journalPaths"] == [VICTIM]
        m = world.cli("merge", "--session", "journal", "--accept-flagged")
        assert m.code == OVERWRITE, (m.stdout, m.stderr)
        line = one_error_line(m)
        assert "harness journal" in line and "replace files" not in line, line
        assert world.repo.git("rev-parse", "HEAD") == world.base and not victim.exists()
    finally:
        aside.rename(victim)
    untouched(world)


@ROW11
def test_scripts_in_ignored_and_tool_directories(world: World) -> None:
    planted = ["build/run.sh", "envs/py/bin/python", "envs/py/pyvenv.cfg", "node_modules/.bin/tool",
               "tools/venv/bin/python"]  # fmt: skip
    d = world.cli("diff", "--session", "tools", "--json")
    assert d.code == 0, d.stderr
    reasons = d.json()["reasons"]
    assert sorted(reasons) == planted  # and not src/ok.py
    assert reasons["build/run.sh"] == ["ignored"]
    assert all(reasons[p] == ["tool-dir"] for p in planted if p != "build/run.sh"), reasons
    assert flagged(planted) == []  # positive control: the name list alone lets every one of them through
    line = refused(world, "tools", UNSAFE)
    assert "--accept-flagged" in line and all(p in line for p in planted), line

    # Reviewed and accepted, nothing of the user's in the way: it merges (into a branch of a second tree).
    wt = world.worktree("feature")
    wt.git("commit", "-q", "--allow-empty", "-m", "the user's own work on feature")
    before = wt.git("rev-parse", "HEAD")
    m = world.cli("merge", "--session", "tools", "--accept-flagged", "--json", cwd=wt.path, env=world.elsewhere())
    assert m.code == 0, m.stderr
    assert m.json()["into"] == "feature" and sorted(m.json()["flagged"]) == planted
    assert wt.git("rev-parse", "HEAD^1", "HEAD^2").splitlines() == [
        before,
        world.repo.git("rev-parse", "harness/tools"),
    ]
    assert (wt.path / "node_modules/.bin/tool").read_text() == "echo planted\n"
    untouched(world)


@ROW12
def test_symlink_in_history(world: World) -> None:
    tip = world.repo.git("ls-tree", "harness/linkhist", "notes.txt").split()[0]
    before = world.repo.git("ls-tree", "harness/linkhist~1", "notes.txt").split()[0]
    assert (before, tip) == ("120000", "100644")  # a link in one commit, a file in the tip
    changed = world.repo.git("diff", "--raw", world.base, "harness/linkhist")
    assert ":000000 100644" in changed and "notes.txt" in changed  # the base..tip diff shows a plain file
    assert flagged(["notes.txt"], []) == []  # positive control: the tip's paths and links miss it

    d = world.cli("diff", "--session", "linkhist", "--json").json()
    assert d["reasons"]["notes.txt"] == ["link-in-history"]
    assert d["links"] == {"notes.txt": "/home/user/.bashrc"}
    text = world.cli("diff", "--session", "linkhist")
    assert "notes.txt" in text.stderr and "/home/user/.bashrc" in text.stderr, text.stderr
    line = refused(world, "linkhist", UNSAFE)
    assert "notes.txt" in line and "--accept-flagged" in line, line


@ROW13
def test_merge_into_another_branch_never_overwrites(world: World) -> None:
    wt = world.worktree("other", copy=(".venv/bin/activate", ".venv/pyvenv.cfg", ".env"))
    wt.git("commit", "-q", "--allow-empty", "-m", "the user's own work on other")
    before = wt.git("rev-parse", "HEAD")
    for session, path in (("activate", ".venv/bin/activate"), ("dotenv", ".env")):
        m = world.cli("merge", "--session", session, "--accept-flagged", cwd=wt.path, env=world.elsewhere())
        assert m.code == OVERWRITE, (m.stdout, m.stderr)
        assert path in one_error_line(m)
        assert wt.git("rev-parse", "HEAD") == before and wt.git("status", "--porcelain") == ""
    intact(wt.path, (".venv/bin/activate", ".venv/pyvenv.cfg", ".env"))
    untouched(world)


FAILING_HOOK = "#!/bin/sh\necho 'pre-commit: rejected' >&2\nexit 1\n"


@ROW13
def test_squash_whose_commit_fails_leaves_nothing_staged(world: World) -> None:
    hooks = world.tmp / "failing-hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-commit").write_text(FAILING_HOOK)
    (hooks / "pre-commit").chmod(0o755)
    # The user's own hook refuses the squash commit (git reads this config from the environment).
    hook_env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": str(hooks)}

    control = world.worktree("control-squash")  # positive control: squash, failed commit, merge --abort
    start = control.git("rev-parse", "HEAD")
    control.git("-c", f"core.hooksPath={hooks}", "merge", "--squash", "harness/plain")
    control.git("-c", f"core.hooksPath={hooks}", "commit", "-q", "-m", "x", check=False)
    control.git("merge", "--abort", check=False)  # "There is no merge to abort (MERGE_HEAD missing)"
    assert control.git("rev-parse", "HEAD") == start
    assert "A  src/ok.py" in control.git("status", "--porcelain")  # the branch stays staged

    wt = world.worktree("squash")
    before = wt.git("rev-parse", "HEAD")
    m = world.cli("merge", "--session", "plain", "--squash", cwd=wt.path, env={**world.elsewhere(), **hook_env})
    assert m.code == WORKSPACE, (m.stdout, m.stderr)
    assert "git commit failed and was undone" in one_error_line(m)
    assert wt.git("rev-parse", "HEAD") == before
    assert wt.git("status", "--porcelain") == "" and not (wt.path / "src/ok.py").exists()
    untouched(world)


@ROW14
def test_discard_refuses_a_checked_out_branch(world: World) -> None:
    head = world.repo.git("rev-parse", "harness/thrown")
    # Positive control: deleting a checked-out branch (what discard did) leaves its files staged there.
    world.repo.git("branch", "harness/thrown-copy", head)
    control = world.tmp / "wt" / "control-discard"
    world.repo.git("worktree", "add", "-q", str(control), "harness/thrown-copy")
    world.repo.git("update-ref", "-d", "refs/heads/harness/thrown-copy")
    assert "A  src/thrown.py" in GitRepo(control).git("status", "--porcelain")

    wt = world.tmp / "wt" / "look"
    world.repo.git("worktree", "add", "-q", str(wt), "harness/thrown")  # the user tries the branch out
    d = world.cli("discard", "--session", "thrown")
    assert d.code == INVALID_STATE, (d.stdout, d.stderr)
    line = one_error_line(d)
    assert "checked out" in line and str(wt) in line, line
    assert world.repo.git("rev-parse", "harness/thrown") == head and world.repo.journal("thrown").is_dir()

    GitRepo(wt).git("checkout", "-q", "--detach", "main")
    d = world.cli("discard", "--session", "thrown", "--json")
    assert d.code == 0, d.stderr
    assert world.repo.git("rev-parse", "-q", "--verify", "harness/thrown", check=False) == ""
    assert not (wt / "src/thrown.py").exists() and GitRepo(wt).git("status", "--porcelain") == ""
    untouched(world)
