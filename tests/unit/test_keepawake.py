"""The sleep inhibitor's process handling (runner/base/keepawake.py), with real processes standing in for the
platform's inhibitor; the supervisor's use of it is tested on the real engine (tests/integration/test_keep_awake.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.base.keepawake import hold, inhibitor_argv


def put_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str) -> None:
    where = tmp_path / "bin"
    where.mkdir(exist_ok=True)
    program = where / name
    program.write_text(script)
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{where}:/usr/bin:/bin")


def test_each_platform_has_its_inhibitor_or_none() -> None:
    linux = inhibitor_argv("linux", who="harness", why="a night")
    assert linux == ["systemd-inhibit", "--what=sleep:idle", "--who=harness", "--why=a night", "--mode=block"]
    assert inhibitor_argv("darwin", who="harness", why="a night") == ["caffeinate", "-i", "-s"]
    assert inhibitor_argv("win32", who="harness", why="a night") is None
    held = hold(who="harness", why="a night", platform="freebsd14")
    assert held.inhibitor is None and held.via is None
    assert held.reason == "this system (freebsd14) offers no sleep inhibitor the harness knows"


def test_a_missing_inhibitor_is_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    held = hold(who="harness", why="a night", platform="darwin")
    assert held.inhibitor is None and held.reason == "caffeinate is not on PATH"


def test_caffeinate_holds_the_waiter_until_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put_on_path(tmp_path, monkeypatch, "caffeinate", '#!/bin/sh\nshift 2\nexec "$@"\n')  # drops -i -s, runs CMD
    held = hold(who="harness", why="a night", platform="darwin")
    assert held.inhibitor is not None and held.via == "caffeinate" and held.reason is None
    process = held.inhibitor.process
    assert process.poll() is None
    held.inhibitor.release()
    assert process.returncode == 0  # the waiter saw its pipe close and ended by itself


def test_an_inhibitor_that_never_answers_is_not_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    put_on_path(tmp_path, monkeypatch, "systemd-inhibit", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    held = hold(who="harness", why="a night", platform="linux", timeout=0.5)
    assert held.inhibitor is None and held.reason == "systemd-inhibit did not take its lock within 0.5s"
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()  # killed and reaped, not left behind
