"""Where an iteration's time goes, measured by wrapping the harness's own functions in this process.

No timing code lives in the harness: the benchmark wraps the supervisor, workspace, journal and
every Docker engine call (all of which go through `runner.backends.docker.api.call`) while it runs.
A renamed function fails the benchmark loudly (AttributeError), which the quick CI run catches.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

# What the engine call was for, from the description every `_call` carries.
_ENGINE = (
    ("create a container", "create"),
    ("attach to a container", "attach"),
    ("start a container", "start"),
    ("inspect a container", "inspect"),
    ("remove a container", "remove"),
    ("create an exec", "exec create"),
    ("inspect an exec", "exec inspect"),
)
HARVEST_TOTAL = "harvest, total (helper + bundle onto the branch + host git)"


class Phases:
    """Seconds per phase per iteration; `iteration` opens a new one."""

    def __init__(self) -> None:
        self.per_iteration: list[dict[str, float]] = []
        self._scope = "agent"

    def add(self, phase: str, seconds: float) -> None:
        if self.per_iteration:
            row = self.per_iteration[-1]
            row[phase] = row.get(phase, 0.0) + seconds

    def medians(self) -> list[tuple[str, float]]:
        names: dict[str, None] = {}
        for row in self.per_iteration:
            names.update(dict.fromkeys(row))
        table: dict[str, list[float]] = defaultdict(list)
        for row in self.per_iteration:
            for name in names:
                table[name].append(row.get(name, 0.0))
        return [(name, statistics.median(values)) for name, values in table.items()]

    def totals(self, phase: str) -> list[float]:
        return [row[phase] for row in self.per_iteration if phase in row]

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        saved, self._scope = self._scope, name
        try:
            yield
        finally:
            self._scope = saved


def _wrap(stack: ExitStack, owner: Any, attr: str, around: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    raw = owner.__dict__[attr]  # KeyError when the harness renamed it: fail loudly
    original = raw.__func__ if isinstance(raw, staticmethod) else raw
    wrapped = functools.wraps(original)(around(original))
    setattr(owner, attr, staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped)
    stack.callback(setattr, owner, attr, raw)


@contextmanager
def instrument() -> Iterator[Phases]:
    """Time the supervisor's phases while the block runs (restored afterwards)."""
    from runner.backends.docker import api as docker_api
    from runner.backends.docker import engine as docker_module
    from runner.loop import workspace as workspace_module
    from runner.loop.resident import ResidentHelper
    from runner.loop.supervisor import Supervisor
    from runner.loop.workspace import Workspace
    from runner.record.gitops import HostGit
    from runner.record.journal import Journal

    phases = Phases()

    def timing(phase: str | Callable[[], str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def around(fn: Callable[..., Any]) -> Callable[..., Any]:
            def inner(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    phases.add(phase if isinstance(phase, str) else phase(), time.perf_counter() - start)

            return inner

        return around

    def new_iteration(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            phases.per_iteration.append({})
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases.add("iteration, end to end", time.perf_counter() - start)

        return inner

    def helper(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            with phases.scope("helper"):
                return timing("helper container (checkpoint + bundle), total")(fn)(*args, **kwargs)

        return inner

    def engine(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(what: str, call: Callable[[], Any]) -> Any:
            name = next((short for prefix, short in _ENGINE if what.startswith(prefix)), "other engine calls")
            return timing(f"{phases._scope} container: {name}")(fn)(what, call)

        return inner

    with ExitStack() as stack:
        _wrap(stack, Supervisor, "iterate", new_iteration)
        _wrap(stack, Supervisor, "_write_prompt", timing("prompt"))
        _wrap(stack, Supervisor, "_harvest", timing(HARVEST_TOTAL))
        _wrap(stack, Workspace, "_helper", helper)
        _wrap(stack, Workspace, "_fetch_bundle", timing("bundle onto the branch, total (host: copy, fsck, install)"))
        _wrap(stack, workspace_module, "copy_untrusted", timing("bundle: defensive copy (host)"))
        _wrap(stack, HostGit, "fetch_bundle", timing("bundle: index-pack --strict, checks, install (host git)"))
        _wrap(stack, Journal, "write_iteration", timing("journal: iteration record"))
        _wrap(stack, Journal, "write_summary", timing("journal: summary"))
        _wrap(stack, docker_api, "call", engine)
        _wrap(stack, docker_module.DockerBackend, "_wait", timing(lambda: f"{phases._scope} container: wait"))
        _wrap(stack, docker_module.DockerBackend, "exec", timing("helper: checkpoint and sweep execs, total"))
        _wrap(stack, ResidentHelper, "_swept", timing("helper: sweep after the checkpoint (exec)"))
        yield phases
