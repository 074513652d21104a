"""status and list keep the review of a branch in the journal (.review-cache.json) and run git once per
repository: what they show must stay what a fresh review says, whatever moved in between."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.record.gitops import HostGit
from runner.record.models import RunState
from runner.usecases.review.findings import review
from runner.usecases.status import SessionStatus, StatusRequest, get_status, list_all, list_statuses
from tests.helpers import GitRepo, make_repo
from tests.unit.test_readers import record_session


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every git command HostGit runs (its sanitized `run`, and check-ignore, which runs on its own)."""
    calls: list[tuple[str, ...]] = []
    real_run, real_ignored = HostGit.run, HostGit.ignored

    def run(self: HostGit, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return real_run(self, *args, **kwargs)  # type: ignore[arg-type]

    def ignored(self: HostGit, paths: list[str]) -> set[str]:
        calls.append(("check-ignore",))
        return real_ignored(self, paths)

    monkeypatch.setattr(HostGit, "run", run)
    monkeypatch.setattr(HostGit, "ignored", ignored)
    return calls


def branch_commit(repo: GitRepo, session: str, files: dict[str, str]) -> None:
    """A commit on harness/<session> adding `files` (the user's checkout stays on main)."""
    repo.git("checkout", "-q", f"harness/{session}")
    for name, text in files.items():
        (repo.path / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / name).write_text(text)
    repo.git("add", "-f", *files)
    repo.git("commit", "-q", "-m", "more work")
    repo.git("checkout", "-q", "main")
    for name in files:  # the checkout of main removed them: the working tree is main's again
        assert not (repo.path / name).exists()


def shown(repo: GitRepo, session: str) -> SessionStatus:
    return get_status(StatusRequest(repo=repo.path, session=session))


def fresh(repo: GitRepo, st: SessionStatus) -> tuple[list[str], dict[str, list[str]], list[str], list[str]]:
    """What the same review says when computed now, from nothing."""
    assert st.head_commit is not None
    with HostGit(repo.path) as git:
        seen = review(git, repo.path.resolve(), st.base_commit, st.head_commit, onto=git.ref_commit("HEAD"))
    return seen.flagged, {k: list(v) for k, v in seen.reasons.items()}, seen.would_overwrite, seen.journal_paths


def as_shown(st: SessionStatus) -> tuple[list[str], dict[str, list[str]], list[str], list[str]]:
    f = st.findings
    return f.flagged, {k: list(v) for k, v in f.reasons.items()}, f.would_overwrite, f.journal_paths


def test_a_second_look_runs_no_review_and_shows_the_same(repo: GitRepo, git_calls: list[tuple[str, ...]]) -> None:
    record_session(repo, "c1")
    branch_commit(repo, "c1", {".vscode/tasks.json": "{}\n", "src/app.py": "x = 1\n"})
    first = shown(repo, "c1")
    assert first.findings.flagged == [".vscode/tasks.json"] and first.commits_ahead == 2
    assert (repo.journal("c1") / ".review-cache.json").is_file()
    reviewing = len(git_calls)
    git_calls.clear()
    second = shown(repo, "c1")
    assert second == first
    # rev-parse (directories and HEAD), for-each-ref, and the repository's core.excludesFile (this user has
    # no global one): nothing of the review's dozen commands.
    assert [c[0] for c in git_calls] == ["rev-parse", "for-each-ref", "config"], git_calls
    assert reviewing > 6, "the first look did not review (positive control of the count)"


# Each change moves one input of the review; the status after it must be what a fresh review says.
CHANGES = {
    "the branch moves": lambda repo: branch_commit(repo, "c1", {".envrc": "export X=1\n"}),
    # To a commit before the run's base: a merge there also writes what the base changed (a CI file).
    # (--soft: neither the index nor the working tree changes, only HEAD).
    "the user's HEAD moves": lambda repo: repo.git("reset", "-q", "--soft", "main~1"),
    "an untracked file where the branch writes": lambda repo: (
        (repo.path / "src").mkdir() or (repo.path / "src" / "app.py").write_text("mine\n")
    ),
    "a parent directory becomes a file": lambda repo: (repo.path / "src").write_text("a file\n"),
    "a .gitignore ignores a changed path": lambda repo: (repo.path / ".gitignore").write_text("src/\n"),
    "a nested .gitignore ignores it": lambda repo: (
        (repo.path / "src").mkdir() or (repo.path / "src" / ".gitignore").write_text("app.py\n")
    ),
    "info/exclude ignores it": lambda repo: (repo.path / ".git" / "info" / "exclude").write_text("src/app.py\n"),
    "a pyvenv.cfg makes a virtualenv": lambda repo: (repo.path / "tools" / "pyvenv.cfg").write_text("home = /usr\n"),
    "the user's global excludes file ignores it": lambda repo: (
        (Path(os.environ["XDG_CONFIG_HOME"]) / "git").mkdir(parents=True, exist_ok=True),
        (Path(os.environ["XDG_CONFIG_HOME"]) / "git" / "ignore").write_text("*.py\n"),
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_what_status_shows_follows_every_input_of_the_review(repo: GitRepo, change: str) -> None:
    (repo.path / ".github").mkdir()
    (repo.path / ".github" / "ci.yml").write_text("on: push\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "ci")
    record_session(repo, "c1")
    branch_commit(repo, "c1", {"src/app.py": "x = 1\n", "tools/bin/run": "#!/bin/sh\n"})
    (repo.path / "tools").mkdir()  # an empty directory of the user's: only a pyvenv.cfg makes it a virtualenv
    before = shown(repo, "c1")
    assert as_shown(before) == fresh(repo, before)
    CHANGES[change](repo)
    after = shown(repo, "c1")
    assert as_shown(after) == fresh(repo, after)
    assert as_shown(after) != as_shown(before) or after.commits_ahead != before.commits_ahead, (
        f"'{change}' changed nothing the review shows: the test proves nothing"
    )


def test_a_changed_path_that_is_a_directory_here_is_never_cached(repo: GitRepo) -> None:
    """The review lists the untracked files below such a directory: no stat sums that up."""
    record_session(repo, "c1")
    branch_commit(repo, "c1", {"data": "a file in the branch\n"})
    (repo.path / "data").mkdir()
    first = shown(repo, "c1")
    assert first.findings.would_overwrite == []  # an empty directory is in nobody's way
    (repo.path / "data" / "mine.txt").write_text("untracked\n")
    assert shown(repo, "c1").findings.would_overwrite == ["data"]
    assert not (repo.journal("c1") / ".review-cache.json").exists()


def test_list_runs_git_once_per_repository(tmp_path: Path, git_calls: list[tuple[str, ...]]) -> None:
    repos = [make_repo(tmp_path / name) for name in ("r1", "r2")]
    for n, repo in enumerate(repos):
        for s in range(3):
            record_session(repo, f"s{n}{s}", state=RunState.STOPPED)
    cold = list_all()
    assert len(cold) == 6 and all(isinstance(item, SessionStatus) for item in cold)
    git_calls.clear()
    assert list_all() == cold
    assert sorted(c[0] for c in git_calls) == ["config", "config", "for-each-ref", "for-each-ref", "rev-parse",
                                               "rev-parse"], git_calls  # fmt: skip
    git_calls.clear()
    assert list_statuses(repos[0].path) == [item for item in cold if item.repo == str(repos[0].path.resolve())]
    assert sorted(c[0] for c in git_calls) == ["config", "for-each-ref", "rev-parse"], git_calls


def test_a_discarded_or_missing_branch_and_an_unborn_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    record_session(repo, "gone")
    repo.git("update-ref", "refs/harness-discarded/gone/20260101T000000.000000Z", "harness/gone")
    repo.git("update-ref", "refs/harness-discarded/gone/20260202T000000.000000Z", "harness/gone")
    repo.git("update-ref", "-d", "refs/heads/harness/gone")
    st = shown(repo, "gone")
    assert (st.head_commit, st.commits_ahead) == (None, None)
    assert st.discarded_ref == "refs/harness-discarded/gone/20260202T000000.000000Z"
    record_session(repo, "unborn")
    repo.git("checkout", "-q", "--orphan", "fresh")
    repo.git("rm", "-rq", "--cached", ".")
    st = shown(repo, "unborn")
    assert st.head_commit is not None and st.commits_ahead == 1
    assert as_shown(st) == fresh(repo, st)


def test_staging_the_file_in_the_way_clears_it(repo: GitRepo) -> None:
    """Only the index changes (the file itself is untouched): git then tracks it, and a merge may replace it."""
    record_session(repo, "c1")
    branch_commit(repo, "c1", {"src/app.py": "x = 1\n"})
    (repo.path / "src").mkdir()
    (repo.path / "src" / "app.py").write_text("mine\n")
    assert shown(repo, "c1").findings.would_overwrite == ["src/app.py"]
    repo.git("add", "src/app.py")
    st = shown(repo, "c1")
    assert st.findings.would_overwrite == [] and as_shown(st) == fresh(repo, st)


def test_the_excludes_file_of_the_repositorys_config_is_an_input(repo: GitRepo, tmp_path: Path) -> None:
    """With no global excludes file, check-ignore reads the one core.excludesFile in .git/config names."""
    record_session(repo, "c1")
    branch_commit(repo, "c1", {"src/app.py": "x = 1\n"})
    excludes = tmp_path / "excludes"
    excludes.write_text("# nothing yet\n")
    repo.git("config", "core.excludesFile", str(excludes))
    assert shown(repo, "c1").findings.flagged == []
    excludes.write_text("*.py\n")  # the file changes, the config does not
    st = shown(repo, "c1")
    assert st.findings.flagged == ["src/app.py"] and as_shown(st) == fresh(repo, st)
