import subprocess
from pathlib import Path

import pytest

from runner.record.flagged import FlagReason, classify, flagged, in_journal, in_tool_dir, is_flagged, journal_roots
from runner.record.gitops import HostGit
from tests.helpers import GIT_ID, make_repo


@pytest.mark.parametrize(
    "path",
    [".vscode/tasks.json", ".claude/settings.json", ".envrc", ".githooks/pre-commit", ".gitattributes",
     "sub/.vscode/launch.json", ".vscode", ".githooks", ".VSCode/tasks.json", ".EnvRC", ".github/workflows/ci.yml",
     "pkg/.gitattributes", ".env.local", ".gitmodules", ".lfsconfig", "harness.toml"],
)  # fmt: skip
def test_paths_that_run_code_later_are_flagged(path: str) -> None:
    assert is_flagged(path)


@pytest.mark.parametrize("path", ["src/ok.py", "README.md", "docs/vscode.md", "envrc.txt", "my.vscode/x"])
def test_ordinary_paths_are_not(path: str) -> None:
    assert not is_flagged(path)


def test_symlinks_and_submodules_are_always_flagged() -> None:
    assert flagged(["src/a.py", "docs/link"], ["docs/link"]) == ["docs/link"]


# Issue 8: tool directories, the journal root, and what a merge would write over.


@pytest.mark.parametrize(
    "path",
    [".venv/bin/activate", "venv/Scripts/activate.bat", "sub/env/bin/python", ".VENV/BIN/activate",
     "node_modules/.bin/tool", "node_modules/pkg/index.js", "a/.tox/py/bin/pytest", ".direnv/python/bin/x",
     "lib/python3.11/site-packages/evil.pth", "gradlew", "gradle/wrapper/gradle-wrapper.jar", "x/pyvenv.cfg",
     ".yarn/releases/yarn-4.js"],
)  # fmt: skip
def test_scripts_of_tool_directories_are_flagged(path: str) -> None:
    assert in_tool_dir(path)


@pytest.mark.parametrize(
    "path", ["bin/run.sh", "src/bin/tool.py", "environment/bin/x", ".venv/README", "docs/node_modules.md", "venv"]
)
def test_ordinary_bin_directories_are_not(path: str) -> None:
    assert not in_tool_dir(path)


def test_a_virtualenv_by_any_name_is_known_by_its_pyvenv_cfg() -> None:
    assert not in_tool_dir("tools/py/bin/python")
    assert in_tool_dir("tools/py/bin/python", venvs={"tools/py"})
    assert in_tool_dir("Tools/Py/bin/python", venvs={"tools/py"})


def test_journal_root_and_its_parents(tmp_path: Path) -> None:
    roots = journal_roots(tmp_path, tmp_path / "memory/context-db/sessions")
    assert roots == ["memory/context-db/sessions"]
    for path in ["memory/context-db/sessions/s/artifacts/solo-harness/run-summary.json", "memory",
                 "memory/context-db", "Memory/Context-DB/Sessions/x"]:  # fmt: skip
        assert in_journal(path, roots), path
    for path in ["memory/notes.md", "memory/context-db/other", "src/memory/context-db/sessions/x"]:
        assert not in_journal(path, roots), path
    # A configured root inside the tree is protected as well as the default; one outside adds nothing.
    assert journal_roots(tmp_path, tmp_path / "var/journal") == ["memory/context-db/sessions", "var/journal"]
    assert journal_roots(tmp_path, tmp_path.parent / "elsewhere") == ["memory/context-db/sessions"]


def test_classify_gives_every_reason() -> None:
    reasons = classify(
        [".env", ".venv/bin/activate", "src/ok.py", "memory/context-db/sessions/x/y.json", "notes.txt"],
        links=["docs/link"],
        history_links=["notes.txt"],
        ignored={".env", ".venv/bin/activate"},
        journal=["memory/context-db/sessions"],
    )
    assert reasons == {
        ".env": [FlagReason.RUNS_LATER, FlagReason.IGNORED],
        ".venv/bin/activate": [FlagReason.IGNORED, FlagReason.TOOL_DIR],
        "docs/link": [FlagReason.LINK],
        "memory/context-db/sessions/x/y.json": [FlagReason.JOURNAL],
        "notes.txt": [FlagReason.LINK_IN_HISTORY],
    }


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_ID, "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_host_git_finds_ignored_and_untracked_files_in_the_way(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r").path
    (repo / ".gitignore").write_text(".venv/\n.env\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "ignore")
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/activate").write_text("mine")
    (repo / ".env").write_text("mine")
    (repo / "notes.txt").write_text("untracked")
    (repo / "data").mkdir()
    (repo / "data/cache.bin").write_text("untracked, in a directory the branch makes a file")
    (repo / "linked").symlink_to(tmp_path)
    with HostGit(repo) as git:
        assert git.ignored([".venv/bin/activate", ".env", "sub/.env", "app.py", "build/x"]) == {
            ".venv/bin/activate", ".env", "sub/.env"
        }  # fmt: skip
        paths = [".venv/bin/activate", ".env", "notes.txt", "data", "linked/evil.sh", "app.py", "new/file.py",
                 ".venv/bin/python"]  # fmt: skip
        assert git.in_the_way(paths) == [".env", ".venv/bin/activate", "data", "linked", "notes.txt"]
        assert git.in_the_way(["app.py", "README.md", "src/new.py"]) == []  # tracked, or nothing there


def test_host_git_finds_a_symlink_in_any_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r").path
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "notes.txt").symlink_to("/home/user/.bashrc")
    _git(repo, "add", "notes.txt")
    _git(repo, "commit", "-q", "-m", "link")
    (repo / "notes.txt").unlink()
    (repo / "notes.txt").write_text("plain\n")
    _git(repo, "add", "notes.txt")
    _git(repo, "commit", "-q", "-m", "file")
    with HostGit(repo) as git:
        assert git.changes(base, "HEAD") == (["notes.txt"], [])  # the tip alone shows a plain file
        assert git.links_in_history(base, "HEAD") == {"notes.txt": "/home/user/.bashrc"}
        assert git.links_in_history("HEAD~1", "HEAD") == {}


PYPROJECT_BASE = '[project]\nname = "app"\nversion = "1"\n\n[tool.harness]\nmax_iterations = 3\n'


@pytest.mark.parametrize(
    ("new", "flag"),
    [
        (PYPROJECT_BASE.replace('version = "1"', 'version = "2"'), False),  # the project's own table only
        (PYPROJECT_BASE.replace("max_iterations = 3", "max_iterations = 3\ncheck = 'true'"), True),
        (PYPROJECT_BASE.replace("[tool.harness]\nmax_iterations = 3\n", ""), True),  # removed
        (PYPROJECT_BASE + "[tool.harness.x\n", True),  # does not parse: compared by its bytes
    ],
)
def test_a_change_to_the_tool_harness_table_of_pyproject_is_flagged(tmp_path: Path, new: str, flag: bool) -> None:
    from runner.usecases.review.findings import review

    repo = make_repo(tmp_path / "repo")
    (repo.path / "pyproject.toml").write_text(PYPROJECT_BASE)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "pyproject")
    base = repo.git("rev-parse", "HEAD")
    (repo.path / "pyproject.toml").write_text(new)
    repo.git("commit", "-q", "-am", "change it")
    head = repo.git("rev-parse", "HEAD")
    with HostGit(repo.path) as git:
        seen = review(git, repo.path, base, head)
    assert seen.files == ["pyproject.toml"]
    assert seen.reasons == ({"pyproject.toml": [FlagReason.HARNESS_CONFIG]} if flag else {})
