"""open_session: how every command that names one session (--repo, --session) finds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.base.errors import NotARepositoryError, UsageError
from runner.base.paths import journal_dir
from runner.usecases.repository import open_session
from tests.helpers import make_repo


def test_a_session_is_found_from_any_directory_of_its_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo.path / "src").mkdir()
    with open_session(repo.path / "src", "s1") as opened:
        assert opened.top == repo.path.resolve()
        assert opened.journal.dir == journal_dir(repo.path.resolve(), "s1")
        assert opened.git.ref_commit("HEAD") == repo.git("rev-parse", "HEAD").strip()


def test_the_repository_is_found_first_then_the_sessions_id_is_checked(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARepositoryError), open_session(tmp_path / "plain", "../bad"):
        pass
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(UsageError, match="invalid session name"), open_session(repo.path, "../bad"):
        pass
