"""Log throughput: an agent writing a lot to stdout, through the supervisor against `docker logs` to a file.

Harness: a real `harness run` (a child process) of one iteration whose agent writes N bytes of text
to stdout, with a secret passed by --env printed first and last (redaction on); its throughput is
N / the record's `durationSeconds` (the agent container from start to exit: a supervisor that
drains too slowly makes the container wait on its pipe). The supervisor's process tree is sampled
from /proc for its peak resident memory; `wait4` gives the peak of its largest single process. The log
must hold at most the configured cap (8 MiB by default) and never the secret.
Baseline: the same command in `docker run -d`, waited for, then `docker logs` into a file; its
throughput is N / (run to exit + logs). Full: 1 GiB; quick: 50 MiB.

Goals (issue 10): harness / docker logs throughput >= 0.8x; supervisor peak RSS <= 150 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from bench._common import (
    IMAGE,
    BenchEnv,
    BenchError,
    Ratio,
    Result,
    bench_env,
    harness_argv,
    main,
    proc_tree,
    rss_mb,
    run,
    small_repo,
    timed,
)

NAME = "log-throughput"
SECRET = "bench-secret-" + "k7Qz9xPw2mLr4tVb"  # long enough for the redactor
LINE = "the agent says something fairly ordinary on this line, 0123456789 abcdefghij"


def writer(size: int) -> str:
    return f'echo "$BENCH_SECRET"; yes "{LINE}" | head -c {size}; echo; echo "$BENCH_SECRET"'


def harness_once(env: BenchEnv, size: int, n: int) -> tuple[float, float, float, int, bool]:
    """(MB/s, peak tree RSS MB, peak single-process RSS MB, log bytes, truncated) of one run."""
    from runner.base.paths import journal_dir

    repo = small_repo(env.tmp / f"repo-{n}")
    cmd = writer(size) + '; printf \'{"state":"working"}\' > "$HARNESS_STATUS_FILE"'
    argv = harness_argv("run", "--session", "logs", "--objective", "benchmark", "--agent-cmd", cmd,
                        "--max-iterations", "1", "--env", "BENCH_SECRET", "--json")  # fmt: skip
    child = subprocess.Popen(
        argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "BENCH_SECRET": SECRET},
    )  # fmt: skip
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], sum(rss_mb(pid) for pid in proc_tree(child.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err, rusage = _wait4(child)
    done.set()
    sampler.join()
    if child.returncode != 21:  # needs attention: stopped at --max-iterations
        raise BenchError(f"harness run exited {child.returncode}: {err.decode(errors='replace')[-400:]}")
    status = json.loads(out)
    if status.get("iterationCount") != 1:
        raise BenchError(f"the run did not do its iteration: {status.get('stopReason')}")
    jdir = journal_dir(repo, "logs")
    record = json.loads((jdir / "iteration-0001.json").read_text())
    log = (jdir / record["logFile"]).read_bytes()
    if SECRET.encode() in log:
        raise BenchError("the secret reached the log: redaction failed")
    if record["outcome"] != "working":
        raise BenchError(f"the iteration ended {record['outcome']}")
    mbps = size / 1024**2 / float(record["durationSeconds"])
    return mbps, peak[0], rusage, len(log), bool(record["logTruncated"])


def _wait4(child: subprocess.Popen[bytes]) -> tuple[bytes, bytes, float]:
    """(stdout, stderr, peak RSS in MB of the child or any descendant it reaped), from wait4."""
    assert child.stdout is not None and child.stderr is not None
    chunks: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda k=k, f=f: chunks.__setitem__(k, f.read()), daemon=True)
        for k, f in (("out", child.stdout), ("err", child.stderr))
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=60)
    return chunks.get("out", b""), chunks.get("err", b""), usage.ru_maxrss / 1024  # Linux: KiB


def docker_logs_once(env: BenchEnv, size: int) -> tuple[float, float]:
    """(MB/s, seconds of `docker logs`) for the same output left to the log driver and read back."""
    out = env.tmp / "docker.log"
    argv = ["docker", "run", "-d", "--network", "none", "--pull", "never", "--label", env.label,
            "-e", f"BENCH_SECRET={SECRET}", IMAGE, "sh", "-c", writer(size)]  # fmt: skip
    start = time.perf_counter()
    cid = run(argv).strip()
    run(["docker", "wait", cid], timeout=1800)
    ran = time.perf_counter() - start
    with out.open("wb") as handle:
        logs = timed(lambda: subprocess.run(["docker", "logs", cid], stdout=handle, stderr=handle, check=True))
    got = out.stat().st_size
    out.unlink()
    run(["docker", "rm", "-f", cid])
    if got < size:
        raise BenchError(f"docker logs gave {got} bytes, fewer than the {size} written")
    return size / 1024**2 / (ran + logs), logs


def measure(quick: bool) -> Result:
    size, repeat = (50 * 1024**2, 2) if quick else (1024**3, 2)
    result = Result(NAME, "Log throughput", quick)
    harness: list[float] = []
    trees: list[float] = []
    singles: list[float] = []
    base: list[float] = []
    logs_s: list[float] = []
    kept: list[int] = []
    with bench_env("logs") as env:
        for n in range(repeat):
            mbps, logs = docker_logs_once(env, size)
            base.append(mbps)
            logs_s.append(logs)
            h_mbps, tree, single, log_bytes, truncated = harness_once(env, size, n)
            if not truncated:
                raise BenchError("the log was not truncated at the output cap")
            harness.append(h_mbps)
            trees.append(tree)
            singles.append(single)
            kept.append(log_bytes)
    h = result.add("harness: agent output drained, redacted, capped", harness, "MB/s")
    b = result.add("docker run -d, wait, docker logs > file", base, "MB/s")
    result.add("of which docker logs > file (seconds)", logs_s)
    rss = result.add("supervisor process tree, peak RSS (sampled /proc)", trees, "MB")
    result.add("largest single process of that tree, peak RSS (wait4)", singles, "MB")
    result.ratios = [
        Ratio("harness / docker logs throughput", h.median / b.median, 0.8, at_least=True, why=_WHY),
        Ratio("supervisor peak RSS / 150 MB", rss.median / 150, 1.0, why="see the measures above"),
    ]
    result.facts = [
        f"{size / 1024**2:.0f} MiB written by the agent per run, {repeat} runs of each; a secret passed by --env is "
        f"printed first and last and never reached the log; the log kept {max(kept):,} bytes (the 8 MiB default "
        "cap plus the truncation marker), truncated every time",
    ]
    return result


_WHY = (
    "the supervisor reads the attach stream in Python (the docker SDK's frame parser), runs the redactor over "
    "every chunk and writes the capped file; `docker logs` is the engine's own Go code"
)


if __name__ == "__main__":
    main(measure, __doc__)
