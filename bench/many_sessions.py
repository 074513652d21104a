"""Many sessions: N detached sessions at once whose agents sleep; what the supervisors cost meanwhile.

Each session is a real `harness run --detach` on its own small repository, one iteration whose agent
sleeps and then reports "working". Once every agent container runs, the supervisors' CPU time
(utime+stime of each supervisor's process tree, from /proc) is read at both ends of a window and
their resident memory sampled; then every run must end `max-iterations` with a journal whose summary
and iteration record load with the journal's models. Full: 8 sessions, then 32 (where this machine's
limit shows: the time to get every agent running, and memory); quick: 3 sessions.

Goal (issue 10): the supervisors' combined CPU while agents sleep <= 2% of one core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import (
    EXIT_NEEDS_ATTENTION,
    BenchEnv,
    BenchError,
    Ratio,
    Result,
    bench_env,
    cpu_seconds,
    harness_argv,
    main,
    proc_tree,
    rss_mb,
    run,
    small_repo,
)

NAME = "many-sessions"


@dataclass(frozen=True)
class Wave:
    sessions: int
    sleep: float  # seconds each agent sleeps: covers the launch of all of them and the window
    window: float  # seconds over which CPU is measured


@dataclass
class WaveResult:
    cpu_percent: float
    rss_mb: list[float]
    launch_seconds: float  # from the first launch until every agent runs
    end_seconds: float  # from the first launch until every run ended
    running: int  # agents running during the window


def _launch(env: BenchEnv, n: int, sleep: float) -> tuple[Path, int]:
    repo = small_repo(env.tmp / f"repo-{n}")
    cmd = f'sleep {sleep:g}; printf \'{{"state":"working"}}\' > "$HARNESS_STATUS_FILE"'
    out = run(harness_argv("run", "--session", "many", "--objective", "benchmark", "--agent-cmd", cmd,
                           "--max-iterations", "1", "--detach", "--json"), cwd=repo, timeout=120)  # fmt: skip
    return repo, int(json.loads(out)["pid"])


def _running_agents(env: BenchEnv) -> int:
    argv = ["docker", "ps", "-q", "--filter", f"label={env.label}", "--filter", "label=io.solo-harness.role=agent"]
    return len(run(argv).split())


def _tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in proc_tree(pid))


def run_wave(env: BenchEnv, wave: Wave) -> WaveResult:
    start = time.monotonic()
    launched = [_launch(env, n, wave.sleep) for n in range(wave.sessions)]
    pids = [pid for _, pid in launched]
    try:
        deadline = start + wave.sleep - wave.window - 1
        while _running_agents(env) < wave.sessions and time.monotonic() < deadline:
            time.sleep(0.2)
        running = _running_agents(env)
        if running < 1:
            raise BenchError(f"no agent of {wave.sessions} ran before the window")
        all_running = time.monotonic() - start  # the whole wait, when not all of them made it
        time.sleep(1.0)  # let the last supervisor settle into its wait
        before = {pid: _tree_cpu(pid) for pid in pids}
        t0 = time.monotonic()
        rss: dict[int, float] = dict.fromkeys(pids, 0.0)
        while time.monotonic() - t0 < wave.window:
            for pid in pids:
                rss[pid] = max(rss[pid], sum(rss_mb(p) for p in proc_tree(pid)))
            time.sleep(0.5)
        used = sum(_tree_cpu(pid) - before[pid] for pid in pids)
        cpu = 100 * used / (time.monotonic() - t0)
        if _running_agents(env) < running:
            raise BenchError("an agent ended inside the window: give it a longer sleep")
        _wait_all(pids, start + wave.sleep + 300)
        ended = time.monotonic() - start
    finally:
        for pid in pids:  # only the supervisors this benchmark started, by pid
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGTERM)
    for repo, _ in launched:
        _check_journal(repo)
    return WaveResult(cpu, list(rss.values()), all_running, ended, running)


def _wait_all(pids: list[int], deadline: float) -> None:
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise BenchError("a supervisor did not end in time")
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _check_journal(repo: Path) -> None:
    from runner.record.journal import Journal
    from runner.record.models import Outcome, StopReason

    journal = Journal.for_repo(repo, "many")
    summary = journal.read_summary()  # validated by the model
    record = journal.read_iteration(1)
    if summary.stop_reason is not StopReason.MAX_ITERATIONS or record.outcome is not Outcome.WORKING:
        raise BenchError(f"{repo.name}: ended {summary.stop_reason}, iteration {record.outcome}")
    status = subprocess.run(harness_argv("status", "--session", "many", "--json"), cwd=repo, capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    if status.returncode != EXIT_NEEDS_ATTENTION or json.loads(status.stdout)["iterationCount"] != 1:
        raise BenchError(f"{repo.name}: status exited {status.returncode}: {status.stderr.strip()[-200:]}")


def measure(quick: bool) -> Result:
    waves = (Wave(3, 20, 5),) if quick else (Wave(8, 60, 15), Wave(32, 240, 15))
    result = Result(NAME, "Many sessions", quick)
    for wave in waves:
        with bench_env("many") as env:
            got = run_wave(env, wave)
        n = wave.sessions
        result.add(f"{n} sessions: supervisors' combined CPU while agents sleep", [got.cpu_percent], "%")
        result.add(f"{n} sessions: RSS per supervisor (process tree)", got.rss_mb, "MB")
        result.add(f"{n} sessions: from the first launch until every agent runs", [got.launch_seconds])
        result.add(f"{n} sessions: from the first launch until every run ended", [got.end_seconds])
        goal = 1.0 if wave is waves[0] else None  # the goal is for 8; the larger wave shows the limit
        result.ratios.append(Ratio(f"{n} sessions: CPU / 2% of one core", got.cpu_percent / 2.0, goal, why=_WHY))
        result.facts.append(
            f"{n} sessions: {got.running} agents ran through the CPU window; agents sleep {wave.sleep:g} s, "
            f"CPU window {wave.window:g} s; total supervisor memory "
            f"{sum(got.rss_mb):.0f} MB; every run ended max-iterations with a journal that loads"
        )
    last = waves[-1].sessions
    cpu_each = result.measures[-4].median / last
    rss_each = result.measures[-3].median
    launch_each = result.measures[-2].median / last
    mem_mb = _mem_total_mb()
    result.notes.append(
        f"Where this machine's limit is ({last} sessions): {_cpu_reach(cpu_each)}; each holds about "
        f"{rss_each:.0f} MB resident, so the {mem_mb / 1024:.0f} GiB of this "
        f"machine hold about {mem_mb / rss_each:.0f} supervisors before the agents' own memory counts. What gives "
        f"first is the start: set-ups (a clone helper container each) and container starts queue on the engine and "
        f"the 2 cores, about {launch_each:.1f} s per session here, so a wave of {last} takes "
        f"{result.measures[-2].median:.0f} s to have every agent running, and each iteration's end (the helper "
        "container again) queues the same way."
    )
    return result


def _mem_total_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return 0.0


_WHY = (
    "each supervisor polls while its agent runs: the container wait in 2-second slices with a look at the control "
    "file between them, a heartbeat every 10 s, and the model gateway's and relay's threads"
)


def _cpu_reach(cpu_each: float) -> str:
    """What the idle supervisors' CPU allows; a quick run's window may see no clock tick at all."""
    if cpu_each <= 0:
        return "the idle supervisors used no measurable CPU in the window (under one clock tick)"
    return (
        f"each idle supervisor costs about {cpu_each:.3f} % of one core, so 2 % of a core is reached near "
        f"{2 / cpu_each:.0f} sessions and one whole core near {100 / cpu_each:.0f}"
    )


if __name__ == "__main__":
    main(measure, __doc__)
