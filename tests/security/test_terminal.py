"""Escape sequences in agent output: neutralised before `logs`, `status`, `hud` or `diff` show them."""

from __future__ import annotations

import pytest

from tests.helpers import GitRepo, harness
from tests.security.conftest import run_agent

pytestmark = pytest.mark.docker

# Set the terminal title, clear the screen, write to the clipboard (OSC 52), and a C1 CSI.
AGENT = r"""
printf 'title \033]0;pwned\007 clear \033[2J\033[H clip \033]52;c;ZWNobyBoaQ==\007 csi \302\233 31m\n'
mkdir -p "$(printf 'evil\033[31mdir')"; printf 'x' > "$(printf 'evil\033[31mdir')/f"
printf '{"state": "done", "summary": "sum \\u001b]0;pwned\\u0007 mary"}' > "$HARNESS_STATUS_FILE"
"""


@pytest.mark.attack(row=8, name="escape sequences in output, summary and file names")
def test_terminal_views_never_pass_escape_sequences(repo: GitRepo, runtime: str) -> None:
    r = run_agent(repo, "esc", AGENT, runtime)
    assert r.code == 0, r.stderr
    raw_log = (repo.journal("esc") / "iteration-0001.log").read_bytes()
    assert b"\x1b]0;pwned\x07" in raw_log  # positive control: the journal keeps the bytes as written
    views = {
        "logs": harness("logs", "--session", "esc", cwd=repo.path),
        "status": harness("status", "--session", "esc", cwd=repo.path),
        "hud": harness("hud", "--session", "esc", "--once", cwd=repo.path),
        "diff": harness("diff", "--session", "esc", cwd=repo.path),
        "list": harness("status", cwd=repo.path),
    }
    for name, shown in views.items():
        assert shown.code == 0, (name, shown.stderr)
        assert "\x1b" not in shown.stdout + shown.stderr and "\x07" not in shown.stdout, name
        assert "\x9b" not in shown.stdout, name
    assert "pwned" in views["logs"].stdout and "evil" in views["diff"].stdout  # shown, but inert
    assert "sum" in views["status"].stdout and "pwned" in views["status"].stdout
