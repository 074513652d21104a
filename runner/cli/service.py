"""`harness service`: the user-level service that resumes, at login or boot, the sessions a reboot interrupted
(runner/usecases/service.py writes it, runner/usecases/autoresume.py is what it runs)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, ParamSpec

import typer

from runner.cli.options import JsonOpt

if TYPE_CHECKING:
    from runner.usecases.autoresume import AutoResumeReport
    from runner.usecases.service import ServiceInfo

P = ParamSpec("P")

service_app = typer.Typer(
    help="A user service (systemd, launchd) that resumes at login or boot the sessions a reboot interrupted.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def command(fn: Callable[P, int]) -> Callable[P, None]:
    """As runner.cli.app.command: the one exit-code map (render.guarded)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        from runner.cli import render

        raise typer.Exit(int(render.guarded(lambda: fn(*args, **kwargs))))

    return wrapper


@service_app.command("install")
@command
def install(as_json: JsonOpt = False) -> int:
    """Write the user service for this harness (a systemd user unit; a LaunchAgent on macOS) and enable it.

    At login (at boot with 'loginctl enable-linger'), it resumes each session whose supervisor the machine's
    going down stopped, detached, at most 3 times a day per session (docs/overnight.md)."""
    from runner.usecases.service import install as do_install

    return _info(do_install(), as_json)


@service_app.command("status")
@command
def status(as_json: JsonOpt = False) -> int:
    """Whether the user service is installed and enabled, and what it runs."""
    from runner.usecases.service import service_status

    return _info(service_status(), as_json)


@service_app.command("uninstall")
@command
def uninstall(as_json: JsonOpt = False) -> int:
    """Disable and remove the user service (the sessions it resumed run on)."""
    from runner.usecases.service import uninstall as do_uninstall

    return _info(do_uninstall(), as_json)


@service_app.command("run-once", hidden=True)
@command
def run_once(
    booted_at: Annotated[
        str | None,
        typer.Option(
            "--booted-at",
            help="Resume sessions whose supervisor died before this time (ISO 8601, or "
            "'now'; default: this machine's boot).",
        ),
    ] = None,
    budget: Annotated[int, typer.Option("--budget", help="Automatic resumes per session within --window.")] = 3,
    window: Annotated[str, typer.Option("--window", help="The budget's window (e.g. 24h).")] = "24h",
    engine_wait: Annotated[str, typer.Option("--engine-wait", help="How long to wait for the engine.")] = "5m",
    as_json: JsonOpt = False,
) -> int:
    """What the service runs: resume, detached, the sessions of this machine that its going down interrupted."""
    from runner.base.errors import ExitCode, UsageError
    from runner.base.limits import parse_duration
    from runner.usecases.autoresume import Budget, boot_time, resume_interrupted

    if budget < 1:
        raise UsageError("--budget must be at least 1")
    if booted_at is None:
        since = boot_time()
    elif booted_at == "now":
        since = datetime.now(UTC)
    else:
        try:
            since = datetime.fromisoformat(booted_at)
        except ValueError:
            raise UsageError(f"--booted-at: {booted_at!r} is not an ISO 8601 time or 'now'") from None
        since = since if since.tzinfo else since.astimezone()
    report = resume_interrupted(
        booted_at=since,
        budget=Budget(resumes=budget, window_seconds=parse_duration(window, option="--window")),
        engine_wait=parse_duration(engine_wait, option="--engine-wait"),
    )
    _report(report, as_json)
    return ExitCode.OK


def _info(info: ServiceInfo, as_json: bool) -> int:
    from runner.base.errors import ExitCode
    from runner.cli import render

    if as_json:
        render.print_json(info)
        return ExitCode.OK
    state = "not installed"
    if info.installed:
        state = "installed" + {True: ", enabled", False: ", not enabled", None: ""}[info.enabled]
    render.out.print(f"{info.manager} {state}: {info.path}", markup=False, highlight=False)
    if info.installed:
        render.out.print(f"runs: {' '.join(info.command)}", markup=False, highlight=False)
    if info.note:
        render.err.print(info.note, markup=False, highlight=False)
    return ExitCode.OK


def _report(report: AutoResumeReport, as_json: bool) -> None:
    from runner.cli import render

    if as_json:
        render.print_json(report)
        return
    for entry in report.sessions:
        pid = f" (pid {entry.pid})" if entry.pid else ""
        render.out.print(f"{entry.action} {entry.session_id}{pid} in {entry.repo}: {entry.reason}", markup=False,
                         highlight=False)  # fmt: skip
    if not report.sessions:
        render.err.print(
            f"no interrupted session to resume among {report.sessions_seen}", markup=False, highlight=False
        )
