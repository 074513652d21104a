"""`run`'s defaults from the environment and the settings files, through the real CLI (`--dry-run --json`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.base.errors import ExitCode
from runner.record.settings import RunOptions
from tests.helpers import GitRepo, harness, run_args

pytestmark = pytest.mark.docker

RUN = run_args("configured", "--dry-run", objective="write tests")


def _user_config(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "harness" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_plan_shows_each_value_and_where_it_came_from(repo: GitRepo) -> None:
    user = _user_config('agent = "demo"\nmax_cost = 4.5\nmemory = "3g"\npids = 300\niteration_timeout = "20m"\n')
    (repo.path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.harness]\nmax_iterations = 7\nmemory = "1g"\npids = 200\n'
    )
    r = harness(*RUN, "--pids", "100", cwd=repo.path, env={"HARNESS_MEMORY": "512m", "HARNESS_CHECK": "true"})
    assert r.code == 0, r.stderr
    plan = r.json()
    assert set(plan["options"]) == set(RunOptions.model_fields)  # every option of `run` that has a default
    pyproject = f"file:{repo.path / 'pyproject.toml'}"
    assert plan["sources"] == {
        **dict.fromkeys(plan["options"], "default"),
        "pids": "cli",
        "memory": "env:HARNESS_MEMORY",
        "check": "env:HARNESS_CHECK",
        "max_iterations": pyproject,
        "agent": f"user:{user}",
        "max_cost": f"user:{user}",
        "iteration_timeout": f"user:{user}",
    }
    assert plan["options"]["pids"] == 100 and plan["options"]["memory"] == "512m"
    assert plan["limits"]["pids"] == 100 and plan["limits"]["memoryBytes"] == 512 * 1024**2
    assert plan["limits"]["maxIterations"] == 7 and plan["limits"]["iterationTimeoutSeconds"] == 1200
    assert plan["limits"]["maxCostUsd"] == 4.5 and plan["gateway"]["maxCostUsd"] == 4.5
    assert plan["check"] == "true" and plan["agent"]["name"] == "demo"
    assert plan["limits"]["cpus"] == 1.0 and plan["runtime"] == "runc" and plan["network"] == "none"


def test_the_repository_file_is_read_from_the_top_when_run_in_a_subdirectory(repo: GitRepo) -> None:
    (repo.path / "harness.toml").write_text("stuck_after = 5\n")
    (repo.path / "src").mkdir()
    r = harness(*RUN, cwd=repo.path / "src")
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["limits"]["stuckAfter"] == 5 and plan["sources"]["stuck_after"] == f"file:{repo.path / 'harness.toml'}"


def _one_line_usage_error(r, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == ExitCode.USAGE, (r.code, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and fragment in lines[0], r.stderr


def test_an_unknown_key_in_the_user_file(repo: GitRepo) -> None:
    user = _user_config('memroy = "1g"\n')
    _one_line_usage_error(harness(*RUN, cwd=repo.path), f"{user}: unknown key 'memroy'")


def test_a_bad_value_in_the_repository_file(repo: GitRepo) -> None:
    (repo.path / "pyproject.toml").write_text('[tool.harness]\niteration_timeout = "soon"\n')
    r = harness(*RUN, cwd=repo.path)
    _one_line_usage_error(r, f"{repo.path / 'pyproject.toml'}: key 'iteration_timeout': 'soon' is not a positive")


def test_a_repository_may_not_pass_secrets_in(repo: GitRepo) -> None:
    (repo.path / "harness.toml").write_text('env = ["GH_TOKEN"]\n')
    r = harness(*RUN, cwd=repo.path, env={"GH_TOKEN": "a-token-long-enough-to-redact"})
    _one_line_usage_error(r, "key 'env' may not be set by a repository")


def test_a_bad_value_in_the_environment(repo: GitRepo) -> None:
    r = harness(*RUN, cwd=repo.path, env={"HARNESS_MAX_ITERATIONS": "lots"})
    _one_line_usage_error(r, "HARNESS_MAX_ITERATIONS: ")
