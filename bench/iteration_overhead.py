"""How much one harness iteration costs on top of a plain `docker run`, measured on the real engine.

Three measures, in the same run so that they share the machine's current load:

(a) baseline: `docker run --rm --network none harness-base:latest true`, timed around the CLI call;
(b) bare: the same `true` through the project's own `DockerBackend.run` with `hardened_spec` (no
    mounts): create, start, drain the output, wait, inspect, remove, with all the hardening options;
(c) harness: a real `harness run` of K iterations of an agent that only reports "working", on a
    temporary repository. Four views of one iteration:
    - agent: the records' `durationSeconds` (agent container from start to exit; no create/remove);
    - step: the records' `createdAt - startedAt` (prompt, then the agent container from create to
      remove: the harness's counterpart of (b));
    - full: the record file's write time - `startedAt` (the step, plus the checkpoint+harvest helper
      container and the git fetch on the host);
    - wall: the whole command's wall clock / K, which also spreads the session's set-up (CLI start-up,
      engine and image checks, the helper container that makes the isolated copy) over K iterations.

The ratios to (a) are what matter: (b)/(a) is the price of the hardening and of the SDK path, and
(c wall)/(a) is the harness's fixed cost per iteration, which a real agent's minutes of work must
dwarf. A rising ratio is a regression in the harness; a rising (a) alone is a slower machine.

Timings are printed, never asserted (shared machines are noisy); the exit status is non-zero only
when something fails to run. Every container is labelled `io.solo-harness.bench=<random id>` and
removed at the end, with the temporary HARNESS_HOME and repository. Containers have no network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.backends.docker import DockerBackend
from runner.errors import HarnessError
from runner.models import Limits
from runner.output import CappedBuffer
from runner.paths import journal_dir
from runner.sandbox import EXTRA_LABELS_ENV, hardened_spec, labels
from runner.workspace import RunDir, Workspace

IMAGE = "harness-base:latest"
LABEL = "io.solo-harness.bench"
SESSION = "bench"
AGENT_CMD = """printf '{"state":"working"}' > "$HARNESS_STATUS_FILE\""""
EXIT_NEEDS_ATTENTION = 21  # what `harness run` returns when it stops at --max-iterations
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]


class BenchError(Exception):
    """Something did not run as the benchmark needs it to."""


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls, after one untimed warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def raw_docker(bench_id: str, repeat: int) -> list[float]:
    # --pull never: a missing image is an error here, never a download.
    label = f"{LABEL}={bench_id}"
    argv = ["docker", "run", "--rm", "--network", "none", "--pull", "never", "--label", label, IMAGE, "true"]
    return _timed(lambda: subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True), repeat)


def bare_backend(repeat: int) -> list[float]:
    backend = DockerBackend()
    backend.check()  # connect outside the timed calls
    role_labels = labels(SESSION, SESSION, "bench")  # plus HARNESS_CONTAINER_LABELS, as the harness does
    spec = hardened_spec(image=IMAGE, command=["true"], limits=Limits(), mounts=(), labels=role_labels, workdir="/tmp")

    def once() -> None:
        result = backend.run(spec, timeout=120, output=CappedBuffer())
        if result.exit_code != 0:
            raise BenchError(f"the bare container exited {result.exit_code}")

    return _timed(once, repeat)


def harness_run(repo: Path, iterations: int) -> dict[str, list[float]]:
    """Seconds per iteration of a real `harness run` of `iterations` iterations, four ways (see above)."""
    repo.mkdir()
    (repo / "README.md").write_text("# bench\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True, timeout=60, check=True)
    argv = [sys.executable, "-m", "runner", "run", "--session", SESSION, "--objective", "benchmark",
            "--agent-cmd", AGENT_CMD, "--max-iterations", str(iterations), "--json"]  # fmt: skip
    start = time.perf_counter()
    limit = 300 + 120 * iterations
    proc = subprocess.run(
        argv, cwd=repo, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != EXIT_NEEDS_ATTENTION:
        raise BenchError(f"harness run exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    status = json.loads(proc.stdout)
    reason, count = status.get("stopReason"), status.get("iterationCount")
    if reason != "max-iterations" or count != iterations:
        raise BenchError(f"harness run ended {reason} after {count} iterations, not max-iterations after {iterations}")
    paths = sorted(journal_dir(repo, SESSION).glob("iteration-[0-9]*.json"))
    records: list[dict[str, Any]] = [json.loads(p.read_text()) for p in paths]
    odd = [r["outcome"] for r in records if r["outcome"] != "working"]
    if len(records) != iterations or odd:
        raise BenchError(f"expected {iterations} 'working' iteration records, found {len(records)} (outcomes {odd})")
    return {
        "c_iteration_agent": [float(r["durationSeconds"]) for r in records],
        "c_iteration_step": [_at(r, "createdAt") - _at(r, "startedAt") for r in records],
        "c_iteration_full": [p.stat().st_mtime - _at(r, "startedAt") for p, r in zip(paths, records, strict=True)],
        "c_iteration_wall": [wall / iterations],
    }


def _at(record: dict[str, Any], key: str) -> float:
    """A record's timestamp (aware, UTC) as epoch seconds, comparable with file modification times."""
    return datetime.fromisoformat(record[key]).timestamp()


def cleanup(bench_id: str, tmp: Path) -> None:
    """Remove the copies, every container labelled with `bench_id`, and the temp dir; warn, never raise."""
    if os.geteuid() != 0:  # the copy's files belong to the agent uid: the harness's own helper removes them
        for root in (tmp / "home" / "runs").glob("*"):
            try:
                Workspace(
                    backend=DockerBackend(), run_dir=RunDir(root), image=IMAGE, limits=Limits(), session=SESSION,
                    repo_key=root.name.split("-", 1)[0],
                ).delete()  # fmt: skip
            except HarnessError as exc:
                print(f"bench: warning: cannot delete the copy {root}: {exc.message}", file=sys.stderr)
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL}={bench_id}"], capture_output=True, text=True, check=False
    ).stdout.split()
    if ids:
        print(f"bench: warning: removing {len(ids)} leftover container(s)", file=sys.stderr)
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    try:
        shutil.rmtree(tmp)
    except OSError as exc:
        print(f"bench: warning: cannot remove {tmp}: {exc}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs of (a) and (b) each (default 5)")
    parser.add_argument("--iterations", type=int, default=3, help="iterations K of the harness run (default 3)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    if args.repeat < 1 or args.iterations < 1:
        parser.error("--repeat and --iterations must be at least 1")

    bench_id = uuid.uuid4().hex[:12]
    tmp = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    os.environ["HARNESS_HOME"] = str(tmp / "home")
    os.environ[EXTRA_LABELS_ENV] = ",".join(filter(None, [os.environ.get(EXTRA_LABELS_ENV), f"{LABEL}={bench_id}"]))
    os.environ.pop("HARNESS_JOURNAL_ROOT", None)  # the journal goes into the temp repository
    try:
        raw = raw_docker(bench_id, args.repeat)
        bare = bare_backend(args.repeat)
        per_iteration = harness_run(tmp / "repo", args.iterations)
    except (BenchError, HarnessError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        detail = getattr(exc, "stderr", None) or getattr(exc, "message", None) or exc
        print(f"bench: error: {exc.__class__.__name__}: {str(detail).strip()[-500:]}", file=sys.stderr)
        return 1
    finally:
        cleanup(bench_id, tmp)

    samples = {"a_docker_run": raw, "b_backend_bare": bare, **per_iteration}
    median = {name: statistics.median(values) for name, values in samples.items()}
    ratio = {name: value / median["a_docker_run"] for name, value in median.items()}
    if args.json:
        print(json.dumps({"repeat": args.repeat, "iterations": args.iterations, "samples": samples,
                          "median": median, "ratioToA": ratio}, indent=2))  # fmt: skip
        return 0
    titles = {
        "a_docker_run": "(a) docker run --rm --network none ... true",
        "b_backend_bare": "(b) DockerBackend.run, hardened, no mounts",
        "c_iteration_agent": "(c) iteration: agent container (durationSeconds)",
        "c_iteration_step": "(c) iteration: prompt + agent container (createdAt-startedAt)",
        "c_iteration_full": "(c) iteration: + checkpoint/harvest (record written-startedAt)",
        "c_iteration_wall": f"(c) iteration: harness run wall clock / {args.iterations}",
    }
    width = max(map(len, titles.values()))
    print(f"{'measure':<{width}} {'median s':>9} {'x (a)':>7}")
    for name, title in titles.items():
        print(f"{title:<{width}} {median[name]:>9.3f} {ratio[name]:>7.2f}")
    print(f"(a), (b): {args.repeat} runs each after a warm-up; (c): one run of {args.iterations} iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
