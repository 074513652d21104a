"""The options several commands share are declared once (runner/cli/options.py) and reach each command as one
group (LimitFlags, SessionFlags), in the place and order its signature gives them; `run` and `race` hand
run_request one mapping, built by run_options."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any

import typer
from typer.testing import CliRunner

from runner.cli.options import (
    NO_LIMIT_FLAGS,
    NO_SESSION_FLAGS,
    LimitFlags,
    SessionFlags,
    run_options,
    with_flag_groups,
)
from runner.usecases.options import LimitOptions


def test_the_flags_are_the_use_cases_limit_options_field_by_field() -> None:
    # --no-wait-on-limit is the command line's spelling of a wait of 0, not a limit of its own.
    flags = [f.name for f in fields(LimitFlags) if f.name != "no_wait_on_limit"]
    assert flags == [f.name for f in fields(LimitOptions)]
    assert LimitFlags(no_wait_on_limit=True).options() == LimitOptions(wait_on_limit="0")
    given = LimitFlags(cpus=2.0, memory="1g", max_cost=3.5)
    assert given.options() == LimitOptions(cpus=2.0, memory="1g", max_cost=3.5)


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def test_a_command_gets_each_group_of_flags_as_one_value_in_its_parameters_place() -> None:
    seen: list[tuple[str, LimitFlags, bool, SessionFlags]] = []
    app = typer.Typer()

    @app.command()
    @with_flag_groups
    def cmd(
        name: Annotated[str, typer.Option("--name")],
        limits: LimitFlags = NO_LIMIT_FLAGS,
        last: Annotated[bool, typer.Option("--last")] = False,
        flags: SessionFlags = NO_SESSION_FLAGS,
    ) -> int:
        seen.append((name, limits, last, flags))
        return 0

    runner = CliRunner()
    given = ["--name", "n", "--cpus", "1.5", "--stuck-after", "4", "--last", "--setup", "make", "--allow-host", "a",
             "--allow-host", "b", "--no-keep-awake"]  # fmt: skip
    assert runner.invoke(app, given).exit_code == 0
    assert runner.invoke(app, ["--name", "m"]).exit_code == 0
    assert seen == [
        ("n", LimitFlags(cpus=1.5, stuck_after=4), True, SessionFlags(setup="make", allow_host=["a", "b"],
                                                                      keep_awake=False)),
        ("m", LimitFlags(), False, SessionFlags()),
    ]  # fmt: skip
    # --help lists them in that order, each group's fields in the place of its parameter.
    shown = [p.name for p in typer.main.get_command(app).params if not p.name.endswith("_completion")]
    assert shown == ["name", *(f.name for f in fields(LimitFlags)), "last", *(f.name for f in fields(SessionFlags))]


def _options(command: str) -> dict[str, Any]:
    from runner.cli.app import app

    found = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt: p for p in found.params for opt in [*p.opts, *p.secondary_opts]}


def test_race_takes_every_option_of_run_with_its_help_but_the_compatibility_flag() -> None:
    run, race = _options("run"), _options("race")
    assert set(run) - set(race) == {"--worktree"}
    # A racer's option means what it means for `run`: the same declaration (race's own wording only where
    # the option speaks of the racers: the objective, the agent, the image, the check, the environment).
    own = {"--session", "--objective", "--agent", "--agent-cmd", "--image", "--check", "--env", "--base", "--dry-run"}
    for opt in set(run) - own - {"--worktree"}:
        assert getattr(run[opt], "help", None) == getattr(race[opt], "help", None), opt


def test_run_options_names_every_option_as_the_settings_do() -> None:
    from runner.record.settings import RunOptions

    options = run_options(flags=NO_SESSION_FLAGS, limits=NO_LIMIT_FLAGS, max_iterations=None, agent=None,
                          agent_cmd=None, image=None, env=None, check=None, slots=None, protect=None,
                          no_protect=False)  # fmt: skip
    engine_flat = {"backend", "kubeconfig", "kube_context", "kube_namespace", "kube_pending_timeout",
                   "kube_image_pull_policy"}  # fmt: skip
    assert set(options) - engine_flat <= set(RunOptions.model_fields)
