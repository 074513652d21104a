"""The limit options `run` and `resume` share are declared once (runner/cli/options.py) and reach each
command as one LimitFlags, in the place and order its signature gives them."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated

import typer
from typer.testing import CliRunner

from runner.cli.options import NO_LIMIT_FLAGS, LimitFlags, with_limit_flags
from runner.usecases.options import LimitOptions


def test_the_flags_are_the_use_cases_limit_options_field_by_field() -> None:
    # --no-wait-on-limit is the command line's spelling of a wait of 0, not a limit of its own.
    flags = [f.name for f in fields(LimitFlags) if f.name != "no_wait_on_limit"]
    assert flags == [f.name for f in fields(LimitOptions)]
    assert LimitFlags(no_wait_on_limit=True).options() == LimitOptions(wait_on_limit="0")
    given = LimitFlags(cpus=2.0, memory="1g", max_cost=3.5)
    assert given.options() == LimitOptions(cpus=2.0, memory="1g", max_cost=3.5)


def test_a_command_gets_its_flags_as_one_limitflags_in_its_parameters_place() -> None:
    seen: list[tuple[str, LimitFlags, bool]] = []
    app = typer.Typer()

    @app.command()
    @with_limit_flags
    def cmd(
        name: Annotated[str, typer.Option("--name")],
        limits: LimitFlags = NO_LIMIT_FLAGS,
        last: Annotated[bool, typer.Option("--last")] = False,
    ) -> int:
        seen.append((name, limits, last))
        return 0

    runner = CliRunner()
    assert runner.invoke(app, ["--name", "n", "--cpus", "1.5", "--stuck-after", "4", "--last"]).exit_code == 0
    assert runner.invoke(app, ["--name", "m"]).exit_code == 0
    assert seen == [("n", LimitFlags(cpus=1.5, stuck_after=4), True), ("m", LimitFlags(), False)]
    shown = runner.invoke(app, ["--help"], terminal_width=200).output
    order = ["--name", *(f"--{f.name.replace('_', '-')}" for f in fields(LimitFlags)), "--last"]
    assert [shown.index(flag + " ") for flag in order] == sorted(shown.index(flag + " ") for flag in order)
