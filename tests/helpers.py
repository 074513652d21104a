"""Test helpers: real git repositories and the real `harness` command in a subprocess."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

GIT_ID = ["-c", "user.name=Test User", "-c", "user.email=test@example.invalid"]


@dataclass
class GitRepo:
    path: Path

    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", *GIT_ID, "-C", str(self.path), *args], capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {args} failed: {proc.stderr}")
        return proc.stdout.strip()

    def journal(self, session: str) -> Path:
        return self.path / "memory/context-db/sessions" / session / "artifacts/solo-harness"


def make_repo(path: Path) -> GitRepo:
    path.mkdir(parents=True)
    repo = GitRepo(path)
    repo.git("init", "-q", "-b", "main")
    (path / "app.py").write_text("print('hello')\n")
    (path / "README.md").write_text("# project\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "initial")
    return repo


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


HARNESS = [sys.executable, "-m", "runner"]  # the real CLI, as a subprocess's argv starts


def run_args(
    session: str,
    *extra: str,
    cmd: str | None = None,
    agent: str | None = None,
    objective: str | None = "x",
    iterations: int | None = None,
    as_json: bool = True,
) -> list[str]:
    """The arguments of `harness run`, for `harness(*run_args(...))` or `[*HARNESS, *run_args(...)]`:
    `--objective` (none when `objective` is None: `extra` has `--objective-file`), `--session`, the agent
    (`--agent-cmd CMD` or the built-in `--agent NAME`), `--max-iterations` when given (else the run's own
    default), `extra` as written, then `--json` unless `as_json` is false."""
    args = ["run", *(["--objective", objective] if objective is not None else []), "--session", session]
    if cmd is not None:
        args += ["--agent-cmd", cmd]
    if agent is not None:
        args += ["--agent", agent]
    if iterations is not None:
        args += ["--max-iterations", str(iterations)]
    args += extra
    return [*args, "--json"] if as_json else args


def harness(*args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None) -> Result:
    """Run the real CLI (`python -m runner`) as a subprocess."""
    proc = subprocess.run(
        [*HARNESS, *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


# An agent under test holds its iteration with HOLD until the test has looked, and the test says so with
# release(): a file in /harness, the prompt's directory (the host's to write), polled with a deadline. A fixed
# sleep instead is slow, or, on a busy machine, over before the test looks.
HOLD = "i=0; while [ ! -e /harness/release ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done"


def release(repo: GitRepo, session: str) -> None:
    """Let the session's held agents go on: this iteration's and every later one's."""
    summary = repo.journal(session) / "run-summary.json"
    wait_for(summary.is_file, 60, "the session's journal")
    (Path(json.loads(summary.read_text())["runDir"]) / "prompt" / "release").write_text("")


def containers(label: str) -> list[str]:
    """This test run's containers (its label: tests/conftest.py) that carry `label` (`k=v`). Never another
    pytest's on the same engine: a second run of the same tests (another engineer's, CI's) makes containers of
    the same sessions, and a test that asserted none left would see them."""
    from tests.conftest import TEST_RUN_LABEL  # the conftest imports this module

    filters = ["--filter", f"label=io.solo-harness.test={TEST_RUN_LABEL}", "--filter", f"label={label}"]
    return subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True).stdout.split()


def remove_session_containers(session: str) -> None:
    """Remove this test run's containers of `session` (what a killed supervisor left behind)."""
    from tests.conftest import TEST_RUN_LABEL  # the conftest imports this module

    filters = ["--filter", f"label=io.solo-harness.test={TEST_RUN_LABEL}", "--filter",
               f"label=io.solo-harness.session={session}"]  # fmt: skip
    ids = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def exited(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper has exited too: PID 1 here may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
    """Poll `predicate` until it is true, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def one_worker_at_a_time(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A lock shared by the xdist workers of this run (a file in their common temp root): the first to take it
    builds, say, an image; the others wait, then find it present instead of building it again at once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's basetemp is a child of the run's
    with (root / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
