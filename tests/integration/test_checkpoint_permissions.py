"""The checkpoint opens up only what the agent closed, and leaves every other file's inode alone
(git's read-only objects too: a chmod per object made a 10,000-file change cost seconds).

A `chmod -R` of the whole copy changed every file's ctime, which made `git add -A` hash the whole
working tree again at every iteration (measured by bench/harvest_large.py and
bench/iteration_overhead.py, see docs/performance.md)."""

from __future__ import annotations

import os

import pytest

from runner.base.paths import run_dir
from tests.helpers import GitRepo, harness, run_args

pytestmark = pytest.mark.docker

STATUS = 'printf \'{"state":"working"}\' > "$HARNESS_STATUS_FILE"'


def test_closed_files_and_directories_are_committed(repo: GitRepo) -> None:
    agent = (
        "mkdir -p closed/inner && echo deep > closed/inner/f.txt && echo locked > locked.txt"
        " && chmod 000 locked.txt closed/inner/f.txt && chmod 000 closed/inner && chmod 000 closed && " + STATUS
    )
    result = harness(*run_args("perms", cmd=agent, iterations=1), cwd=repo.path)
    assert result.code == 21, result.stderr
    assert repo.git("show", "harness/perms:closed/inner/f.txt") == "deep"
    assert repo.git("show", "harness/perms:locked.txt") == "locked"


def test_checkpoint_leaves_untouched_files_alone(repo: GitRepo) -> None:
    agent = '[ -e keep.txt ] || echo keep > keep.txt; echo "$HARNESS_ITERATION" > turn.txt; ' + STATUS
    first = harness(*run_args("ctime", cmd=agent, iterations=1), cwd=repo.path)
    assert first.code == 21, first.stderr
    keep = run_dir(repo.path, "ctime") / "workspace" / "keep.txt"
    turn = keep.with_name("turn.txt")
    commit = repo.git("rev-parse", "harness/ctime")  # the first checkpoint's commit, never written again
    loose = keep.parent / ".git" / "objects" / commit[:2] / commit[2:]  # loose, read-only (0444)
    before, turn_before = os.stat(keep).st_ctime_ns, os.stat(turn).st_ctime_ns
    object_before = os.stat(loose)
    second = harness("resume", "--session", "ctime", "--max-iterations", "1", "--json", cwd=repo.path)
    assert second.code == 21, second.stderr
    assert repo.git("show", "harness/ctime:turn.txt") == "2"
    assert os.stat(turn).st_ctime_ns != turn_before  # positive control: the agent's write shows
    assert os.stat(keep).st_ctime_ns == before
    object_after = os.stat(loose)  # git's read-only objects are not opened up one chmod at a time
    assert object_after.st_ctime_ns == object_before.st_ctime_ns and not object_after.st_mode & 0o200
