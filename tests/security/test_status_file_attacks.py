"""Attack row 3: turn the status file against the host that reads it (symlink, FIFO, huge file).

The host reads $HARNESS_STATUS_FILE from the outbox after the agent's container has ended
(runner/loop/supervisor.py `read_report`, runner/base/saferead.py). Whatever the agent leaves there, the
host must neither follow it, block on it nor load it: the iteration is recorded as `no-report` with a
`reportError` saying why, promptly. The positive control is a valid report in the same setup.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import GitRepo, Result, containers
from tests.security.conftest import iteration, journal_text, run_agent

pytestmark = pytest.mark.docker

# Far above what any of these runs needs (a few seconds), far below "the host blocked on the FIFO forever".
WALL_BOUND = 90.0
REPORT_DONE = """printf '{"state": "done", "summary": "control report"}' > "$HARNESS_STATUS_FILE" """


def _session(kind: str, runtime: str) -> str:
    return f"sf-{kind}-{runtime}-{uuid.uuid4().hex[:6]}"


def _run(repo: GitRepo, session: str, script: str, runtime: str) -> tuple[Result, float]:
    started = time.monotonic()
    r = run_agent(repo, session, script, runtime, "--iteration-timeout", "60s", timeout=WALL_BOUND + 30)
    return r, time.monotonic() - started


def _assert_rejected(repo: GitRepo, session: str, r: Result, elapsed: float, failure: str, reason: str) -> None:
    assert elapsed < WALL_BOUND, f"the run took {elapsed:.0f}s: the host blocked on the status file"
    assert r.code == 21, r.stderr  # stopped at --max-iterations 1: needs attention, not completed
    status = r.json()
    assert status["status"] == "stopped" and status["stopReason"] == "max-iterations", status
    record = iteration(repo, session)
    assert record["exitCode"] == 0, record  # the agent exited cleanly: only the report is at fault
    assert record["outcome"] == "no-report", record
    assert record["failureClass"] == failure, record
    assert record["summary"] == "" and record["nextAction"] == "", record
    assert isinstance(record["reportError"], str) and reason in record["reportError"], record
    assert containers(f"io.solo-harness.session={session}") == []
    # The checkpoint helper empties the outbox: nothing the agent left there stays on the host disk.
    outbox = Path(status["workspace"]).parent / "outbox"
    assert not (outbox / "status.json").exists() and not (outbox / "status.json").is_symlink()


@pytest.mark.attack(row=3, name="status file is a symlink to a host secret")
@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_status_file_symlink_to_a_host_file_is_not_followed(
    repo: GitRepo, runtime: str, tmp_path: Path, form: str
) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    secret = tmp_path / "host-secret.json"
    # If the host followed the link it would read a perfectly valid report carrying the canary.
    secret.write_text(json.dumps({"state": "done", "summary": canary, "next": canary}))
    before = secret.read_bytes()
    # The relative form climbs out of the outbox with more `..` than any path is deep.
    target = str(secret) if form == "absolute" else "../" * 40 + str(secret).lstrip("/")
    session = _session("link", runtime)
    script = f'ln -sfn "{target}" "$HARNESS_STATUS_FILE" && echo "LINK-MADE $(readlink "$HARNESS_STATUS_FILE")"'
    r, elapsed = _run(repo, session, script, runtime)

    assert f"LINK-MADE {target}" in (repo.journal(session) / "iteration-0001.log").read_text()
    _assert_rejected(repo, session, r, elapsed, "invalid-report", "cannot be opened safely")
    assert canary not in journal_text(repo, session)
    assert canary not in r.stdout and canary not in r.stderr
    assert secret.read_bytes() == before  # and the host file is untouched (the helper deleted only the link)


@pytest.mark.attack(row=3, name="status file is a FIFO")
def test_status_file_fifo_does_not_block_the_host(repo: GitRepo, runtime: str) -> None:
    session = _session("fifo", runtime)
    script = 'mkfifo "$HARNESS_STATUS_FILE" && test -p "$HARNESS_STATUS_FILE" && echo FIFO-MADE'
    r, elapsed = _run(repo, session, script, runtime)

    assert "FIFO-MADE" in (repo.journal(session) / "iteration-0001.log").read_text()
    if runtime == "runsc":
        # gVisor keeps a FIFO made on a bind mount inside the sandbox: the host sees no file at all.
        _assert_rejected(repo, session, r, elapsed, "missing-report", "does not exist")
    else:
        _assert_rejected(repo, session, r, elapsed, "invalid-report", "not a regular file")


@pytest.mark.attack(row=3, name="status file is 1 GB")
def test_status_file_of_one_gigabyte_is_not_read(repo: GitRepo, runtime: str) -> None:
    session = _session("big", runtime)
    # A valid report at the start, then sparse zeros up to 1 GiB: only a reader that ignores the cap accepts it.
    script = REPORT_DONE + '&& truncate -s 1G "$HARNESS_STATUS_FILE" && echo BIG-MADE'
    r, elapsed = _run(repo, session, script, runtime)

    assert "BIG-MADE" in (repo.journal(session) / "iteration-0001.log").read_text()
    _assert_rejected(repo, session, r, elapsed, "invalid-report", "larger than 65536 bytes (1073741824)")


def test_a_valid_status_file_is_accepted(repo: GitRepo, runtime: str) -> None:
    session = _session("ok", runtime)
    r, elapsed = _run(repo, session, REPORT_DONE, runtime)

    assert elapsed < WALL_BOUND
    assert r.code == 0, r.stderr
    assert r.json()["status"] == "completed" and r.json()["stopReason"] == "agent-done"
    record = iteration(repo, session)
    assert record["outcome"] == "done" and record["failureClass"] is None and record["reportError"] is None
    assert record["summary"] == "control report"
    assert containers(f"io.solo-harness.session={session}") == []
