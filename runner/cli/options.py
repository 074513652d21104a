"""The options that several commands share, each declared once: its flag, its help, its type.

`run` and `resume` take the twelve limit options as one LimitFlags parameter: typer reads a command's options
from its signature, so with_limit_flags shows it LimitFlags's fields in that parameter's place (same flags,
help and order in --help as if each command listed them).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from runner.usecases.options import LimitOptions

RepoOpt = Annotated[Path, typer.Option("--repo", help="The git repository (default: the current directory).")]
SessionOpt = Annotated[str, typer.Option("--session", help="The session id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
MaxIterOpt = Annotated[int | None, typer.Option("--max-iterations", help="Iterations allowed (resume: added).")]
CheckOpt = Annotated[
    str | None,
    typer.Option("--check", help="A command (sh -c, in the container) that must pass before 'done' completes the run."),
]
SlotsOpt = Annotated[
    int | None,
    typer.Option("--slots", help="Sessions of this machine that may run at once; this one waits in the queue until "
                 "one of them frees (default: from the cores and memory against this session's limits)."),
]  # fmt: skip
DetachOpt = Annotated[bool, typer.Option("--detach", help="Return at once; the run goes on in the background.")]
KeepAwakeOpt = Annotated[
    bool | None,
    typer.Option("--keep-awake/--no-keep-awake", help="Hold a sleep inhibitor while the session runs (default: on; "
                 "systemd-inhibit on Linux, caffeinate on macOS)."),
]  # fmt: skip
SetupOpt = Annotated[
    str | None,
    typer.Option("--setup", help="Run this command (sh -c) in the copy before the first iteration, with no model "
                 "gateway or key: install the project's dependencies (docs/environments.md)."),
]  # fmt: skip
SetupAllowOpt = Annotated[
    list[str] | None,
    typer.Option("--setup-allow-host", help="HOST[:PORT] or a preset (pypi, npm, crates, go) the setup may reach "
                 "(default: none)."),
]  # fmt: skip

NotifyOpt = Annotated[
    list[str] | None,
    typer.Option("--notify", help="Send a notification here: cmd:COMMAND (run on the host, the report's JSON on "
                 "stdin), https://URL (a POST of that JSON), slack+https://URL or ntfy+https://URL; repeatable "
                 "(docs/overnight.md). Resume: replaces the session's."),
]  # fmt: skip
NotifyOnOpt = Annotated[
    list[str] | None,
    typer.Option("--notify-on", help="Which events are notified: end (every end; the default), blocked, usage-limit, "
                 "budget, failures, or all; comma-separated or repeated."),
]  # fmt: skip


ProtectOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--protect",
        help="A path (pattern from the repository's top: * within a name, ** across "
        "directories) the check runs with as the base commit has it; repeatable (default with --check: "
        "the tests and the test runners' configuration, docs/overnight.md).",
    ),
]
NoProtectOpt = Annotated[
    bool, typer.Option("--no-protect", help="Run the check on the copy exactly as the agent left it.")
]


def protect_option(protect: list[str] | None, no_protect: bool) -> tuple[str, ...] | list[str]:
    """--protect / --no-protect as the settings take them: --no-protect is an empty list, which the settings keep
    as given (an empty tuple is "not given")."""
    if protect and no_protect:
        from runner.base.errors import UsageError

        raise UsageError("give --protect or --no-protect, not both")
    return [] if no_protect else tuple(protect or ())


@dataclasses.dataclass(frozen=True)
class LimitFlags:
    """The limit options of `run` and `resume` as the user typed them (None: not given)."""

    cpus: Annotated[float | None, typer.Option("--cpus", help="CPUs for the agent container (default 1).")] = None
    memory: Annotated[str | None, typer.Option("--memory", help="Memory cap, no swap (default 2g).")] = None
    pids: Annotated[int | None, typer.Option("--pids", help="Process cap (default 512).")] = None
    iteration_timeout: Annotated[
        str | None, typer.Option("--iteration-timeout", help="Wall clock per iteration (default 30m).")
    ] = None
    max_time: Annotated[str | None, typer.Option("--max-time", help="Wall clock for the whole run.")] = None
    max_disk: Annotated[
        str | None, typer.Option("--max-disk", help="Size the copy may grow to; the run stops past it (default 10g).")
    ] = None
    stuck_after: Annotated[
        int | None, typer.Option("--stuck-after", help="End as stuck after N iterations without a change (default 3).")
    ] = None
    backoff_base: Annotated[
        str | None,
        typer.Option("--backoff-base", help="First wait after a rate limit (default 60s; doubles, up to 30m)."),
    ] = None
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost", help="US dollars the session may spend on model calls; the gateway refuses past it."
        ),
    ] = None
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="Tokens the session may use on model calls (a subscriber's budget); the "
                     "gateway refuses past it."),
    ] = None  # fmt: skip
    wait_on_limit: Annotated[
        str | None,
        typer.Option("--wait-on-limit", help="Longest wait for a spent usage window to reopen (default: the rest of "
                     "--max-time); 0: never wait."),
    ] = None  # fmt: skip
    no_wait_on_limit: Annotated[
        bool, typer.Option("--no-wait-on-limit", help="End the run (resumable) at a usage limit instead of waiting.")
    ] = False

    def given(self) -> dict[str, Any]:
        """Option name -> value, as the settings name them (--no-wait-on-limit is a wait of 0)."""
        given = dataclasses.asdict(self)
        if given.pop("no_wait_on_limit"):
            if self.wait_on_limit is not None:
                from runner.base.errors import UsageError

                raise UsageError("give either --wait-on-limit or --no-wait-on-limit, not both")
            given["wait_on_limit"] = NO_WAIT
        return given

    def options(self) -> LimitOptions:
        from runner.usecases.options import LimitOptions

        return LimitOptions(**self.given())


NO_WAIT = "0"
NO_LIMIT_FLAGS = LimitFlags()


def with_limit_flags(fn: Callable[..., int]) -> Callable[..., int]:
    """`fn` with LimitFlags's fields, for typer, in place of its LimitFlags parameter; called with them, `fn`
    gets the LimitFlags they make."""
    own = inspect.signature(fn, eval_str=True)
    (name,) = [p.name for p in own.parameters.values() if p.annotation is LimitFlags]
    hints = typing.get_type_hints(LimitFlags, include_extras=True)
    flags = [
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=hints[f.name])
        for f in dataclasses.fields(LimitFlags)
    ]
    params = [q for p in own.parameters.values() for q in (flags if p.name == name else [p])]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> int:
        limits = LimitFlags(**{f.name: kwargs.pop(f.name, f.default) for f in flags})
        return fn(**kwargs, **{name: limits})

    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": own.return_annotation}
    return wrapper
