"""`harness service install|status|uninstall` (runner/usecases/service.py), into a temp unit directory: the
tests' XDG_CONFIG_HOME (conftest), never the real user's. The unit is checked by this machine's real
`systemd-analyze verify --user`; enabling it runs the real `systemctl --user enable`, which here works offline
(PID 1 is not systemd: it only makes the wants link) and, where systemd is PID 1, would talk to the user's own
manager: that test is skipped there. A running user manager starting the unit is not tested here."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.base.errors import UsageError
from runner.usecases.service import (
    UNIT,
    _unquote,
    install,
    launchd_plist,
    manager,
    service_command,
    service_status,
    systemd_unit,
    uninstall,
    unit_path,
)
from tests.helpers import harness

SYSTEMD_IS_PID_1 = Path("/run/systemd/system").is_dir()


@pytest.fixture
def no_user_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No user manager to reach: a runtime directory of the test's own, no session bus address.

    The directory is short on purpose: systemd reads the machine's own user units too, and a socket path
    in them longer than a Unix socket address (108 bytes) is a warning that would fail `verify` on a deep
    pytest temp dir (CI's is).
    """
    runtime = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    runtime.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    yield runtime
    shutil.rmtree(runtime, ignore_errors=True)


def failing_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "bin"
    where.mkdir()
    program = where / "systemctl"
    program.write_text('#!/bin/sh\necho "Failed to connect to bus: No medium found" >&2\nexit 1\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{where}:{os.environ['PATH']}")


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of this machine's systemd"
    return subprocess.run([analyze, "verify", "--user", str(unit)], capture_output=True, text=True, check=False)


def test_install_writes_a_unit_systemd_accepts_and_uninstall_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_user_bus: Path, harness_home: Path
) -> None:
    failing_systemctl(tmp_path, monkeypatch)  # no user manager: the unit is written, not enabled
    assert not service_status().installed
    info = install()
    unit = unit_path()
    assert info.installed and info.path == str(unit) and unit.is_file()
    assert str(unit).startswith(os.environ["XDG_CONFIG_HOME"])  # the temp dir, not this machine's ~/.config
    assert info.enabled is False and info.current is True and info.command == service_command()
    assert "Failed to connect to bus" in info.note and f"systemctl --user enable {UNIT}" in info.note
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m runner service run-once\n" in text
    assert "Type=oneshot\n" in text and "KillMode=process\n" in text and "WantedBy=default.target\n" in text
    assert f"Environment=HARNESS_HOME={harness_home}\n" in text
    checked = verify(unit)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")  # no error, not even a warning

    st = harness("service", "status", "--json", cwd=tmp_path)
    assert st.code == 0 and st.json()["installed"] is True and st.json()["enabled"] is False
    gone = uninstall()
    assert not gone.installed and not unit.exists()
    st = harness("service", "status", cwd=tmp_path)
    assert st.code == 0 and st.stdout.startswith("systemd not installed: ")


@pytest.mark.skipif(SYSTEMD_IS_PID_1, reason="systemctl --user would reach this user's own manager")
def test_install_enables_the_unit_with_the_real_systemctl(tmp_path: Path, no_user_bus: Path) -> None:
    r = harness("service", "install", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.json()["enabled"] is True
    link = unit_path().parent / "default.target.wants" / UNIT
    assert link.is_symlink() and link.resolve() == unit_path().resolve()  # what the manager reads at start
    assert "loginctl enable-linger" in r.json()["note"]
    out = harness("service", "uninstall", "--json", cwd=tmp_path)
    assert out.code == 0 and out.json()["installed"] is False and out.json()["enabled"] is None
    assert not link.exists() and not link.is_symlink() and not unit_path().exists()


def test_odd_characters_are_escaped_so_systemd_reads_the_same_command(tmp_path: Path, no_user_bus: Path) -> None:
    odd = tmp_path / "my harness %h $HOME"
    odd.mkdir()
    python = odd / "python"
    python.symlink_to(sys.executable)
    command = [str(python), "-m", "runner", "service", "run-once"]
    unit = tmp_path / UNIT
    unit.write_text(systemd_unit(command, {"HARNESS_HOME": "/a b/%t"}, tmp_path / "my env"))
    exec_line = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert _unquote(exec_line.removeprefix("ExecStart=")) == command
    checked = verify(unit)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    with pytest.raises(UsageError, match="control character"):
        systemd_unit(command, {"HARNESS_HOME": "a\nExecStartPre=/bin/evil"}, tmp_path / "env")


def test_the_launchd_agent_runs_this_harness_at_login(tmp_path: Path) -> None:
    data = plistlib.loads(launchd_plist(service_command(), {"HARNESS_HOME": "/h"}, tmp_path / "service.log"))
    assert data["ProgramArguments"] == service_command() and data["RunAtLoad"] is True
    assert data["AbandonProcessGroup"] is True  # the detached supervisors outlive the agent's run
    assert data["EnvironmentVariables"] == {"HARNESS_HOME": "/h"}
    assert manager("darwin") == "launchd" and manager("linux") == "systemd"
    with pytest.raises(UsageError, match="no user service manager"):
        manager("freebsd14")
