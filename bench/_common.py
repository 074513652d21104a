"""What every benchmark shares: timing and medians, the bench's temp home and labels, and its
section of docs/performance.md (written by the benchmark, between markers, never by hand).

Benchmarks report medians and ratios against a raw baseline measured in the same run: the machine
is shared and noisy, so absolute figures mean little and nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

IMAGE = "harness-base:latest"
LABEL = "io.solo-harness.bench"
GIT = [
    "git",
    "-c",
    "user.name=bench",
    "-c",
    "user.email=bench@example.invalid",
    "-c",
    "gc.auto=0",
]  # no gc in the background (it races our rmtree)
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
EXIT_NEEDS_ATTENTION = 21  # `harness run` stopped at --max-iterations
EXTRA_LABELS_ENV = "HARNESS_CONTAINER_LABELS"


class BenchError(Exception):
    """Something did not run as the benchmark needs it to (a failure, never a slow figure)."""


@dataclass(frozen=True)
class Measure:
    title: str
    samples: list[float]
    unit: str = "s"

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Ratio:
    title: str
    value: float
    goal: float | None = None  # None: reported, no goal
    at_least: bool = False  # the goal is a floor (throughput), not a ceiling
    why: str = ""  # why the goal is missed (or what the figure means)

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal


@dataclass
class Result:
    name: str  # the doc section's key
    title: str
    quick: bool
    measures: list[Measure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    breakdown: list[tuple[str, float]] = field(default_factory=list)  # (phase, median seconds)
    facts: list[str] = field(default_factory=list)  # "what ran" and non-time figures
    notes: list[str] = field(default_factory=list)  # explanations written by the benchmark

    def add(self, title: str, samples: list[float], unit: str = "s") -> Measure:
        if not samples:
            raise BenchError(f"{title}: no samples")
        measure = Measure(title, samples, unit)
        self.measures.append(measure)
        return measure

    def text(self) -> str:
        lines = [f"== {self.title}{' (quick)' if self.quick else ''}"]
        width = max([len(m.title) for m in self.measures] + [len(r.title) for r in self.ratios] + [10])
        for m in self.measures:
            lines.append(f"  {m.title:<{width}} median {_fmt(m.median, m.unit):>12}  (n={len(m.samples)})")
        for r in self.ratios:
            goal = "" if r.goal is None else f"  goal {'>=' if r.at_least else '<='} {r.goal:g}x: "
            goal += "" if r.met is None else ("met" if r.met else "MISSED")
            lines.append(f"  {r.title:<{width}} ratio  {r.value:>11.2f}x{goal}")
        if self.breakdown:
            lines.append("  per phase (median seconds):")
            lines += [f"    {phase:<{width - 2}} {seconds:>9.3f}" for phase, seconds in self.breakdown]
        lines += [f"  {fact}" for fact in self.facts]
        return "\n".join(lines)

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        out += [f"- {fact}" for fact in self.facts]
        out += ["", "| measure | median | runs |", "|---|---:|---:|"]
        out += [f"| {m.title} | {_fmt(m.median, m.unit)} | {len(m.samples)} |" for m in self.measures]
        if self.ratios:
            out += ["", "| ratio | value | goal | met |", "|---|---:|---:|---|"]
            for r in self.ratios:
                goal = "—" if r.goal is None else f"{'≥' if r.at_least else '≤'} {r.goal:g}x"
                met = "—" if r.met is None else ("yes" if r.met else "**no**")
                out.append(f"| {r.title} | {r.value:.2f}x | {goal} | {met} |")
        if self.breakdown:
            out += ["", "Where the time goes (median seconds per phase):", "", "| phase | seconds |", "|---|---:|"]
            out += [f"| {phase} | {seconds:.3f} |" for phase, seconds in self.breakdown]
        whys: dict[str, list[str]] = {}  # one paragraph per reason, naming every ratio it explains
        for r in self.ratios:
            if r.met is False and r.why:
                whys.setdefault(r.why, []).append(r.title)
        notes = [*(f"Missed, {'; '.join(titles)}: {why}" for why, titles in whys.items()), *self.notes]
        if notes:
            out += ["", *(f"{note}\n" for note in notes)]
        return "\n".join(out).rstrip() + "\n"


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:g} {unit}"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or BenchError with the end of its stderr."""
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}... exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def git(repo: Path, *args: str, timeout: float = 600) -> str:
    return run([*GIT, "-C", str(repo), *args], timeout=timeout)


def small_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text("# bench\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def harness_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


@dataclass
class BenchEnv:
    """A benchmark's temp dir, HARNESS_HOME and container label; everything removed on exit."""

    bench_id: str
    tmp: Path

    @property
    def label(self) -> str:
        return f"{LABEL}={self.bench_id}"

    def docker_run(self, *args: str) -> list[str]:
        """`docker run --rm` argv, labelled, no network, never pulling."""
        return ["docker", "run", "--rm", "--network", "none", "--pull", "never", "--label", self.label, *args]


@contextmanager
def bench_env(prefix: str) -> Iterator[BenchEnv]:
    env = BenchEnv(uuid.uuid4().hex[:12], Path(tempfile.mkdtemp(prefix=f"harness-bench-{prefix}-")))
    saved = {k: os.environ.get(k) for k in ("HARNESS_HOME", EXTRA_LABELS_ENV, "HARNESS_JOURNAL_ROOT")}
    os.environ["HARNESS_HOME"] = str(env.tmp / "home")
    os.environ[EXTRA_LABELS_ENV] = ",".join(filter(None, [saved[EXTRA_LABELS_ENV], env.label]))
    os.environ.pop("HARNESS_JOURNAL_ROOT", None)  # journals go into the temp repositories
    try:
        yield env
    finally:
        cleanup(env)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cleanup(env: BenchEnv) -> None:
    """Remove the copies, every container labelled with the bench id, and the temp dir; warn, never raise."""
    try:
        ids = run(["docker", "ps", "-aq", "--filter", f"label={env.label}"]).split()
    except (BenchError, OSError, subprocess.TimeoutExpired) as exc:  # the engine went away: keep cleaning up
        print(f"bench: warning: cannot list the bench's containers: {exc}", file=sys.stderr)
        ids = []
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    # The overlays of racers' copies (a volume each, labelled as the container that made it).
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label={env.label}"],
                             capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, check=False)
    if os.geteuid() != 0:  # files made by the agent uid: removed by a container of the same uid
        for root in (env.tmp / "home" / "runs").glob("*"):
            _remove_as_agent(env, root)
        for leftover in env.tmp.glob("agent-*"):
            _remove_as_agent(env, leftover)
    try:
        shutil.rmtree(env.tmp)
    except OSError as exc:
        print(f"bench: warning: cannot remove {env.tmp}: {exc}", file=sys.stderr)


def _remove_as_agent(env: BenchEnv, path: Path) -> None:
    from runner.base.layout import AGENT_UID

    argv = env.docker_run("--user", f"{AGENT_UID}:{AGENT_UID}", "-v", f"{path}:/x", IMAGE, "sh", "-c",
                          "find /x -mindepth 1 -delete 2>/dev/null; true")  # fmt: skip
    subprocess.run(argv, capture_output=True, check=False, timeout=600)


def agent_dir(env: BenchEnv, name: str) -> Path:
    """A host directory the agent uid may write into (as the harness's run directories are)."""
    path = env.tmp / f"agent-{name}"
    path.mkdir()
    path.chmod(0o777)
    return path


def machine() -> str:
    mem = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    gitv = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "\n".join([
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- cores (nproc): {os.cpu_count()}; memory: {mem}; load average at the start: {load}",
        f"- Docker engine {docker}; {gitv}; Python {platform.python_version()}; kernel {platform.release()}",
    ])  # fmt: skip


def write_section(name: str, text: str, doc: Path = DOC) -> None:
    """Replace the section `name` of the doc (between its markers), or append it."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    current = doc.read_text() if doc.exists() else ""
    if start in current and end in current:
        head, rest = current.split(start, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = current.rstrip() + ("\n\n" if current else "") + block + "\n"
    doc.write_text(new)


def main(measure: Callable[[bool], Result], doc: str | None, argv: list[str] | None = None) -> None:
    """Every benchmark run alone, `python -m bench.NAME [--quick] [--doc FILE]`: its figures on stdout and,
    with --doc, its section of FILE rewritten; a BenchError ends it with one line on stderr (exit status 1)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    p.add_argument("--quick", action="store_true", help="the small version CI runs for correctness")
    p.add_argument("--doc", type=Path, help="write this benchmark's section of this markdown file")
    args = p.parse_args(argv)
    try:
        result = measure(args.quick)
    except BenchError as exc:
        sys.exit(f"bench: error: {exc}")
    print(result.text(), flush=True)
    if args.doc is not None:
        write_section(result.name, result.markdown(), args.doc)


def proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc; processes that vanish meanwhile are skipped)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


@dataclass(frozen=True)
class MachineCpu:
    """Seconds every core of this machine has spent since boot: busy (user, nice, system, irq, softirq; all
    processes and the kernel, containers and their engine included), and idle while a disk read or write was
    outstanding (iowait)."""

    busy: float
    iowait: float

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - other.busy, self.iowait - other.iowait)


def machine_cpu() -> MachineCpu:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, iowait, irq, softirq = (int(f) for f in fields[:7])
    tick = os.sysconf("SC_CLK_TCK")
    return MachineCpu((user + nice + system + irq + softirq) / tick, iowait / tick)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_seconds(pid: int) -> float:
    """utime+stime of one process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
