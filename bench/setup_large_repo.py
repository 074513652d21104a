"""Session set-up on a large repository against `git worktree add` of the same repository.

Set-up is everything `harness run` does before the first iteration (plan, engine and image checks,
journal, branch, the isolated copy made by `git clone --no-local` in a helper container, the model
gateway), timed in this process from `start_run` to `Supervisor.run`, which is stopped there. The
baseline is `git worktree add --detach` of the same commit. Repositories are generated with `git
fast-import` and cached under build/bench-repos (full: 5k and 50k files; quick: 2k files).

Goal (issue 10): harness / worktree add <= 1.5x on the 50k-file repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench._common import BenchEnv, BenchError, Ratio, Result, bench_env, git, main, timed
from bench._repos import RepoShape, generate, pack_mb

NAME = "setup-large-repo"
FULL = (RepoShape(5_000, 500, 30), RepoShape(50_000, 5_000, 300))
QUICK = (RepoShape(2_000, 200, 10),)


class _Stop(Exception):
    """Raised where the first iteration would start: set-up is over."""


def harness_setup(env: BenchEnv, repo: Path, session: str) -> tuple[float, float]:
    """(seconds to the first iteration, seconds of those in the clone helper) for one new session."""
    import time

    from runner.backends.docker.engine import DockerBackend
    from runner.loop.supervisor import Supervisor
    from runner.loop.workspace import Workspace
    from runner.usecases.plan import RunRequest
    from runner.usecases.sessions import start_run

    marks: dict[str, float] = {}
    real_run, real_create = Supervisor.run, Workspace.create

    def stop_here(self: Supervisor, summary: object) -> object:
        marks["end"] = time.perf_counter()
        raise _Stop

    def create(self: Workspace, **kwargs: object) -> None:
        start = time.perf_counter()
        real_create(self, **kwargs)  # type: ignore[arg-type]
        marks["clone"] = time.perf_counter() - start

    Supervisor.run = stop_here  # type: ignore[assignment,method-assign]
    Workspace.create = create  # type: ignore[method-assign]
    request = RunRequest(session=session, objective="benchmark", repo=repo, max_iterations=1, agent_cmd="true")
    try:
        start = time.perf_counter()
        try:
            start_run(DockerBackend(), request)
        except _Stop:
            pass
        else:
            raise BenchError("the run went past set-up")
    finally:
        Supervisor.run, Workspace.create = real_run, real_create  # type: ignore[method-assign]
    _drop_session(env, repo, session)
    return marks["end"] - start, marks["clone"]


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


def measure(quick: bool) -> Result:
    shapes, repeat = (QUICK, 2) if quick else (FULL, 3)
    result = Result(NAME, "Session set-up on a large repository", quick)
    ratios: list[float] = []
    for shape in shapes:
        repo = generate(shape)
        label = f"{shape.files:,} files / {shape.commits:,} commits"
        with bench_env("setup") as env:
            import os

            os.environ["HARNESS_JOURNAL_ROOT"] = str(env.tmp / "journals")  # nothing left in the cached repo
            try:
                worktree_add(env, repo)  # warm the page cache for both
                harness: list[float] = []
                clone: list[float] = []
                base: list[float] = []
                for n in range(repeat):
                    base.append(worktree_add(env, repo))
                    total, clone_s = harness_setup(env, repo, f"bench-setup-{n}")
                    harness.append(total)
                    clone.append(clone_s)
            finally:
                os.environ.pop("HARNESS_JOURNAL_ROOT", None)
        h = result.add(f"{label}: harness set-up (to the first iteration)", harness)
        result.add(f"{label}: of which the clone helper (git clone --no-local + checkout)", clone)
        b = result.add(f"{label}: git worktree add", base)
        ratios.append(h.median / b.median)
        goal = 1.5 if shape is shapes[-1] else None
        result.ratios.append(Ratio(f"{label}: harness / worktree add", h.median / b.median, goal, why=_WHY))
        result.facts.append(f"{label}: {pack_mb(repo):.0f} MB of objects; {repeat} runs of each")
    if len(shapes) > 1:
        first = [m.median for m in result.measures if "harness set-up" in m.title]
        result.facts.append(
            f"growth from {shapes[0].files:,} to {shapes[-1].files:,} files: harness set-up x{first[-1] / first[0]:.1f}"
            f", worktree add x{_worktree_growth(result):.1f}"
        )
    result.notes.append(_WHY_LONG)
    return result


def _worktree_growth(result: Result) -> float:
    adds = [m.median for m in result.measures if m.title.endswith("git worktree add")]
    return adds[-1] / adds[0]


_WHY = (
    "`git clone --no-local` sends every object of the history through pack-objects and index-pack (the whole "
    "history is copied and checked), where `worktree add` only checks out the tree"
)
_WHY_LONG = (
    "Why set-up cannot be a worktree: design §4 item 1 forbids mounting the user's `.git` (a worktree is a pointer "
    "into it: an agent writing `core.fsmonitor` or a hook runs code on the host at the user's next `git status`) "
    "and forbids a plain local clone (hard-linked objects the agent could corrupt). So the copy is a `git clone "
    "--no-local` made by a helper container as the agent uid, and it costs the transfer of the whole history "
    "(pack-objects on the source, index-pack with its SHA-1 checks on the copy) plus one container start. What "
    "would close the gap without breaking the rule: (a) a shallow or `--filter=blob:none`-style copy of the base "
    "only (the agent loses old history or needs lazy fetches, which have no source inside the sandbox); "
    "(b) a per-repository seed copy owned by the agent uid, cloned once with --no-local and refreshed with "
    "`git fetch`, from which each session clones with --local (hard links shared only between copies, never "
    "with the user's objects; a session could then tamper with a sibling's objects, which the bundle fsck on "
    "harvest still catches); (c) alternates onto a read-only mount of the user's object directory (no copy at "
    "all, but the agent then reads every object of the user's repository, including other branches)."
)


if __name__ == "__main__":
    main(measure, __doc__)
