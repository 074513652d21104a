"""`python -m runner` and the `harness` command.

`status` and `list` printing JSON are what scripts and dashboards poll: spelled exactly as below they
skip typer (its import is most of a short command's start-up) and run the very functions the typer
commands run, core and rendering alike. Anything else, including help, errors in the options and
other spellings of the same options, goes to typer. tests/unit/test_startup.py checks that both paths
print the same bytes and exit with the same code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

# The options the fast path knows, per command; each takes a value except --json.
_FAST = {"status": ("--session", "--repo", "--json"), "list": ("--json",)}


def fast_command(args: list[str]) -> Callable[[], int] | None:
    """The command for `args` when it is `status|list ... --json` with only the options above, each
    given once as `--option value`; otherwise None (typer parses it)."""
    if not args or args[0] not in _FAST or any(k.startswith("_HARNESS_COMPLETE") for k in os.environ):
        return None
    known, given, rest = _FAST[args[0]], dict[str, str](), args[1:]
    while rest:
        option, rest = rest[0], rest[1:]
        if option not in known or option in given:
            return None
        if option != "--json":
            if not rest or not rest[0] or rest[0].startswith("-"):
                return None
            given[option], rest = rest[0], rest[1:]
        else:
            given[option] = ""
    if "--json" not in given:
        return None
    if args[0] == "list":
        return _list
    repo, session = Path(given.get("--repo", ".")), given.get("--session")
    return lambda: _status(repo, session)


def _list() -> int:
    from runner.cli import render
    from runner.usecases.status import list_all

    return render.sessions(list_all(), True, with_repo=True)


def _status(repo: Path, session: str | None) -> int:
    from runner.cli import render
    from runner.usecases.status import StatusRequest, get_status, list_statuses

    if session is None:
        return render.sessions(list_statuses(repo), True)
    from runner.usecases.repository import is_race

    if is_race(repo, session):
        from runner.cli import race_render
        from runner.usecases.race_status import race_status

        return race_render.status(race_status(repo, session), True)
    return render.session_status(get_status(StatusRequest(repo=repo, session=session)), True)


def main() -> None:
    """Entry point of `python -m runner` (and, through pyproject's scripts, of `harness`)."""
    command = fast_command(sys.argv[1:])
    if command is None:
        from runner.cli.app import main as typer_main

        typer_main()
        return
    from runner.cli import render

    render.setup_logging()
    sys.exit(render.guarded(command))


if __name__ == "__main__":
    main()
