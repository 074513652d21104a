"""The options that several commands share, each declared once: its flag, its help, its type.

`run`, `resume` and `race` take the twelve limit options as one LimitFlags parameter, and `run` and `race` the
options of a session that a race gives every racer alike as one SessionFlags: typer reads a command's options
from its signature, so with_flag_groups shows it each group's fields in that parameter's place (same flags,
help and order in --help as if each command listed them). run_options builds, from them, the one mapping that
`run` and `race` hand to run_request.
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
                 "one of them frees (default: what the engine holds at this session's limits: this machine's cores and "
                 "memory, or the cluster's nodes). Resume: a --slots the session was given stays unless given again."),
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

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check everything and print the plan; create nothing.")]


@dataclasses.dataclass(frozen=True)
class SessionFlags:
    """The options of `run` that `race` gives every racer alike, as the user typed them (None: not given)."""

    runtime: Annotated[
        str | None,
        typer.Option("--runtime", help="Container runtime: runc (default), or runsc (gVisor) for a stronger boundary."),
    ] = None
    network: Annotated[
        str | None,
        typer.Option("--network", help="none (default: no network at all) or allowlist (only --allow-host targets)."),
    ] = None
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="HOST[:PORT] the agent may reach through the egress proxy (port 443)."),
    ] = None
    setup: SetupOpt = None
    setup_allow_host: SetupAllowOpt = None
    setup_input: Annotated[
        list[str] | None,
        typer.Option("--setup-input", help="A file whose change runs the setup again on resume (default: lockfiles)."),
    ] = None
    model: Annotated[str | None, typer.Option("--model", help="Model name passed to the agent.")] = None
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", help="Turns per iteration, for agents that take it.")
    ] = None
    auth: Annotated[
        str | None,
        typer.Option(
            "--auth",
            help="Which host credential serves the model calls: api-key, or subscription (a "
            "Claude token, a ChatGPT sign-in); default: an API key when there is one.",
        ),
    ] = None
    keep_awake: KeepAwakeOpt = None
    notify: NotifyOpt = None
    notify_on: NotifyOnOpt = None
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="Where containers run: docker (default) or kubernetes (docs/kubernetes.md)."),
    ] = None
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="Kubernetes: the kubeconfig file (default: $KUBECONFIG).")
    ] = None
    kube_context: Annotated[
        str | None, typer.Option("--kube-context", help="Kubernetes: the kubeconfig context (default: current).")
    ] = None
    kube_namespace: Annotated[
        str | None, typer.Option("--kube-namespace", help="Kubernetes: the namespace of the Jobs (default: default).")
    ] = None
    kube_image_pull_policy: Annotated[
        str | None,
        typer.Option("--kube-image-pull-policy", help="Kubernetes: IfNotPresent (default), Always or Never."),
    ] = None
    kube_pending_timeout: Annotated[
        str | None,
        typer.Option("--kube-pending-timeout", help="Kubernetes: how long a pod may wait for a node (default: 5m)."),
    ] = None


NO_SESSION_FLAGS = SessionFlags()


def run_options(
    *,
    flags: SessionFlags,
    limits: LimitFlags,
    max_iterations: int | None,
    agent: str | None,
    agent_cmd: str | None,
    image: str | None,
    env: list[str] | None,
    check: str | None,
    slots: int | None,
    protect: list[str] | None,
    no_protect: bool,
) -> dict[str, object]:
    """The options of `run` (and of every racer of `race`) as given, named as the settings name them: the one
    mapping that both commands hand to run_request (None or an empty tuple: not given)."""
    return {
        "max_iterations": max_iterations, "agent": agent, "agent_cmd": agent_cmd, "image": image,
        "runtime": flags.runtime, "env": tuple(env or ()), "check": check, "network": flags.network,
        "allow_hosts": tuple(flags.allow_host or ()), "model": flags.model, "auth": flags.auth,
        "max_turns": flags.max_turns, **limits.given(),
        "backend": flags.backend, "kubeconfig": flags.kubeconfig, "kube_context": flags.kube_context,
        "kube_namespace": flags.kube_namespace, "kube_pending_timeout": flags.kube_pending_timeout,
        "kube_image_pull_policy": flags.kube_image_pull_policy, "setup": flags.setup,
        "setup_allow_hosts": tuple(flags.setup_allow_host or ()), "setup_inputs": tuple(flags.setup_input or ()),
        "keep_awake": flags.keep_awake, "slots": slots, "protect": protect_option(protect, no_protect),
        "notify": tuple(flags.notify or ()), "notify_on": tuple(flags.notify_on or ()),
    }  # fmt: skip


FLAG_GROUPS: tuple[type[Any], ...] = (LimitFlags, SessionFlags)


def with_flag_groups(fn: Callable[..., int]) -> Callable[..., int]:
    """`fn` with each flag group's fields (FLAG_GROUPS), for typer, in place of its parameter of that group;
    called with them, `fn` gets the group they make."""
    own = inspect.signature(fn, eval_str=True)
    groups = {p.name: p.annotation for p in own.parameters.values() if p.annotation in FLAG_GROUPS}
    if not groups:
        raise TypeError(f"{fn.__name__} has no parameter of a flag group")
    flags: dict[str, list[inspect.Parameter]] = {}
    for name, group in groups.items():
        hints = typing.get_type_hints(group, include_extras=True)
        flags[name] = [
            inspect.Parameter(
                f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=hints[f.name]
            )
            for f in dataclasses.fields(group)
        ]
    params = [q for p in own.parameters.values() for q in flags.get(p.name, [p])]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> int:
        made = {
            name: group(**{f.name: kwargs.pop(f.name, f.default) for f in flags[name]})
            for name, group in groups.items()
        }
        return fn(**kwargs, **made)

    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": own.return_annotation}
    return wrapper
