"""CLI start-up: `harness status --json` on a 500-iteration journal and `harness list` with 50 sessions,
against `python -c pass`.

The sessions are real (`runner.usecases.sessions.create_session`: journal, summary, branch) and their iteration
records are written with the journal's own pydantic models; each session gets the owner.json that
`list` looks for. No container runs. Quick: 50 iterations and 5 sessions.

Goal (issue 10): each command / `python -c pass` <= 4x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench._common import (
    EXIT_NEEDS_ATTENTION,
    BenchError,
    Ratio,
    Result,
    bench_env,
    harness_argv,
    main,
    small_repo,
    timed,
)

NAME = "cli-startup"


def make_sessions(repo: Path, sessions: int, iterations: int) -> None:
    from runner.backends.docker.engine import DockerBackend
    from runner.base.paths import run_dir
    from runner.loop.workspace import RunDir
    from runner.record.journal import Journal
    from runner.record.models import IterationRecord, Outcome, RunOwner, RunState, StopReason
    from runner.usecases.plan import RunRequest
    from runner.usecases.sessions import create_session

    backend = DockerBackend()
    for s in range(sessions):
        name = f"bench-{s:02d}"
        summary = create_session(backend, RunRequest(session=name, objective="benchmark", repo=repo, agent_cmd="true",
                                                      max_iterations=max(iterations, 1)))  # fmt: skip
        journal = Journal.for_repo(repo, name)
        count = iterations if s == 0 else 3
        for n in range(1, count + 1):
            record = IterationRecord(
                session_id=name, iteration=n, outcome=Outcome.WORKING, summary=f"step {n} of the work",
                next_action="carry on", log_file=journal.log_path(n).name, limits=summary.limits,
                started_at=summary.created_at, duration_seconds=12.5,
            )  # fmt: skip
            journal.write_iteration(record)
            journal.log_path(n).write_text(f"iteration {n}\n")
        summary.iteration_count = summary.last_iteration = count
        summary.status, summary.stop_reason = RunState.STOPPED, StopReason.MAX_ITERATIONS
        journal.write_summary(summary)
        rd = RunDir(run_dir(repo, name))
        rd.root.mkdir(parents=True)
        (rd.owner).write_text(RunOwner(session_id=name, repo=str(repo), journal_dir=str(journal.dir)).dump_json())


def _check(argv: list[str], repo: Path, expect: int, env: dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=120, check=False, env=env)
    if proc.returncode not in {0, EXIT_NEEDS_ATTENTION}:  # status says "stopped" by its exit code
        raise BenchError(f"{' '.join(argv[2:5])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    data = json.loads(proc.stdout)
    found = len(data) if isinstance(data, list) else data.get("iterationCount")
    if found != expect:
        raise BenchError(f"{' '.join(argv[2:5])} reported {found}, not {expect}")


def _time_command(argv: list[str], cwd: Path, env: dict[str, str], before: Callable[[], None] | None) -> float:
    if before is not None:
        before()  # untimed
    return timed(lambda: subprocess.run(argv, cwd=cwd, capture_output=True, check=False, env=env))


def _forget_reviews(repo: Path) -> Callable[[], None]:
    """As after a harvest moved every branch: no session's .review-cache.json is current."""

    def forget() -> None:
        for path in repo.glob("memory/context-db/sessions/*/artifacts/solo-harness/.review-cache.json"):
            path.unlink()

    return forget


def _python_env(tmp: Path) -> dict[str, str]:
    """Bytecode cached as an installed package has it: this environment may set PYTHONDONTWRITEBYTECODE,
    which would make every run compile the harness's own modules again (the baseline compiles nothing)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def measure(quick: bool) -> Result:
    iterations, sessions, repeat = (50, 5, 5) if quick else (500, 50, 15)
    result = Result(NAME, "CLI start-up", quick)
    with bench_env("cli") as env:
        repo = small_repo(env.tmp / "repo")
        make_sessions(repo, sessions, iterations)
        penv = _python_env(env.tmp)
        status = harness_argv("status", "--session", "bench-00", "--json")
        listing = harness_argv("list", "--json")
        python = [sys.executable, "-c", "pass"]
        _check(status, repo, iterations, penv)  # also fills the bytecode cache and the review caches
        _check(listing, repo, sessions, penv)
        cold = _forget_reviews(repo)
        runs: list[tuple[str, list[str], Callable[[], None] | None]] = [
            ("python", python, None),
            ("status", status, None),
            ("list", listing, None),
            ("status-cold", status, cold),
            ("list-cold", listing, cold),
            ("help", harness_argv("--help"), None),
            ("pydantic", [sys.executable, "-c", "from pydantic import BaseModel"], None),
            ("models", [sys.executable, "-c", "import runner.record.models"], None),
            ("imports", [sys.executable, "-c", "import runner.usecases.status, runner.cli.render"], None),
        ]
        samples: dict[str, list[float]] = {key: [] for key, _, _ in runs}
        for _ in range(repeat):  # interleaved: all of them see the same load
            for key, argv, before in runs:
                samples[key].append(_time_command(argv, repo, penv, before))
        cold()
    p = result.add("python -c pass", samples["python"])
    s = result.add(f"harness status --json ({iterations} iterations)", samples["status"])
    li = result.add(f"harness list --json ({sessions} sessions)", samples["list"])
    sc = result.add("harness status --json, first look after its branch moved", samples["status-cold"])
    lc = result.add(f"harness list --json, first look after all {sessions} branches moved", samples["list-cold"])
    result.add("harness --help (typer, rich: what status and list --json no longer load)", samples["help"])
    floor = result.add("python -c 'from pydantic import BaseModel'", samples["pydantic"])
    models = result.add("python -c 'import runner.record.models' (the journal's pydantic models)", samples["models"])
    imports = result.add(
        "python -c 'import runner.usecases.status, runner.cli.render' (all they import)", samples["imports"]
    )
    ratio = floor.median / p.median
    why = _WHY.format(
        floor=ratio,
        models=(models.median - floor.median) * 1000,
        imports=(imports.median - p.median) * 1000,
        total=(s.median - p.median) * 1000,
    )
    result.ratios = [
        Ratio("status / python -c pass", s.median / p.median, 4.0, why=why),
        Ratio("list / python -c pass", li.median / p.median, 4.0, why=why),
        Ratio("status, first look after its branch moved / python -c pass", sc.median / p.median),
        Ratio("list, first look after every branch moved / python -c pass", lc.median / p.median),
        Ratio("pydantic alone / python -c pass", ratio),
    ]
    result.facts = [
        f"{repeat} runs of each, interleaved; the journals were written with the pydantic models",
        "`status` and `list` with `--json` skip typer and rich (runner/__main__.py; the same core and rendering, "
        "byte for byte, tests/unit/test_startup.py), and show each branch's review from the session's "
        ".review-cache.json while its inputs are unchanged: git runs once per repository, not per session "
        "(the first look after a branch, HEAD or the working tree moved reviews again, timed separately here)",
        "Python's bytecode cache on, as an installed package has it (PYTHONDONTWRITEBYTECODE, set in this "
        "environment, would make every run compile the harness's modules again; the baseline compiles nothing)",
    ]
    return result


_WHY = (
    "a process that only imports pydantic and defines one model is already {floor:.1f}x `python -c pass` here, so "
    "no command that reads the journal through its pydantic models can reach 4x. Of the {total:.0f} ms above "
    "`python -c pass`, the imports of `status` and `list` cost {imports:.0f} ms: pydantic's own import and plugin "
    "lookup, the journal's models (about {models:.0f} ms more than pydantic alone), the review and the renderer; "
    "the rest is reading the journal and git once per repository. (runner/base/paths.py used to import "
    "pydantic-settings for two environment variables, about 40 ms more: the seams are now read from os.environ, "
    "runner/base/seams.py.) Closing the goal would need a reader of the journal's JSON without pydantic for these two "
    "commands, a second copy of the models' validation"
)


if __name__ == "__main__":
    main(measure, __doc__)
