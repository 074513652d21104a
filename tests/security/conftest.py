"""The attack suite's shared parts: a malicious agent run, the runtime matrix, and the results table.

Each attack test carries `@pytest.mark.attack(row=N, name="...")`. With HARNESS_SECURITY_REPORT=path set
(`make security` sets it), the outcome of every attack under every runtime is written there as JSON, and
`scripts/security_table.py` turns it into the table of docs/security.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import GitRepo, Result, harness, run_args

RESULTS: list[dict[str, object]] = []


def _runsc_registered() -> bool:
    proc = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return proc.returncode == 0 and "runsc" in proc.stdout


@pytest.fixture(params=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest) -> str:
    """Every attack that applies to both runtimes runs under both."""
    if request.param == "runsc" and not _runsc_registered():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("runsc is not registered with the Docker engine (scripts/ensure-docker.sh does it)")
        pytest.skip("runsc is not registered with the Docker engine")
    return str(request.param)


def run_agent(repo: GitRepo, session: str, script: str, runtime: str = "runc", *extra: str,
              timeout: float = 240) -> Result:  # fmt: skip
    """`harness run --agent-cmd SCRIPT` on `repo`, one iteration unless `extra` says otherwise."""
    args = run_args(session, "--runtime", runtime, cmd=script, objective="attack", as_json=False)
    if "--max-iterations" not in extra:
        args += ["--max-iterations", "1"]
    return harness(*args, *extra, "--json", cwd=repo.path, timeout=timeout)


def iteration(repo: GitRepo, session: str, n: int = 1) -> dict[str, object]:
    data: dict[str, object] = json.loads((repo.journal(session) / f"iteration-{n:04d}.json").read_text())
    return data


def journal_text(repo: GitRepo, session: str) -> str:
    """Every byte of the session's journal, for 'never appears anywhere' assertions."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(repo.journal(session).iterdir()) if p.is_file())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    marker = next((m for m in getattr(report, "attack_markers", [])), None)
    if marker is None:
        return
    RESULTS.append({**marker, "outcome": report.outcome, "test": report.nodeid})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    mark = item.get_closest_marker("attack")
    if mark is not None:
        params = getattr(item, "callspec", None)
        runtime = params.params.get("runtime", "runc") if params else "runc"
        report.attack_markers = [{"row": mark.kwargs["row"], "name": mark.kwargs["name"], "runtime": runtime}]


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("HARNESS_SECURITY_REPORT")
    if target and RESULTS:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(RESULTS, indent=2))
