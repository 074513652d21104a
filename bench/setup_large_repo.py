"""Session set-up on a large repository, against `git clone --no-local` and `git worktree add` of the same
repository; and a race's set-up: 4 copies made from one shared seed against one session's set-up.

Set-up is everything `harness run` does before the first iteration (plan, engine and image checks,
journal, branch, the isolated copy made by `git clone --no-local` in a helper container, the model
gateway), timed in this process from `start_run` to `Supervisor.run`, which is stopped there. The
baselines are a host `git clone --no-local` (with its checkout) and `git worktree add --detach` of the
same commit. Repositories are generated with `git fast-import` and cached under build/bench-repos: the
large-history shapes of issue 10 (full: 5k and 50k files; quick: 2k files), and a small-file one (20k files of
3 KB, the common shape; quick: 2k files).

A race's set-up (issue 19): 4 sessions with `RunRequest(seed=True)` planned and created one after the other, as
`harness race` does, then driven at once with 4 slots (`--slots 4`: with fewer, racers 3 and 4 would wait in the
queue for a whole run of racer 1 or 2, which is no part of a set-up), timed from the first plan to the last one
reaching its first iteration; "cold" removes the repository's seed (and its trees) first: the race makes them;
"warm" finds them made (a later race on the same repository). On Docker each racer's copy is an overlay of the
seed's tree of the base commit (runner/loop/workspace.py), so the race checks the files out once. Without the
seed, the same 4 set-ups are 4 full clones. Each set-up also counts the CPU time of the whole machine
(/proc/stat, after a sync), which says whether it waited or computed: the least time that CPU time allows on
this machine's cores is the floor any scheduling of the same work meets.

Goals: harness / worktree add <= 1.5x on the 50k-file repository (issue 10); a race of 4 (cold seed) <= 1.5x one
session's set-up on the small-file repository (issue 19).
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import BenchEnv, BenchError, Ratio, Result, bench_env, cores, git, machine_cpu, main, timed
from bench._repos import RepoShape, generate, pack_mb

NAME = "setup-large-repo"
FULL = (RepoShape(5_000, 500, 30), RepoShape(50_000, 5_000, 300))
QUICK = (RepoShape(2_000, 200, 10),)
SMALL_FILES = RepoShape(20_000, 1_000, 10, file_bytes=3_000)
SMALL_FILES_QUICK = RepoShape(2_000, 100, 1, file_bytes=3_000)
RACERS = 4


class _Stop(Exception):
    """Raised where the first iteration would start: set-up is over."""


@dataclass(frozen=True)
class SetUp:
    seconds: float  # from the first plan to the last first iteration
    copy: float  # the longest of the copies' making
    cpu: float  # CPU time the whole machine spent meanwhile (harness, engine, containers, kernel)
    iowait: float  # and the time its cores sat idle waiting on the disk


def _setups(env: BenchEnv, repo: Path, sessions: list[str], *, seed: bool) -> SetUp:
    """Create `sessions` one after the other (as a race creates its racers), then drive them all at once
    (threads) to their first iteration. One session: what `start_run` does."""
    from runner.backends.docker.engine import DockerBackend
    from runner.loop.supervisor import Supervisor
    from runner.loop.workspace import Workspace
    from runner.usecases.plan import RunRequest, plan_run
    from runner.usecases.sessions import create_planned, drive

    ends: dict[str, float] = {}
    copies: dict[str, float] = {}
    errors: list[BaseException] = []
    real_run, real_create = Supervisor.run, Workspace.create

    def stop_here(self: Supervisor, summary: object) -> object:
        ends[self.workspace.session] = time.perf_counter()
        raise _Stop

    def create(self: Workspace, **kwargs: object) -> None:
        begin = time.perf_counter()
        real_create(self, **kwargs)  # type: ignore[arg-type]
        copies[self.session] = time.perf_counter() - begin

    def one(session: str) -> None:
        try:
            drive(backend, repo, session)
        except _Stop:
            return
        except BaseException as exc:  # reported below, once every thread ended
            errors.append(exc)
            return
        errors.append(BenchError("the run went past set-up"))

    backend = DockerBackend()
    Supervisor.run = stop_here  # type: ignore[assignment,method-assign]
    Workspace.create = create  # type: ignore[method-assign]
    threads = [threading.Thread(target=one, args=(s,)) for s in sessions]
    try:
        os.sync()  # the last set-up's writes flushed before this one's CPU time is counted
        cpu, start = machine_cpu(), time.perf_counter()
        requests = [RunRequest(session=s, objective="benchmark", repo=repo, max_iterations=1, agent_cmd="true",
                               seed=seed, slots=len(sessions)) for s in sessions]  # fmt: skip
        for plan in [plan_run(backend, r) for r in requests]:
            create_planned(backend, plan)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        used = machine_cpu() - cpu
    finally:
        Supervisor.run, Workspace.create = real_run, real_create  # type: ignore[method-assign]
    for session in sessions:
        _drop_session(env, repo, session)
    if errors or len(ends) != len(sessions):
        raise BenchError(f"set-up failed: {errors[0] if errors else 'a session did not reach its first iteration'}")
    return SetUp(max(ends.values()) - start, max(copies.values()), used.busy, used.iowait)


def harness_setup(env: BenchEnv, repo: Path, session: str) -> SetUp:
    """One new session's set-up."""
    return _setups(env, repo, [session], seed=False)


def race_setup(env: BenchEnv, repo: Path, prefix: str, *, seed: bool = True, cold: bool = True) -> SetUp:
    """RACERS sessions set up at once; `cold`: no seed yet."""
    from runner.backends.docker.engine import DockerBackend
    from runner.base.paths import repo_key, seed_dir
    from runner.loop.seed import remove_seed
    from runner.loop.workspace import RunDir, Workspace
    from runner.record.models import Limits

    if cold:  # the trees' files are the agent uid's: removed by a helper, as `gc` does
        trees = Workspace(backend=DockerBackend(), run_dir=RunDir(env.tmp / "no-run"), image="harness-base:latest",
                          limits=Limits(), session="bench", repo_key=repo_key(repo))  # fmt: skip
        remove_seed(seed_dir(repo), remove_trees=trees.delete_trees)
    return _setups(env, repo, [f"{prefix}-{n}" for n in range(1, RACERS + 1)], seed=seed)


def _drop_session(env: BenchEnv, repo: Path, session: str) -> None:
    from runner.backends.docker.engine import DockerBackend
    from runner.base.paths import repo_key, run_dir
    from runner.loop.workspace import RunDir, Workspace
    from runner.record.models import Limits

    root = run_dir(repo, session)
    Workspace(backend=DockerBackend(), run_dir=RunDir(root), image="harness-base:latest", limits=Limits(),
              session=session, repo_key=repo_key(repo)).delete()  # fmt: skip
    git(repo, "update-ref", "-d", f"refs/heads/harness/{session}")


def worktree_add(env: BenchEnv, repo: Path) -> float:
    target = env.tmp / "worktree"
    seconds = timed(lambda: git(repo, "worktree", "add", "-q", "--detach", str(target), "main"))
    git(repo, "worktree", "remove", "--force", str(target))
    shutil.rmtree(target, ignore_errors=True)
    return seconds


def clone_no_local(env: BenchEnv, repo: Path) -> float:
    """A host `git clone --no-local` with its checkout: the copy the harness makes, without a container."""
    target = env.tmp / "clone"
    seconds = timed(lambda: git(env.tmp, "clone", "-q", "--no-local", "--no-hardlinks", str(repo), str(target)))
    shutil.rmtree(target)
    return seconds


def _baselines(result: Result, env: BenchEnv, repo: Path, label: str, repeat: int, goal: float | None) -> SetUp:
    """One session's set-up against both baselines; the set-up's medians."""
    worktree_add(env, repo)  # warm the page cache for all three
    setups: list[SetUp] = []
    clone: list[float] = []
    add: list[float] = []
    for n in range(repeat):
        add.append(worktree_add(env, repo))
        clone.append(clone_no_local(env, repo))
        setups.append(harness_setup(env, repo, f"bench-setup-{n}"))
    h = result.add(f"{label}: harness set-up (to the first iteration)", [s.seconds for s in setups])
    result.add(f"{label}: of which the clone helper (git clone --no-local + checkout)", [s.copy for s in setups])
    cpu = result.add(f"{label}: harness set-up, CPU time of the whole machine", [s.cpu for s in setups])
    c = result.add(f"{label}: git clone --no-local (host, with checkout)", clone)
    b = result.add(f"{label}: git worktree add", add)
    result.ratios.append(Ratio(f"{label}: harness / worktree add", h.median / b.median, goal, why=_WHY))
    result.ratios.append(Ratio(f"{label}: harness / clone --no-local", h.median / c.median))
    return SetUp(h.median, 0.0, cpu.median, 0.0)


def _race(result: Result, env: BenchEnv, repo: Path, label: str, repeat: int, one: SetUp) -> None:
    """A race of RACERS: from one seed (cold, warm) and, for scale, as RACERS full clones; with the CPU time
    each took, and the least time that CPU time allows on this machine's cores."""
    runs = {
        "cold": [race_setup(env, repo, f"bench-cold-{n}") for n in range(repeat)],
        "warm": [race_setup(env, repo, f"bench-warm-{n}", cold=False) for n in range(repeat)],
        "full": [race_setup(env, repo, f"bench-full-{n}", seed=False, cold=False) for n in range(repeat)],
    }
    what = {
        "cold": f"race of {RACERS}, copies from one seed made in the race (cold)",
        "warm": f"race of {RACERS}, copies from a seed already made (warm)",
        "full": f"race of {RACERS} without the seed ({RACERS} full clones)",
    }
    walls = {k: result.add(f"{label}: {what[k]}", [r.seconds for r in v]) for k, v in runs.items()}
    cpus = {k: result.add(f"{label}: {what[k]}, CPU time of the whole machine", [r.cpu for r in v])
            for k, v in runs.items()}  # fmt: skip
    iowait = statistics.median(r.iowait for r in runs["cold"])  # may be none at all: a fact, not a measure
    result.facts.append(f"{label}: race of {RACERS} (cold seed): the cores sat idle waiting on the disk for "
                        f"{iowait:.2f} s (median)")  # fmt: skip
    n = cores()
    cold = walls["cold"].median
    floor = cpus["cold"].median / n / one.seconds
    why = _WHY_RACE.format(racers=RACERS, cores=n, cpu=cpus["cold"].median / one.cpu, floor=floor)
    why += (_WHY_BOUND if floor > 1.5 else _WHY_IDLE).format(
        cores=n, idle=cold * n - cpus["cold"].median, iowait=iowait
    )
    result.ratios.append(Ratio(f"{label}: race of {RACERS} (cold seed) / one session's set-up",
                               cold / one.seconds, 1.5, why=why))  # fmt: skip
    result.ratios.append(Ratio(f"{label}: race of {RACERS} (warm seed) / one session's set-up",
                               walls["warm"].median / one.seconds))  # fmt: skip
    result.ratios.append(Ratio(f"{label}: race of {RACERS} without the seed / one session's set-up",
                               walls["full"].median / one.seconds))  # fmt: skip
    result.ratios.append(Ratio(f"{label}: race of {RACERS} (cold seed), CPU time / one session's",
                               cpus["cold"].median / one.cpu))  # fmt: skip
    result.ratios.append(Ratio(f"{label}: race of {RACERS} (cold seed), the least its CPU time allows on {n} "
                               "cores / one session's set-up", floor))  # fmt: skip


def measure(quick: bool) -> Result:
    import os

    shapes, small, repeat = (QUICK, SMALL_FILES_QUICK, 2) if quick else (FULL, SMALL_FILES, 3)
    result = Result(NAME, "Session set-up on a large repository, and a race's", quick)
    firsts: list[float] = []
    for shape in (*shapes, small):
        repo = generate(shape)
        size = "KB" if shape.file_bytes >= 1000 else "bytes"
        each = f"{shape.file_bytes / 1000:g} {size}" if size == "KB" else f"{shape.file_bytes} {size}"
        label = f"{shape.files:,} files of {each} / {shape.commits:,} commits"
        with bench_env("setup") as env:
            os.environ["HARNESS_JOURNAL_ROOT"] = str(env.tmp / "journals")  # nothing left in the cached repo
            try:
                goal = 1.5 if shape is shapes[-1] else None
                one = _baselines(result, env, repo, label, repeat, goal)
                if shape is small:
                    _race(result, env, repo, label, repeat, one)
                else:
                    firsts.append(one.seconds)
            finally:
                os.environ.pop("HARNESS_JOURNAL_ROOT", None)
        result.facts.append(f"{label}: {pack_mb(repo):.0f} MB of objects; {repeat} runs of each")
    if len(shapes) > 1:
        result.facts.append(
            f"growth from {shapes[0].files:,} to {shapes[-1].files:,} files: harness set-up "
            f"x{firsts[-1] / firsts[0]:.1f}, worktree add x{_worktree_growth(result, len(shapes)):.1f}"
        )
    result.notes.append(_WHY_LONG)
    return result


def _worktree_growth(result: Result, shapes: int) -> float:
    adds = [m.median for m in result.measures if m.title.endswith("git worktree add")][:shapes]
    return adds[-1] / adds[0]


_WHY = (
    "`git clone --no-local` sends every object of the history through pack-objects and index-pack (the whole "
    "history is copied and checked), where `worktree add` only checks out the tree"
)
_WHY_LONG = (
    "Why set-up cannot be a worktree: design §4 item 1 forbids mounting the user's `.git` (a worktree is a pointer "
    "into it: an agent writing `core.fsmonitor` or a hook runs code on the host at the user's next `git status`) "
    "and forbids a plain local clone (hard-linked objects the agent could corrupt). So a session's copy is a `git "
    "clone --no-local` made by a helper container as the agent uid, and it costs the transfer of the whole history "
    "(pack-objects on the source, index-pack with its SHA-1 checks on the copy) plus one container start. A race "
    "does not pay that per racer: its racers' copies borrow the objects of one seed per repository "
    "(runner/loop/seed.py; why it is safe: docs/security.md, attack row 31), cloned once by host git and mounted "
    "read-only, so what each racer pays is a container start and the checkout of its files."
)

_WHY_RACE = (
    "the race clones the history once (the seed) and checks the base's files out once (the seed's tree, which "
    "every racer's copy is an overlay of), but each racer still starts its own containers (the image check, the "
    "helpers that make its directories and its .git), and on {cores} cores that work is not free: the race's CPU "
    "time is {cpu:.1f}x one session's. Spread perfectly over {cores} cores it would take {floor:.2f}x one "
    "session's set-up (the last ratio). "
)
_WHY_BOUND = "So no ordering of this work meets the goal on this machine."
_WHY_IDLE = (
    "The rest, {idle:.1f} core-seconds of the race, the cores sat idle ({iowait:.1f} s of them waiting on the "
    "disk): the seed and then its tree are made one after the other by one racer, while the others wait for them"
)


if __name__ == "__main__":
    main(measure, __doc__)
