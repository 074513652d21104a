from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner.__main__ import fast_command
from runner.record.models import RunState
from tests.helpers import GitRepo
from tests.unit.test_readers import record_session


def test_status_and_the_cli_do_not_import_the_docker_sdk() -> None:
    code = (
        "import sys, runner.cli.app, runner.cli.render;"
        "import runner.usecases.status, runner.usecases.gc, runner.usecases.logs, runner.usecases.hud;"
        "print(sorted(m for m in ('docker', 'requests', 'urllib3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# `python -m runner status|list ... --json` skips typer (runner/__main__.py); the typer app is the
# reference. Both must print the same bytes, on stdout and stderr, and exit with the same code.
TYPER = "import sys; from runner.cli.app import main; sys.argv[0] = 'harness'; main()"
IMPORTED = (
    "import atexit, sys; atexit.register(lambda: sys.__stderr__.write("
    "'IMPORTED ' + ','.join(m for m in ('typer', 'click', 'rich') if m in sys.modules)));"
    "sys.argv[0] = 'harness'; import runner.__main__ as m; m.main()"
)


def _both(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    fast = subprocess.run([sys.executable, "-m", "runner", *argv], cwd=cwd, capture_output=True, text=True,
                          check=False)  # fmt: skip
    slow = subprocess.run([sys.executable, "-c", TYPER, *argv], cwd=cwd, capture_output=True, text=True, check=False)
    return fast, slow


def test_the_fast_path_prints_what_the_typer_commands_print(repo: GitRepo, tmp_path: Path) -> None:
    record_session(repo, "f1")
    record_session(repo, "f2", state=RunState.STOPPED, iterations=1)
    (repo.path / "f1.txt").write_text("in the way\n")  # a merge would replace it: a verdict with a refusal
    broken = repo.journal("f2") / "run-summary.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cases = [
        ["status", "--session", "f1", "--json"],
        ["status", "--json", "--session", "f2"],
        ["status", "--json"],
        ["list", "--json"],
        ["status", "--session", "nope", "--json"],
        ["status", "--session", "../bad", "--json"],
        ["status", "--session", "f1", "--json", "--repo", str(repo.path)],
        ["status", "--json", "--repo", str(repo.path)],
    ]
    for argv in cases:
        assert fast_command(argv) is not None, argv
        fast, slow = _both(argv, elsewhere if "--repo" in argv else repo.path)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr), argv
    assert json.loads(_both(cases[0], repo.path)[0].stdout)["wouldOverwrite"] == ["f1.txt"]
    fast, slow = _both(["status", "--json", "--repo", str(elsewhere)], repo.path)  # not a repository
    assert fast.returncode == slow.returncode != 0 and fast.stderr == slow.stderr and "not a git" in fast.stderr
    broken.write_text("{ not json")  # one session unreadable: reported in the list, the others still shown
    for argv in (["status", "--json"], ["list", "--json"], ["status", "--session", "f2", "--json"]):
        fast, slow = _both(argv, repo.path)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr), argv
    assert "not valid JSON" in _both(["status", "--json"], repo.path)[0].stdout


def test_the_fast_path_loads_neither_typer_nor_rich(repo: GitRepo) -> None:
    record_session(repo, "f1")
    for argv in (["status", "--session", "f1", "--json"], ["list", "--json"]):
        proc = subprocess.run([sys.executable, "-c", IMPORTED, *argv], cwd=repo.path, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.endswith("IMPORTED "), proc.stderr
    # Positive control: the same probe sees typer when the command goes through it.
    proc = subprocess.run([sys.executable, "-c", IMPORTED, "status", "--session", "f1"], cwd=repo.path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert "typer" in proc.stderr.rsplit("IMPORTED ", 1)[1], proc.stderr


def test_only_the_exact_spellings_take_the_fast_path() -> None:
    taken = [["status", "--json"], ["list", "--json"], ["status", "--repo", "r", "--session", "s", "--json"]]
    for argv in taken:
        assert fast_command(argv) is not None, argv
    typer = [
        [], ["--help"], ["status"], ["list"], ["status", "--session", "s"], ["status", "--json", "--json"],
        ["status", "--session=s", "--json"], ["status", "--session", "--json"], ["status", "--session", "", "--json"],
        ["list", "--json", "--repo", "r"], ["status", "--json", "-h"], ["-v", "status", "--json"],
        ["status", "--json", "extra"], ["run", "--json"], ["status", "--session", "a", "--session", "b", "--json"],
    ]  # fmt: skip
    for argv in typer:
        assert fast_command(argv) is None, argv
