"""Sessions whose copies come from a repository's shared seed (as a race's racers do), started in this process on
the real engine: one at a time or several at once; and the digest that shows whether a tree was written."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from runner.backends.docker.engine import DockerBackend
from runner.record.models import RunSummary
from runner.usecases.plan import RunRequest
from runner.usecases.sessions import start_run
from tests.helpers import GitRepo


def start_seeded(
    repo: GitRepo, session: str, script: str, *, runtime: str | None = None, seed: bool = True
) -> RunSummary:  # fmt: skip
    """One iteration of `script` as the agent, the copy made from the seed (`seed`) or a full clone."""
    request = RunRequest(session=session, objective="seeded", repo=repo.path, agent_cmd=script, max_iterations=1,
                         seed=seed, **({"runtime": runtime} if runtime else {}))  # fmt: skip
    return start_run(DockerBackend(), request)


def race_at_once(repo: GitRepo, sessions: list[str], script: str) -> dict[str, RunSummary | BaseException]:
    """`sessions` started together, each in a thread, as a race's racers start: what each ended with."""
    results: dict[str, RunSummary | BaseException] = {}

    def one(session: str) -> None:
        try:
            results[session] = start_seeded(repo, session, script)
        except BaseException as exc:  # the test asserts on it
            results[session] = exc

    threads = [threading.Thread(target=one, args=(session,)) for session in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == set(sessions), "a racer did not finish"
    return results


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root`: its mode and its content's digest (a link's target, a directory's nothing)."""
    found: dict[str, tuple[int, str]] = {}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(top) / name
            st = path.lstat()
            if path.is_symlink():
                content = os.readlink(path)
            elif path.is_file():
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            found[str(path.relative_to(root))] = (st.st_mode, content)
    return found
