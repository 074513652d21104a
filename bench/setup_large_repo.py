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
`harness race` does, then driven at once, timed from the first plan to the last one reaching its first
iteration; "cold" removes the repository's seed first (the race makes it), "warm" finds it made (a later race
on the same repository). Without the seed, the same 4 set-ups are 4 full clones.

Goals: harness / worktree add <= 1.5x on the 50k-file repository (issue 10); a race of 4 (cold seed) <= 1.5x one
session's set-up on the small-file repository (issue 19).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from bench._common import BenchEnv, BenchError, Ratio, Result, bench_env, git, main, timed
from bench._repos import RepoShape, generate, pack_mb

NAME = "setup-large-repo"
FULL = (RepoShape(5_000, 500, 30), RepoShape(50_000, 5_000, 300))
QUICK = (RepoShape(2_000, 200, 10),)
SMALL_FILES = RepoShape(20_000, 1_000, 10, file_bytes=3_000)
SMALL_FILES_QUICK = RepoShape(2_000, 100, 1, file_bytes=3_000)
RACERS = 4


class _Stop(Exception):
    """Raised where the first iteration would start: set-up is over."""


def _setups(env: BenchEnv, repo: Path, sessions: list[str], *, seed: bool) -> tuple[float, float]:
    """Create `sessions` one after the other (as a race creates its racers), then drive them all at once
    (threads) to their first iteration: (seconds from the first plan to the last first iteration, seconds in
    the copy's making, the longest of them). One session: what `start_run` does."""
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
        start = time.perf_counter()
        requests = [RunRequest(session=s, objective="benchmark", repo=repo, max_iterations=1, agent_cmd="true",
                               seed=seed) for s in sessions]  # fmt: skip
        for plan in [plan_run(backend, r) for r in requests]:
            create_planned(backend, plan)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        Supervisor.run, Workspace.create = real_run, real_create  # type: ignore[method-assign]
    for session in sessions:
        _drop_session(env, repo, session)
    if errors or len(ends) != len(sessions):
        raise BenchError(f"set-up failed: {errors[0] if errors else 'a session did not reach its first iteration'}")
    return max(ends.values()) - start, max(copies.values())


def harness_setup(env: BenchEnv, repo: Path, session: str) -> tuple[float, float]:
    """(seconds to the first iteration, seconds of those in the clone helper) for one new session."""
    return _setups(env, repo, [session], seed=False)


def race_setup(env: BenchEnv, repo: Path, prefix: str, *, seed: bool = True, cold: bool = True) -> float:
    """Seconds for RACERS sessions to reach their first iteration, started at once; `cold`: no seed yet."""
    from runner.base.paths import seed_dir
    from runner.loop.seed import remove_seed

    if cold:
        remove_seed(seed_dir(repo))
    total, _ = _setups(env, repo, [f"{prefix}-{n}" for n in range(1, RACERS + 1)], seed=seed)
    return total


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


def _baselines(result: Result, env: BenchEnv, repo: Path, label: str, repeat: int, goal: float | None) -> float:
    """One session's set-up against both baselines; the set-up's median."""
    worktree_add(env, repo)  # warm the page cache for all three
    harness: list[float] = []
    copy: list[float] = []
    clone: list[float] = []
    add: list[float] = []
    for n in range(repeat):
        add.append(worktree_add(env, repo))
        clone.append(clone_no_local(env, repo))
        total, copy_s = harness_setup(env, repo, f"bench-setup-{n}")
        harness.append(total)
        copy.append(copy_s)
    h = result.add(f"{label}: harness set-up (to the first iteration)", harness)
    result.add(f"{label}: of which the clone helper (git clone --no-local + checkout)", copy)
    c = result.add(f"{label}: git clone --no-local (host, with checkout)", clone)
    b = result.add(f"{label}: git worktree add", add)
    result.ratios.append(Ratio(f"{label}: harness / worktree add", h.median / b.median, goal, why=_WHY))
    result.ratios.append(Ratio(f"{label}: harness / clone --no-local", h.median / c.median))
    return h.median


def _race(result: Result, env: BenchEnv, repo: Path, label: str, repeat: int, one: float) -> None:
    """A race of RACERS: from one seed (cold, warm) and, for scale, as RACERS full clones."""
    cold = [race_setup(env, repo, f"bench-cold-{n}") for n in range(repeat)]
    warm = [race_setup(env, repo, f"bench-warm-{n}", cold=False) for n in range(repeat)]
    full = [race_setup(env, repo, f"bench-full-{n}", seed=False, cold=False) for n in range(repeat)]
    c = result.add(f"{label}: race of {RACERS}, copies from one seed made in the race (cold)", cold)
    w = result.add(f"{label}: race of {RACERS}, copies from a seed already made (warm)", warm)
    f = result.add(f"{label}: race of {RACERS} without the seed ({RACERS} full clones)", full)
    result.ratios.append(Ratio(f"{label}: race of {RACERS} (cold seed) / one session's set-up", c.median / one, 1.5,
                               why=_WHY_RACE.format(slots=_slots())))  # fmt: skip
    result.ratios.append(Ratio(f"{label}: race of {RACERS} (warm seed) / one session's set-up", w.median / one))
    result.ratios.append(Ratio(f"{label}: race of {RACERS} without the seed / one session's set-up", f.median / one))


def _slots() -> int:
    """The sessions the machine-wide queue runs at once here, at the default limits (the racers' own)."""
    from runner.record.models import Limits
    from runner.record.queue import default_slots

    limits = Limits()
    return default_slots(cpus=limits.cpus, memory_bytes=limits.memory_bytes)


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
                    firsts.append(one)
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
    "the machine-wide queue lets as many sessions run at once as the cores hold at one session's --cpus "
    "({slots} here), so the 4 racers set up in waves of {slots}, and the first wave also makes the seed (one clone "
    "of the history, on the host, without a checkout): the warm race is the same without that clone. The "
    "denominator, one session's set-up, is itself faster than before: a copy now checks out with 4 "
    "workers"
)


if __name__ == "__main__":
    main(measure, __doc__)
