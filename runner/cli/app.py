"""The `harness` command line: parse options, call one core function, render its result.

Why one module of this size: every command's typer declaration, from which `--help` and docs/cli.md are
generated; a command only parses its options, calls one use case and renders the result (render.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec

import typer

from runner.base.errors import ExitCode
from runner.cli.options import (
    NO_LIMIT_FLAGS,
    NO_SESSION_FLAGS,
    CheckOpt,
    DetachOpt,
    DryRunOpt,
    JsonOpt,
    KeepAwakeOpt,
    LimitFlags,
    MaxIterOpt,
    NoProtectOpt,
    NotifyOnOpt,
    NotifyOpt,
    ProtectOpt,
    RepoOpt,
    SessionFlags,
    SessionOpt,
    SetupAllowOpt,
    SetupOpt,
    SlotsOpt,
    run_options,
    with_flag_groups,
)
from runner.cli.service import service_app

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Group

    from runner.usecases.detach import Detached
    from runner.usecases.plan import RunRequest

P = ParamSpec("P")

app = typer.Typer(
    name="harness",
    help="Run a coding agent unattended in a hardened container, on an isolated copy of a repository.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks can hold secrets; errors are one line
    rich_markup_mode=None,  # usage errors as plain lines, not boxes
    add_completion=True,  # typer's --install-completion / --show-completion (README)
    context_settings={"help_option_names": ["-h", "--help"]},
)
images_app = typer.Typer(
    help="Build the harness's container images.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.add_typer(images_app, name="images")
app.add_typer(service_app, name="service")

log = logging.getLogger("runner")


def command(fn: Callable[P, int]) -> Callable[P, None]:
    """One exit-code map: a command returns its code; faults become one line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        from runner.cli import render

        raise typer.Exit(int(render.guarded(lambda: fn(*args, **kwargs))))

    return wrapper


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only warnings to stderr.")] = False,
) -> None:
    from runner.cli import render

    render.setup_logging(verbose=verbose, quiet=quiet)


@app.command()
@command
@with_flag_groups
def run(
    session: SessionOpt,
    objective: Annotated[str | None, typer.Option("--objective", help="What the agent should achieve.")] = None,
    objective_file: Annotated[
        Path | None, typer.Option("--objective-file", help="Read the objective from a file.")
    ] = None,
    worktree: Annotated[
        bool, typer.Option("--worktree", help="Work on an isolated copy (always on; kept for compatibility).")
    ] = True,
    repo: RepoOpt = Path(),
    base: Annotated[str, typer.Option("--base", help="The commit the copy starts from.")] = "HEAD",
    max_iterations: MaxIterOpt = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Built-in agent: demo, claude-code, codex, aider.")
    ] = None,
    agent_cmd: Annotated[str | None, typer.Option("--agent-cmd", help="Run this command with sh -c instead.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Container image (default: the agent's).")] = None,
    limits: LimitFlags = NO_LIMIT_FLAGS,
    check: CheckOpt = None,
    protect: ProtectOpt = None,
    no_protect: NoProtectOpt = False,
    flags: SessionFlags = NO_SESSION_FLAGS,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="Pass this host variable into the container (value redacted from logs)."),
    ] = None,
    slots: SlotsOpt = None,
    detach: DetachOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> int:
    """Start a session: make an isolated copy and run the agent until it is done or a limit is reached.

    With --slots sessions of this machine already running, it waits in the queue first (harness queue).

    An option not given comes from HARNESS_<OPTION>, the repository's harness.toml or [tool.harness]
    in pyproject.toml, then $XDG_CONFIG_HOME/harness/config.toml (docs/configuration.md)."""
    from runner.backends import open_engine
    from runner.usecases.detach import detach_session
    from runner.usecases.plan import plan_run
    from runner.usecases.sessions import create_session, start_run

    del worktree  # every run works on its own copy
    request = _run_request(
        session=session, objective=objective, objective_file=objective_file, repo=repo, base=base, flags=flags,
        limits=limits, max_iterations=max_iterations, agent=agent, agent_cmd=agent_cmd, image=image, env=env,
        check=check, slots=slots, protect=protect, no_protect=no_protect,
    )  # fmt: skip
    engine = open_engine(request.backend)
    if dry_run:
        plan = plan_run(engine, request)
        _render(plan, as_json)
        return ExitCode.OK
    if detach:
        return _render_detached(detach_session(create_session(engine, request)), as_json)
    with graceful_interrupts() as stop_event:
        summary = start_run(engine, request, stop_event=stop_event)
    return _report(Path(summary.repo), summary.session_id, as_json)


def _run_request(
    *, session: str, objective: str | None, objective_file: Path | None, repo: Path, base: str, **given: Any
) -> RunRequest:
    """The request of `run`, and the one `race` makes its racers' from: the options given (run_options), merged
    with the environment, the settings files and the defaults."""
    from runner.usecases.plan import run_request

    return run_request(
        session=session, objective=objective, objective_file=objective_file, repo=repo, base=base,
        options=run_options(**given),
    )  # fmt: skip


@app.command()
@command
@with_flag_groups
def resume(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    max_iterations: MaxIterOpt = None,
    limits: LimitFlags = NO_LIMIT_FLAGS,
    check: CheckOpt = None,
    setup: SetupOpt = None,
    setup_allow_host: SetupAllowOpt = None,
    keep_awake: KeepAwakeOpt = None,
    slots: SlotsOpt = None,
    notify: NotifyOpt = None,
    notify_on: NotifyOnOpt = None,
    detach: DetachOpt = False,
    as_json: JsonOpt = False,
) -> int:
    """Continue a stopped, blocked or interrupted session at its next iteration.

    An end a --notify target has not taken yet (its supervisor died first, or the target failed) is told first; a
    session with nothing more to run (completed, every iteration used, --max-cost spent) only has it told
    (docs/overnight.md).

    Given a race: every racer that had not ended, and the race's supervisor; a finished race whose end a --notify
    target has not taken yet (its supervisor died first, or the target failed) only tells that end (docs/race.md).

    The setup runs again first when it failed, when its input files changed, or when --setup or
    --setup-allow-host gives it a new command or allowlist."""
    from runner.backends import open_engine
    from runner.usecases.detach import detach_session
    from runner.usecases.sessions import ResumeRequest, prepare_resume, resume_run, session_engine

    request = ResumeRequest(
        session=session, repo=repo, max_iterations=max_iterations, check=check, setup=setup,
        setup_allow_hosts=tuple(setup_allow_host) if setup_allow_host else None,
        limits=limits.options(), keep_awake=keep_awake, slots=slots, notify=tuple(notify) if notify else None,
        notify_on=tuple(notify_on) if notify_on else None,
    )  # fmt: skip
    if _is_race(repo, session):  # every racer that had not ended, and the race's supervisor
        from runner.record.models import RaceState
        from runner.usecases.race import RaceResume, detach_race, prepare_race_resume

        record = prepare_race_resume(RaceResume(repo=repo, race=session, resume=request))
        if detach and record.state is not RaceState.FINISHED:  # a finished race only tells its end owed: at once
            return _render_detached(detach_race(Path(record.repo), session), as_json)
        return _drive_race(Path(record.repo), session, as_json)
    engine = open_engine(session_engine(repo, session))
    if detach:
        prepared = prepare_resume(engine, request, tell_owed=True)
        if prepared is None:  # nothing more to run: only its end, still owed, was told (at once)
            return _report(repo, session, as_json)
        return _render_detached(detach_session(prepared), as_json)
    with graceful_interrupts() as stop_event:
        summary = resume_run(engine, request, stop_event=stop_event)
    return _report(Path(summary.repo), summary.session_id, as_json)


@app.command("_supervise", hidden=True)
@command
def supervise(session: SessionOpt, repo: RepoOpt = Path()) -> int:
    """Drive a session in this process (what --detach starts in the background)."""
    from runner.backends import open_engine
    from runner.usecases.sessions import drive, session_engine
    from runner.usecases.status import EXIT_FOR_STATE

    with graceful_interrupts() as stop_event:
        engine = open_engine(session_engine(repo, session))
        summary = drive(engine, repo.resolve(), session, stop_event=stop_event)
    return EXIT_FOR_STATE[summary.status]


@app.command()
@command
@with_flag_groups
def race(
    session: Annotated[str, typer.Option("--session", help="The race's id S (its racers: sessions S-1 ... S-N).")],
    objective: Annotated[str | None, typer.Option("--objective", help="What every racer should achieve.")] = None,
    objective_file: Annotated[
        Path | None, typer.Option("--objective-file", help="Read the objective from a file.")
    ] = None,
    agents: Annotated[
        str | None, typer.Option("--agents", help="One racer per agent, in this order: e.g. claude-code,codex,aider.")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="N racers of one agent (--agent or --agent-cmd).")] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="One model per racer, in turn: e.g. a,b,c (as --model for each).")
    ] = None,
    check: Annotated[
        str | None, typer.Option("--check", help="The command that judges the racers (sh -c, in each container).")
    ] = None,
    protect: ProtectOpt = None,
    no_protect: NoProtectOpt = False,
    judge: Annotated[
        str, typer.Option("--judge", help="first (default): the first racer whose check passes wins; all: every one.")
    ] = "first",
    first: Annotated[
        bool, typer.Option("--first", help="Stop the other racers at once when one wins (with --judge first).")
    ] = False,
    budget: Annotated[
        str,
        typer.Option(
            "--budget",
            help="How --max-cost counts: per-racer (default: each racer may spend it) or "
            "pooled (all racers together; docs/race.md gives the bound).",
        ),
    ] = "per-racer",
    repo: RepoOpt = Path(),
    base: Annotated[str, typer.Option("--base", help="The commit every racer's copy starts from.")] = "HEAD",
    max_iterations: MaxIterOpt = None,
    agent: Annotated[str | None, typer.Option("--agent", help="With --n: the built-in agent of every racer.")] = None,
    agent_cmd: Annotated[str | None, typer.Option("--agent-cmd", help="With --n: run this command (sh -c).")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Container image (default: each agent's).")] = None,
    limits: LimitFlags = NO_LIMIT_FLAGS,
    flags: SessionFlags = NO_SESSION_FLAGS,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="Pass this host variable into every racer's container.")
    ] = None,
    slots: SlotsOpt = None,
    detach: DetachOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan every racer and print the plans; create nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Best of N: race several agents (or one agent several times, or several models) on one objective, each
    racer an ordinary session S-k with its own copy and branch, judged by --check (docs/race.md). The options
    of `run` (--setup, --network, --model, ...) are given to every racer alike.

    'status', 'report', 'merge', 'discard', 'stop' and 'resume' given --session S act on the race: merge
    merges the winner, discard throws the other racers away (each undone with 'harness restore').

    --notify tells the race's end once (its winner, or why none); the racers send only the other events chosen."""
    from runner.backends import open_engine
    from runner.usecases.race import RaceRequest, create_race, detach_race, plan_race

    def listed(text: str | None) -> tuple[str, ...]:
        return tuple(part.strip() for part in (text or "").split(",") if part.strip())

    request = _run_request(
        session=session, objective=objective, objective_file=objective_file, repo=repo, base=base, flags=flags,
        limits=limits, max_iterations=max_iterations, agent=agent, agent_cmd=agent_cmd, image=image, env=env,
        check=check, slots=slots, protect=protect, no_protect=no_protect,
    )  # fmt: skip
    race_request = RaceRequest(
        base=request, agents=listed(agents), n=n, models=listed(models),
        agent_given=agent is not None or agent_cmd is not None, model_given=flags.model is not None,
        judge=judge, first=first, budget=budget,  # type: ignore[arg-type]  # checked by racer_requests
    )  # fmt: skip
    engine = open_engine(request.backend)
    if dry_run:
        from runner.cli import race_render

        return race_render.plan(plan_race(engine, race_request), as_json)
    record = create_race(engine, race_request)
    if detach:
        return _render_detached(detach_race(Path(record.repo), record.session_id), as_json)
    return _drive_race(Path(record.repo), record.session_id, as_json)


def _drive_race(repo: Path, race: str, as_json: bool) -> int:
    from runner.cli import race_render
    from runner.usecases.race import drive_race
    from runner.usecases.race_status import race_status

    with graceful_interrupts() as stop_event:
        drive_race(repo, race, stop_event=stop_event)
    return race_render.status(race_status(repo, race), as_json)


@app.command("_race", hidden=True)
@command
def race_supervise(session: SessionOpt, repo: RepoOpt = Path()) -> int:
    """Drive a race in this process (what race --detach and resume --detach start in the background)."""
    from runner.usecases.race import drive_race

    with graceful_interrupts() as stop_event:
        record = drive_race(repo.resolve(), session, stop_event=stop_event)
    return ExitCode.OK if record.winners else ExitCode.RUN_NEEDS_ATTENTION


def _render_detached(result: Detached, as_json: bool) -> int:
    from runner.cli import render

    if as_json:
        render.print_json(result)
    else:
        render.out.print(result.session_id)
        render.err.print(
            f"session {result.session_id} runs in the background (pid {result.pid}); "
            f"follow it with: harness logs --session {result.session_id} --follow"
        )
    return ExitCode.OK


@contextlib.contextmanager
def graceful_interrupts() -> Iterator[threading.Event]:
    """First Ctrl-C (or SIGTERM): stop the running container, record, end resumable. Second: at once."""
    from runner.loop.supervisor import StopEvent

    event = StopEvent()

    def handler(signum: int, frame: object) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.signum = signum  # SIGTERM (a shutdown) ends the run `interrupted`, for the service to resume
        event.set()
        sys.stderr.write("harness: stopping after the running container stops (Ctrl-C again to stop at once)\n")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _is_race(repo: Path, session: str) -> bool:
    from runner.usecases.repository import is_race

    return is_race(repo, session)


def _report(repo: Path, session: str, as_json: bool) -> int:
    from runner.cli import render

    if _is_race(repo, session):
        from runner.cli import race_render
        from runner.usecases.race_status import race_status

        return race_render.status(race_status(repo, session), as_json)
    from runner.usecases.status import StatusRequest, get_status

    return render.session_status(get_status(StatusRequest(repo=repo, session=session)), as_json)


def _render(result: BaseModel, as_json: bool) -> None:
    from runner.cli import render
    from runner.usecases.plan import RunPlan
    from runner.usecases.status import SessionStatus

    if as_json:
        render.print_json(result)
    elif isinstance(result, SessionStatus):
        render.status(result)
    elif isinstance(result, RunPlan):
        render.plan(result)


@app.command()
@command
def status(
    session: Annotated[str | None, typer.Option("--session", help="One session (default: all of this repo).")] = None,
    repo: RepoOpt = Path(),
    as_json: JsonOpt = False,
) -> int:
    """Show how a session (or every session of this repository) stands.

    Exit code: 0 completed, 20 running, 21 needs attention, 22 failed."""
    if session is not None:
        return _report(repo, session, as_json)
    return _list(repo, as_json)


@app.command("list")
@command
def list_(as_json: JsonOpt = False) -> int:
    """List every session on this machine (any repository) with its state, iterations and age."""
    from runner.cli import render
    from runner.usecases.status import list_all

    return render.sessions(list_all(), as_json, with_repo=True)


@app.command("queue")
@command
def queue_(
    move: Annotated[str | None, typer.Option("--move", metavar="SESSION", help="Move this queued session.")] = None,
    to: Annotated[int | None, typer.Option("--to", metavar="N", help="...to position N (from 1).")] = None,
    first: Annotated[bool, typer.Option("--first", help="...to the head of the queue (--to 1).")] = False,
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo", help="The moved session's repository, when sessions of that name are queued in several."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Show the machine-wide queue: the sessions that hold a slot, then those that wait for one, in order (a
    parked one, whose supervisor is gone, keeps its place until resume). --move reorders it."""
    from runner.base.errors import UsageError
    from runner.cli.queue_render import render_queue
    from runner.usecases.queue import MoveRequest, move_session, queue_view

    if move is None:
        if to is not None or first:
            raise UsageError("--to and --first say where --move SESSION goes")
        return render_queue(queue_view(), as_json)
    if (to is None) == (not first):
        raise UsageError("--move SESSION needs one of --to N or --first")
    return render_queue(move_session(MoveRequest(session=move, to=1 if first else to or 1, repo=repo)), as_json)


def _list(repo: Path, as_json: bool) -> int:
    from runner.cli import render
    from runner.usecases.status import list_statuses

    return render.sessions(list_statuses(repo), as_json)


@app.command()
@command
def gc(
    discarded_after: Annotated[
        str, typer.Option("--discarded-after", help="Expire discarded branch tips older than this (default 14d).")
    ] = "14d",
    as_json: JsonOpt = False,
) -> int:
    """Remove containers, copies and images that no live session owns (resumable copies are kept),
    discarded branch tips past --discarded-after, the shared seeds no copy borrows from (and a kept seed's
    trees no racer's copy lies over), and the repositories gone from disk from the index 'report --all' reads."""
    from runner.backends import open_engine
    from runner.base.limits import parse_duration
    from runner.cli import render
    from runner.usecases.gc import collect_garbage

    age = parse_duration(discarded_after, option="--discarded-after")
    result = collect_garbage(open_engine(), discarded_after_seconds=age)  # and each engine a copy names
    return render.emit(
        result,
        as_json,
        f"removed {len(result.containers)} containers, {len(result.copies)} copies, {len(result.images)} images, "
        f"{len(result.expired_refs)} discarded branch tips, {len(result.seeds)} unused seeds and "
        f"{len(result.trees)} unused trees; forgot "
        f"{len(result.forgotten_repos)} repositories gone from disk; kept the copies of {len(result.kept)} "
        "resumable sessions",
    )


@app.command()
@command
def stop(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    note: Annotated[str | None, typer.Option("--note", help="Why (recorded in control.json).")] = None,
    now: Annotated[bool, typer.Option("--now", help="Stop the running container now, not at the boundary.")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Ask a running session to stop at the end of its current iteration (or at once with --now)."""
    from runner.cli import render
    from runner.usecases.control import StopRequest, request_stop

    if _is_race(repo, session):
        from runner.usecases.race import stop_race

        results = stop_race(StopRequest(repo=repo, session=session, note=note, now=now))
        if as_json:
            render.print_json(results)
        for one in [] if as_json else results:
            render.out.print(f"stop requested for {one.session_id}: {one.message}", markup=False)
        return ExitCode.OK
    result = request_stop(StopRequest(repo=repo, session=session, note=note, now=now))
    return render.emit(result, as_json, f"stop requested for {session}: {result.message}")


@app.command()
@command
def note(
    text: Annotated[str, typer.Argument(help="The note for the agent's next prompt.")],
    session: SessionOpt,
    repo: RepoOpt = Path(),
    as_json: JsonOpt = False,
) -> int:
    """Add a note that the agent's next iteration prompt carries."""
    from runner.cli import render
    from runner.usecases.control import NoteRequest, add_note

    added = add_note(NoteRequest(repo=repo, session=session, text=text))
    return render.emit(added, as_json, f"note {added.id} queued for the next iteration of {session}")


@images_app.command("build")
@command
def images_build(
    name: Annotated[
        str,
        typer.Argument(
            help="The image to build: base, claude-code, codex or aider (default: base). With --from: "
            "the agent to add to that image (base: git, the relay and the agent's user, for --agent-cmd)."
        ),
    ] = "base",
    from_image: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="IMG",
            help="Derive from this local image (any, e.g. python:3.12-slim): "
            "tagged harness-derived/NAME:..., reused while IMG and the agent's image are unchanged.",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress on stderr; print only the image's tag.")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Build a harness image (its base first when needed), with the host's extra CA certificates.

    The build's progress goes to stderr; agent images fetch their CLI from npm or PyPI (docs/agents.md).
    With --from, the agent is added to an image of your own (docs/environments.md)."""
    from runner.backends import open_engine
    from runner.cli import render
    from runner.sandbox import derive, images

    if quiet:
        logging.getLogger("runner").setLevel(logging.WARNING)
    backend = open_engine()  # this machine's own, which keeps the images
    backend.check()
    if from_image is None:
        tag = images.build(backend, name)
        line = f"built {tag}"
    else:
        agent = derive.agent_for_image(name)
        tag = derive.derive(backend, from_image, agent)
        line = f"built {tag} ({from_image} + {agent})"
    return render.emit({"image": tag}, as_json, tag if quiet else line)


def main() -> None:
    """Entry point of the `harness` console script."""
    app(prog_name="harness")


@app.command()
@command
def logs(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    iteration: Annotated[int | None, typer.Option("--iteration", help="Which iteration (default: the latest).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing while the session runs.")] = False,
) -> int:
    """Print an iteration's output (escape sequences neutralised).

    Given a race's id S: each racer's, every line prefixed with the racer's id; with --follow, the racers'
    lines as they arrive, until the race ends."""
    from runner.usecases.logs import LogsRequest, read_logs

    for piece in read_logs(LogsRequest(repo=repo, session=session, iteration=iteration, follow=follow)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    return ExitCode.OK


@app.command()
@command
def diff(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    stat: Annotated[bool, typer.Option("--stat", help="Only the summary of changed files.")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Show the session's branch against its base, flagging paths that could run code on this machine."""
    from runner.base.output import neutralise
    from runner.cli import render
    from runner.usecases.merge import diff as make_diff
    from runner.usecases.repository import SessionRef

    result = make_diff(SessionRef(repo=repo, session=session), stat_only=stat)
    if as_json:
        render.print_json(result)
        return ExitCode.OK
    render.flagged_warning(result.findings)
    sys.stdout.write(neutralise(result.patch))
    return ExitCode.OK


@app.command()
@command
def merge(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    squash: Annotated[bool, typer.Option("--squash", help="One commit instead of a merge commit.")] = False,
    accept_flagged: Annotated[
        bool, typer.Option("--accept-flagged", help="Merge even though flagged paths changed (after review).")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Merge the session's branch into your current branch.

    Refused over uncommitted changes and, without --accept-flagged, when flagged paths changed (exit 13);
    always refused when it would replace a file git does not track in your tree or write the journal (exit 14).
    """
    from runner.cli import render
    from runner.usecases.merge import merge as do_merge
    from runner.usecases.repository import SessionRef

    if _is_race(repo, session):  # the race's one winner
        from runner.usecases.race_status import race_winner

        session = race_winner(repo, session)
    result = do_merge(SessionRef(repo=repo, session=session), squash=squash, accept_flagged=accept_flagged)
    how = "squashed" if squash else "merged"
    return render.emit(result, as_json, f"{how} {result.branch} into {result.into} ({result.merged_commit[:12]})")


@app.command()
@command
def discard(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    keep_journal: Annotated[
        bool, typer.Option("--keep-journal", help="Keep the session's journal (objective, iterations, logs).")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Throw the run away: its copy, its branch, its containers and its journal.

    The branch's tip is kept under refs/harness-discarded/SESSION/TIME until 'harness gc' expires it
    (14 days by default): 'harness restore --session SESSION' brings the branch back."""
    from runner.backends import open_engine
    from runner.cli import render
    from runner.usecases.discard import discard as do_discard
    from runner.usecases.repository import SessionRef
    from runner.usecases.sessions import session_engine

    if _is_race(repo, session):  # every racer but the winner(s)
        from runner.usecases.race_status import discard_race

        done = discard_race(repo, session)
        if as_json:
            render.print_json(done)
            return ExitCode.OK
        render.out.print(f"kept {', '.join(done.kept) or 'no winner'}", markup=False)
        for one in done.discarded:
            render.discarded(one, as_json=False)
        return ExitCode.OK
    ref = SessionRef(repo=repo, session=session)
    result = do_discard(open_engine(session_engine(repo, session)), ref, keep_journal=keep_journal)
    return render.discarded(result, as_json)


@app.command()
@command
def report(
    session: Annotated[str | None, typer.Option("--session", help="The session id (or --all).")] = None,
    all_sessions: Annotated[
        bool, typer.Option("--all", help="Every session on this machine, in every repository, on one page.")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="With --all: only sessions active in this last while (e.g. 12h).")
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo",
            help="The git repository (default: the current directory); with --all: only this "
            "repository's sessions (default: every repository's).",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="md (default), html (one self-contained page) or json.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file instead of stdout.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
) -> int:
    """Everything needed to decide about a session, on one page: flagged paths first, iterations, the check,
    the diff stat, notes given, and the exact commands to merge, resume or discard (and restore).

    With --all: every session of every repository on this machine (last active within --since; with --repo,
    of that repository only), each with its verdict, numbers, a chart of cost and outcome per iteration, and
    its diff (flagged paths first)."""
    from runner.base.errors import UsageError
    from runner.cli import render
    from runner.usecases.report import ReportRequest, build_report

    fmt = "json" if as_json else fmt
    if fmt not in {"md", "html", "json"}:
        raise UsageError(f"--format: {fmt!r} is not one of md, html, json")
    if all_sessions == (session is not None):
        raise UsageError("name one session with --session, or every session of this machine with --all")
    if since is not None and not all_sessions:
        raise UsageError("--since goes with --all")
    if session is None:
        return _morning(since, repo, fmt, output)
    repo = repo or Path()
    if _is_race(repo, session):  # the racers side by side
        from runner.cli import race_render
        from runner.usecases.race_status import race_status

        return race_render.report(race_status(repo, session), fmt, output)
    result = build_report(ReportRequest(repo=repo, session=session))
    return render.report(result, fmt, output)


def _morning(since: str | None, repo: Path | None, fmt: str, output: Path | None) -> int:
    from runner.base.limits import parse_duration
    from runner.cli import morning_render
    from runner.cli.pages import write_page
    from runner.usecases.morning import MorningRequest, build_morning

    seconds = parse_duration(since, option="--since") if since is not None else None
    page = build_morning(MorningRequest(since_seconds=seconds, repo=repo))
    return write_page(morning_render.render(page, fmt), output)


@app.command()
@command
def restore(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    ref: Annotated[
        str | None,
        typer.Option("--ref", help="Which discarded tip (a name from refs/harness-discarded/; default: newest)."),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Bring back the branch of a discarded session (refused while a branch of that name exists: exit 11)."""
    from runner.cli import render
    from runner.usecases.discard import restore as do_restore
    from runner.usecases.repository import SessionRef

    result = do_restore(SessionRef(repo=repo, session=session), which=ref)
    return render.emit(
        result, as_json, f"restored {result.branch} at {result.commit[:12]} (from {result.restored_from})"
    )


@app.command()
@command
def hud(
    session: SessionOpt,
    repo: RepoOpt = Path(),
    once: Annotated[bool, typer.Option("--once", help="Draw the dashboard once and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between redraws.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one frame's facts as JSON and exit.")] = False,
) -> int:
    """Live dashboard of a session: state, time, iterations, the agent container's CPU and memory,
    waiting notes, and the running agent's output. Leaves by itself when the run ends (or on Ctrl-C).

    Given a race's id S: the race (state, winners) and one row per racer (status, iterations, time, cost, the
    last check, protected and flagged paths), until the race ends."""
    from runner.cli import render

    if _is_race(repo, session):
        from runner.cli import race_render
        from runner.usecases.race_status import race_status

        race = race_status(repo, session)  # what `status --session S` shows, drawn as a dashboard
        if as_json:
            render.print_json(race)
            return ExitCode.OK

        def race_frame() -> Group:
            nonlocal race
            race = race_status(repo, session)
            return race_render.hud(race)

        return _watch(race_render.hud(race), race_frame, lambda: race.state == "running", once=once, interval=interval)

    from runner.backends import open_engine
    from runner.record.models import RunState
    from runner.usecases.hud import HudRequest, snapshot
    from runner.usecases.sessions import session_engine

    request = HudRequest(repo=repo, session=session)
    backend = open_engine(session_engine(repo, session))  # samples the agent container while it runs
    snap = snapshot(request, backend)
    if as_json:
        render.print_json(snap)
        return ExitCode.OK

    def frame() -> Group:
        nonlocal snap
        snap = snapshot(request, backend, previous=snap)
        return render.hud(snap)

    def going_on() -> bool:  # running, or waiting for a slot
        st = snap.status
        return st.status is RunState.RUNNING or (st.status is RunState.QUEUED and st.supervisor_alive)

    return _watch(render.hud(snap), frame, going_on, once=once, interval=interval)


def _watch(
    first: Group, frame: Callable[[], Group], going_on: Callable[[], bool], *, once: bool, interval: float
) -> int:
    """Draw `first`; while `going_on()`, redraw `frame()` every `interval` seconds (Ctrl-C leaves)."""
    import time

    from rich.live import Live

    from runner.cli import render

    if once or not going_on():
        render.out.print(first)
        return ExitCode.OK
    try:
        with Live(first, console=render.out, refresh_per_second=4, screen=False) as live:
            while going_on():
                time.sleep(max(0.2, interval))
                live.update(frame())
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK
