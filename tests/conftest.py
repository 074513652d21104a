"""Shared fixtures: every test's harness state lives in a temp dir; Docker tests are marked.

Under CI (CI=true) a missing Docker engine fails the Docker tests instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import GitRepo, make_repo

TEST_RUN_LABEL = f"harness-test-{uuid.uuid4().hex[:8]}"


def _engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("docker") for item in items):
        return
    if _engine_available():
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        return  # the tests run and fail loudly: CI must have an engine
    skip = pytest.mark.skip(reason="no Docker engine (run 'make docker'); CI=true turns this into a failure")
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def harness_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point all harness state at a temp dir, and label every container this test creates."""
    home = tmp_path_factory.mktemp("harness-home")
    monkeypatch.setenv("HARNESS_HOME", str(home))
    monkeypatch.setenv("HARNESS_CONTAINER_LABELS", f"io.solo-harness.test={TEST_RUN_LABEL}")
    monkeypatch.delenv("HARNESS_JOURNAL_ROOT", raising=False)
    # `run`'s defaults come from the environment and the user's config file: neither is the developer's here.
    from runner.settings import RunOptions, env_var

    for name in RunOptions.model_fields:
        monkeypatch.delenv(env_var(name), raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    return home


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session", autouse=True)
def _reap_test_containers() -> Iterator[None]:
    yield
    try:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=io.solo-harness.test={TEST_RUN_LABEL}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
    except FileNotFoundError:
        return  # no docker CLI on this machine: no container can have been made
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
