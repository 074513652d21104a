"""CLI start-up: `harness status --json` on a 500-iteration journal and `harness list` with 50 sessions,
against `python -c pass`.

The sessions are real (`runner.runs.create_session`: journal, summary, branch) and their iteration
records are written with the journal's own pydantic models; each session gets the owner.json that
`list` looks for. No container runs. Quick: 50 iterations and 5 sessions.

Goal (issue 10): each command / `python -c pass` <= 4x.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench._common import (
    EXIT_NEEDS_ATTENTION,
    BenchError,
    Ratio,
    Result,
    bench_env,
    finish,
    harness_argv,
    parser,
    small_repo,
    timed,
)

NAME = "cli-startup"


def make_sessions(repo: Path, sessions: int, iterations: int) -> None:
    from runner.backends.docker import DockerBackend
    from runner.journal import Journal
    from runner.models import IterationRecord, Outcome, RunOwner, RunState, StopReason
    from runner.paths import run_dir
    from runner.runs import RunRequest, create_session
    from runner.workspace import RunDir

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


def _check(argv: list[str], repo: Path, expect: int) -> None:
    proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode not in {0, EXIT_NEEDS_ATTENTION}:  # status says "stopped" by its exit code
        raise BenchError(f"{' '.join(argv[2:5])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    data = json.loads(proc.stdout)
    found = len(data) if isinstance(data, list) else data.get("iterationCount")
    if found != expect:
        raise BenchError(f"{' '.join(argv[2:5])} reported {found}, not {expect}")


def _time_command(argv: list[str], cwd: Path) -> float:
    return timed(lambda: subprocess.run(argv, cwd=cwd, capture_output=True, check=False))


def measure(quick: bool) -> Result:
    iterations, sessions, repeat = (50, 5, 5) if quick else (500, 50, 15)
    result = Result(NAME, "CLI start-up", quick)
    with bench_env("cli") as env:
        repo = small_repo(env.tmp / "repo")
        make_sessions(repo, sessions, iterations)
        status = harness_argv("status", "--session", "bench-00", "--json")
        listing = harness_argv("list", "--json")
        python = [sys.executable, "-c", "pass"]
        _check(status, repo, iterations)
        _check(listing, repo, sessions)
        parts = {
            "help": harness_argv("--help"),
            "models": [sys.executable, "-c", "import runner.models, runner.status, runner.gc"],
        }
        runs = (("python", python), ("status", status), ("list", listing), *parts.items())
        samples: dict[str, list[float]] = {key: [] for key, _ in runs}
        for _ in range(repeat):  # interleaved: all of them see the same load
            for key, argv in runs:
                samples[key].append(_time_command(argv, repo))
    p = result.add("python -c pass", samples["python"])
    s = result.add(f"harness status --json ({iterations} iterations)", samples["status"])
    li = result.add(f"harness list --json ({sessions} sessions)", samples["list"])
    result.add("python -m runner --help (the CLI's imports: typer, rich)", samples["help"])
    result.add("python -c 'import runner.models, runner.status, runner.gc' (pydantic)", samples["models"])
    result.ratios = [
        Ratio("status / python -c pass", s.median / p.median, 4.0, why=_WHY),
        Ratio("list / python -c pass", li.median / p.median, 4.0, why=_WHY),
    ]
    result.facts = [f"{repeat} runs of each, interleaved; the journals were written with the pydantic models"]
    return result


_WHY = (
    "the import of typer, rich and pydantic (the models are built at import) is paid by every command; status "
    "also runs host git (the branch, the commits ahead, the review of flagged paths), and list does that for "
    "every session. What would close it: import typer and rich only for text output, build the pydantic models "
    "lazily (`defer_build`), and let `status --json` and `list` read the summaries without the git review "
    "(a flag, or the review cached in the summary at each harvest); a Python start-up with pydantic alone is "
    "already several times `python -c pass`, so 4x needs most of that"
)


def main(argv: list[str] | None = None) -> Result:
    args = parser(__doc__).parse_args(argv)
    result = measure(args.quick)
    finish(result, args.doc)
    return result


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"bench: error: {exc}")
