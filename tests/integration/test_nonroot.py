"""The usual user: an ordinary account in the docker group, not root, which cannot chown the copy."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import site
import subprocess
import tempfile
from pathlib import Path

import pytest

import runner
from tests.conftest import TEST_RUN_LABEL
from tests.helpers import run_args

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating the test user needs root (CI runs as root)"),
]

USER = "harness-it"


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker", USER], check=True)
        return pwd.getpwnam(USER)


def _as_user(
    user: pwd.struct_passwd, args: list[str], *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    clean = [
        "env",
        "-i",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        f"HOME={user.pw_dir}",
        *[f"{k}={v}" for k, v in env.items()],
    ]
    return subprocess.run(
        ["runuser", "-u", USER, "--", *clean, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_demo_run_as_a_non_root_user_in_the_docker_group() -> None:
    user = _ensure_user()
    assert user.pw_uid not in (0, 10001)
    assert "docker" in subprocess.run(["id", "-nG", USER], capture_output=True, text=True, check=True).stdout.split()
    base = Path(tempfile.mkdtemp(prefix="harness-nonroot-", dir="/tmp"))
    try:
        # Install the harness where the user can read it, as `pip install --user` would have.
        lib = base / "lib"
        shutil.copytree(site.getsitepackages()[0], lib, symlinks=False, ignore=shutil.ignore_patterns(
            "__pycache__", "mypy*", "ruff*", "pip", "pip-*", "_pytest", "pytest*", "*.pth", "__editable__*", "runner*",
            "solo_harness*"))  # fmt: skip
        source = Path(runner.__file__).resolve().parent
        shutil.copytree(source, lib / "runner", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(source.parent / "images", lib / "images")
        repo = base / "repo"
        repo.mkdir()
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(base)], check=True)
        env = {
            "HARNESS_HOME": str(base / "harness-home"),
            "PYTHONPATH": str(lib),
            "HARNESS_CONTAINER_LABELS": f"io.solo-harness.test={TEST_RUN_LABEL}",
        }

        ident = ["-c", "user.name=U", "-c", "user.email=u@example.invalid"]
        for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "start"]):
            assert _as_user(user, ["git", *ident, *args], cwd=repo, env={}).returncode == 0

        py = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
        r = _as_user(user, [py, "-m", "runner",
                            *run_args("demo", "--worktree", agent="demo", objective="demo", iterations=3)], cwd=repo,
                     env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["status"] == "completed" and st["iterationCount"] == 2 and st["commitsAhead"] == 2

        journal = repo / "memory/context-db/sessions/demo/artifacts/solo-harness"
        assert {p.stat().st_uid for p in journal.iterdir()} == {user.pw_uid}  # the host side ran as the user
        copy = Path(st["workspace"])
        assert copy.stat().st_uid == 10001  # made by a helper container as the agent uid
        log = _as_user(user, ["git", "log", "--format=%s", "main..harness/demo"], cwd=repo, env={})
        assert log.stdout.splitlines() == ["demo: step 2", "demo: step 1"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
