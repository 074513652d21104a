"""Create, start, resume and drive a session in this process: the supervisor's lock, the copy, the
network, then the supervisor's iterations until the run ends, and the end told to its --notify targets.

Why one module of this size: what `resume` may change, and refuses, and what `drive` then does under the same
supervisor lock (the queue's slot, the copy, the end still owed to a target told first and the new end told last)
are one sequence; split, each half would have to be read with the other to see that nothing runs twice or is told
twice."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runner.backends.base import Backend
from runner.base import keepawake
from runner.base.errors import HarnessError, InvalidStateError, UsageError, WorkspaceError
from runner.base.fdlimit import raise_open_file_limit
from runner.base.keepawake import Inhibitor
from runner.base.names import branch_for, validate_session
from runner.base.paths import repo_key
from runner.base.seams import harness_env
from runner.gateway.services import RunNetwork
from runner.loop.decisions import end_event
from runner.loop.overlay_probe import overlay_refusal
from runner.loop.protect import default_protect
from runner.loop.setup import DEFAULT_INPUTS, allow_host_texts, setup_allow_rules
from runner.loop.supervisor import StopEvent, Supervisor
from runner.loop.workspace import RunDir, Workspace
from runner.record import queue
from runner.record.gitops import HostGit
from runner.record.journal import Journal, ensure_excluded
from runner.record.models import (
    AutoResume,
    ControlFile,
    EngineRef,
    KeepAwake,
    NotifyEvent,
    RunOwner,
    RunState,
    RunSummary,
    StopReason,
    SupervisorInfo,
    utcnow,
)
from runner.record.notify import load_targets, notify_info, parse_events, parse_target, save_targets
from runner.sandbox import images
from runner.sandbox.container import session_labels
from runner.sandbox.environment import prepare_environment
from runner.usecases.control import leave_queue
from runner.usecases.known_repos import remember_repo
from runner.usecases.notify import owed_notice, session_notifier, tell_session_end
from runner.usecases.options import LimitOptions, check_command, check_iterations, secret_values
from runner.usecases.plan import RunPlan, RunRequest, new_summary, plan_run
from runner.usecases.repository import open_session

log = logging.getLogger(__name__)


def session_engine(repo: Path, session: str) -> EngineRef:
    """The engine a session was created with, as its journal keeps it (runner.backends.open_engine opens it);
    the local engine for a session whose summary cannot be read."""
    with open_session(repo, session) as opened:
        journal = opened.journal
    try:
        return journal.read_summary().backend
    except HarnessError:
        return EngineRef()


def create_session(backend: Backend, request: RunRequest) -> RunSummary:
    """Create the session: journal, summary and branch (the copy is made when it is first driven)."""
    return create_planned(backend, plan_run(backend, request), notify=request.notify)


def create_planned(backend: Backend, plan: RunPlan, *, notify: tuple[str, ...] = ()) -> RunSummary:
    """Create the session `plan_run` planned (a race plans every racer before it creates any); `notify`: the
    --notify targets as given, which the plan shows only redacted."""
    if plan.environment is not None:
        prepare_environment(backend, plan.environment, repo=Path(plan.repo))
    else:
        images.ensure(backend, plan.image)
    images.ensure(backend, images.DEFAULT_IMAGE)  # the helpers' image
    if plan.lower is not None and (refused := overlay_refusal(backend, images.DEFAULT_IMAGE)) is not None:
        log.info("session %s: a copy of its own, not an overlay of the seed's tree: %s", plan.session, refused)
        plan = plan.model_copy(update={"lower": None})
    top = Path(plan.repo)
    journal = Journal.for_repo(top, plan.session)
    with HostGit(top) as git:
        if harness_env().journal_root is None:
            ensure_excluded(git.info().common_dir)
        journal.create(plan.objective)
        remember_repo(top)  # for `report --all`
        with journal.supervisor_lock():
            # The original tool writes control.json at creation and its readers expect it.
            journal.update_control(lambda control: None)
            summary = new_summary(plan)
            if plan.notify is not None:  # the targets as given stay out of the journal (runner/record/notify.py)
                save_targets(top, plan.session, notify, plan.notify.events, journal_dir=journal.dir)
            journal.write_summary(summary)
            git.run("update-ref", branch_for(plan.session), plan.base_commit, "")
    return summary


def start_run(backend: Backend, request: RunRequest, *, stop_event: threading.Event | None = None) -> RunSummary:
    """Create the session and run it to its end in this process."""
    summary = create_session(backend, request)
    return drive(backend, Path(summary.repo), summary.session_id, stop_event=stop_event)


@dataclass(frozen=True)
class ResumeRequest:
    session: str
    repo: Path = Path()
    max_iterations: int | None = None  # iterations to add
    check: str | None = None  # replaces the session's --check
    setup: str | None = None  # replaces the session's setup command (and runs it again)
    setup_allow_hosts: tuple[str, ...] | None = None  # replaces what the setup may reach
    limits: LimitOptions = field(default_factory=LimitOptions)
    keep_awake: bool | None = None  # --keep-awake / --no-keep-awake (None: as the session had it)
    slots: int | None = None  # replaces the session's cap of sessions at once (--slots)
    automatic: bool = False  # by the user service after a reboot (runner/usecases/autoresume.py), not by hand
    notify: tuple[str, ...] | None = None  # replaces the session's notification targets
    notify_on: tuple[str, ...] | None = None  # replaces the events they are sent


def prepare_resume(backend: Backend, request: ResumeRequest, *, tell_owed: bool = False) -> RunSummary | None:
    """Give a session that is not running its new limits and iterations, and clear what a dead
    supervisor left behind (its containers, a stop request), after telling the end it still owes its --notify
    targets (its supervisor died first, or a target failed). Refused while a supervisor runs, and when it has
    nothing more to run (completed, every iteration used, --max-cost spent); but with `tell_owed`, such a session
    whose end is still owed only has it told: None."""
    session = validate_session(request.session)
    with open_session(request.repo, session) as opened:
        top, journal = opened.top, opened.journal
        journal.require()
        backend.check()
        remember_repo(top)  # a session made before the index existed is named from now on
        with journal.supervisor_lock():
            summary = journal.read_summary()
            summary.limits = request.limits.apply(summary.limits)
            if request.check is not None:
                summary.check_command = check_command(request.check, option="--check")
                if summary.protect_source in {None, "default"}:  # the default follows the check it was made for
                    tree = opened.git.tree_paths(summary.worktree.base_commit)
                    summary.protected_paths = default_protect(summary.check_command, tree)
                    summary.protect_source = "default"
            _resume_setup(summary, request)
            if request.keep_awake is not None:
                summary.keep_awake = KeepAwake(enabled=request.keep_awake)
            if request.slots is not None:
                if request.slots < 1:
                    raise UsageError("--slots must be at least 1")
                summary.queue.slots = request.slots
            if not request.automatic:  # a resume by hand starts the service's restart budget afresh
                summary.auto_resume = AutoResume()
            notify = resume_notify(top, session, request)
            if request.max_iterations is not None:
                summary.max_iterations = summary.counted_iterations + check_iterations(request.max_iterations)
            refusal = _refusal(summary, request)
            if refusal is not None:
                if not tell_owed or not _owes(summary):
                    raise InvalidStateError(refusal)
                _tell_only(top, journal, notify)  # the session as it was, none of this resume's changes
                return None
            secret_values(summary.env_names)  # refuse now, not in a detached process
            images.ensure(backend, summary.image)
            images.ensure(backend, images.DEFAULT_IMAGE)  # the helpers' image
            backend.reap(session_labels(session, repo_key(top)))
            if notify is not None:
                _replace_targets(top, journal, summary, notify)
            journal.update_control(_clear_stop)
            summary.unchanged_iterations = 0
            summary.consecutive_failures = 0
            tell_session_end(journal, summary)  # the end still owed, first
            journal.write_summary(summary)
            return summary


def _refusal(summary: RunSummary, request: ResumeRequest) -> str | None:
    """Why the session has nothing more to run; None when it has."""
    session = summary.session_id
    if request.max_iterations is None and summary.status is RunState.COMPLETED:
        return f"session {session!r} is completed: pass --max-iterations N to give it N more iterations"
    if request.max_iterations is None and summary.counted_iterations >= summary.max_iterations:
        return (
            f"session {session!r} has used all {summary.max_iterations} iterations: "
            "pass --max-iterations N to add N more"
        )
    cap = summary.limits.max_cost_usd
    if cap is not None and summary.usage.cost_usd >= cap:
        return (
            f"session {session!r} has spent ${summary.usage.cost_usd:.4f} of its --max-cost ${cap:.2f}: "
            "pass a higher --max-cost to continue"
        )
    return None


def _owes(summary: RunSummary) -> bool:
    """Whether the session's last end is still owed to a --notify target."""
    return summary.end_notice is not None and bool(summary.end_notice.owed)


def _tell_only(top: Path, journal: Journal, notify: tuple[list[str], list[NotifyEvent]] | None) -> None:
    """Tell the end an ended session still owes, to the targets `resume --notify` gives instead when it does."""
    summary = journal.read_summary()
    if notify is not None:
        _replace_targets(top, journal, summary, notify)
    tell_session_end(journal, summary)


def _replace_targets(
    top: Path, journal: Journal, summary: RunSummary, notify: tuple[list[str], list[NotifyEvent]]
) -> None:
    """`resume --notify` / `--notify-on`: kept for this and every later supervisor; an end still owed is owed to the
    new targets instead (none: nothing is owed)."""
    targets, events = notify
    save_targets(top, summary.session_id, targets, events, journal_dir=journal.dir)
    summary.notify = notify_info(targets, events) if targets else None
    if _owes(summary):
        assert summary.end_notice is not None  # noqa: S101 - _owes says so
        summary.end_notice = owed_notice(summary.end_notice.event, len(targets), events)


def _resume_setup(summary: RunSummary, request: ResumeRequest) -> None:
    """A new setup command or allowlist from `resume`: the setup runs again at the next start."""
    if request.setup is not None:
        check_command(request.setup, option="--setup")
        summary.setup_command, summary.setup_source = request.setup, "flag"
        if not summary.setup_inputs:
            summary.setup_inputs = list(DEFAULT_INPUTS)
        summary.setup = None
    if request.setup_allow_hosts is not None:
        if summary.setup_command is None:
            raise UsageError("--setup-allow-host needs a setup (--setup CMD)")
        summary.setup_allow_hosts = allow_host_texts(setup_allow_rules(request.setup_allow_hosts))
        if summary.setup is not None and not summary.setup.passed:
            summary.setup = summary.setup.model_copy(update={"inputs_digest": None})


def resume_notify(top: Path, session: str, request: ResumeRequest) -> tuple[list[str], list[NotifyEvent]] | None:
    """New targets or events from `resume` of a session (or a race), checked (kept for this and every later
    supervisor once the resume is sure to go on); None when it gives neither."""
    if request.notify is None and request.notify_on is None:
        return None
    kept = load_targets(top, session)
    try:
        targets = list(request.notify) if request.notify is not None else (kept.targets if kept else [])
        for target in targets:
            parse_target(target)
        events: list[NotifyEvent] = (
            parse_events(request.notify_on) if request.notify_on is not None
            else (kept.events if kept else [NotifyEvent.END])
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(f"--notify: {exc}") from None
    if request.notify_on is not None and not targets:
        raise UsageError("--notify-on needs a target (--notify TARGET)")
    return targets, events


def resume_run(backend: Backend, request: ResumeRequest, *, stop_event: threading.Event | None = None) -> RunSummary:
    """Continue a session at its next iteration, on the same copy and branch, in this process (a session with
    nothing more to run whose end is still owed: only tell it)."""
    summary = prepare_resume(backend, request, tell_owed=True)
    if summary is None:
        with open_session(request.repo, request.session) as opened:
            return opened.journal.read_summary()
    return drive(backend, Path(summary.repo), summary.session_id, stop_event=stop_event)


def drive(backend: Backend, repo: Path, session: str, *, stop_event: threading.Event | None = None) -> RunSummary:
    """Take the session's supervisor lock, then a slot of the machine-wide queue (waiting for one costs no
    container), and iterate until the run ends."""
    raise_open_file_limit()
    with open_session(repo, session) as opened:
        git, journal = opened.git, opened.journal
        with journal.supervisor_lock():
            summary = journal.read_summary()
            # Who drives the session (the pid `status` and `stop` find), in the journal from the first look for a
            # slot on (waiting for one and making the copy can take a while); that first write also says whether
            # the session runs or waits, and `--detach` returns once it is made: `status` never shows `running`
            # for a session about to queue.
            summary.supervisor = SupervisorInfo(pid=os.getpid(), host=socket.gethostname())
            # Its place in the queue (kept if it had one) from the moment the lock is held, before `--detach`
            # returns: sessions detached one after another queue in that order.
            queue.enqueue(Path(summary.repo), session, journal.dir)
            awake = _keep_awake(summary)  # also while it waits for a slot: a sleeping machine starts nothing
            try:
                return _drive_locked(backend, summary, git, journal, stop_event)
            finally:
                _let_sleep(awake, summary, journal)


def _drive_locked(
    backend: Backend, summary: RunSummary, git: HostGit, journal: Journal, stop_event: threading.Event | None
) -> RunSummary:
    secrets = secret_values(summary.env_names)
    slot = _take_slot(backend, journal, summary, stop_event or threading.Event())
    if slot is None:
        return summary
    with slot:  # given back by _drive_in_slot before it waits for the end's notifications, else here
        return _drive_in_slot(backend, git, journal, summary, secrets, stop_event, slot)


def _take_slot(
    backend: Backend, journal: Journal, summary: RunSummary, stop_event: threading.Event
) -> queue.Slot | None:
    """A slot for the session, after waiting in the queue when all are taken; None when a stop request (the
    session leaves the queue: `stopped`) or Ctrl-C / SIGTERM (it keeps its place until `resume`) came first.
    Without --slots the cap is what the engine holds, asked once here (never at each look at the queue)."""
    cap = summary.queue.slots
    if cap is None:
        found = backend.capacity(cpus=summary.limits.cpus, memory_bytes=summary.limits.memory_bytes)
        summary.queue.default_slots, summary.queue.default_basis = found.sessions, found.basis
        log.debug("session %s: at most %d sessions at once by default (%s)", summary.session_id, found.sessions,
                  found.basis)  # fmt: skip
        cap = found.sessions

    def queued(ticket: queue.QueueTicket) -> None:
        summary.status = RunState.QUEUED
        summary.queue.queued_at = ticket.queued_at
        journal.write_summary(summary)
        log.info("session %s waits for one of %d slots (harness queue)", summary.session_id, cap)

    repo = Path(summary.repo)
    slot = queue.wait_for_slot(
        repo, summary.session_id, journal.dir, cap,
        stopped=lambda: stop_event.is_set() or journal.read_control().stop_requested,
        pause=stop_event.wait, on_queued=queued,
    )  # fmt: skip
    if slot is None:
        if stop_event.is_set():
            summary.supervisor = None
            if isinstance(stop_event, StopEvent) and stop_event.terminated:
                summary.stop_reason = StopReason.TERMINATED  # a shutdown: the user service resumes it
            journal.write_summary(summary)
        else:
            leave_queue(journal, summary)
        return None
    if summary.status is RunState.QUEUED:
        summary.status = RunState.RUNNING
    summary.queue.started_at, summary.queue.slot = utcnow(), slot.index
    journal.write_summary(summary)
    return slot


def _drive_in_slot(
    backend: Backend,
    git: HostGit,
    journal: Journal,
    summary: RunSummary,
    secrets: dict[str, str],
    stop_event: threading.Event | None,
    slot: queue.Slot,
) -> RunSummary:
    """The session's run in its slot. The slot is given back as soon as the session holds nothing a slot
    stands for (its containers, its network, the copy's helpers), before the wait for the notifications of
    its end still in flight: a slow receiver must not keep the next queued session from starting.

    The sleep inhibitor (held by `drive`) is kept through that wait: the notification is a send over the
    network from this host, which a machine gone to sleep would not make."""
    workspace = _workspace(backend, summary)
    notifier = session_notifier(journal, summary)
    try:
        _ensure_copy(workspace, git, summary, journal)
    except HarnessError as exc:
        summary.status = RunState.INTERRUPTED
        summary.stop_reason = StopReason.INFRASTRUCTURE
        summary.error = exc.message
        summary.supervisor = None
        summary.end_notice = notifier.owe(end_event(summary), summary) if notifier is not None else None
        journal.write_summary(summary)
        slot.release()
        _tell_end(journal, summary)
        raise
    network = RunNetwork(summary=summary, net_dir=workspace.dir.net, journal_dir=journal.dir, secrets=secrets)
    network.start()
    try:
        supervisor = Supervisor(
            backend=backend, journal=journal, workspace=workspace, git=git, secrets=secrets,
            stop_event=stop_event, network=network, notifier=notifier,
        )  # fmt: skip
        return supervisor.run(summary)
    except KeyboardInterrupt:
        notifier = None  # stop at once, as asked: nothing was sent for this end, nothing is waited for
        raise
    finally:
        workspace.close()
        network.stop()
        slot.release()  # the next queued session may start while this one's notifications are still sent
        if notifier is not None:
            notifier.close()  # the notifications still in flight, waited for (bounded)
            _tell_end(journal, summary)  # the end, waited for (bounded) and recorded as told


def _tell_end(journal: Journal, summary: RunSummary) -> None:
    """Tell the end the run owes its --notify targets, recorded (in run-summary.json and notifications.json) as
    told; never raises: a failure to notify changes no run (the end stays owed, to `resume`)."""
    try:
        tell_session_end(journal, summary)
    except HarnessError as exc:
        log.warning("session %s: its end was not told: %s", summary.session_id, exc.message)


def _keep_awake(summary: RunSummary) -> Inhibitor | None:
    """Hold the machine awake for this supervisor's life when the session asks for it; what came of it goes
    in the summary (not held: why), never a failure of the run."""
    wish = summary.keep_awake
    if not wish.enabled:
        summary.keep_awake = KeepAwake(enabled=False)
        return None
    held = keepawake.hold(who="harness", why=f"harness session {summary.session_id} runs unattended ({summary.repo})")
    summary.keep_awake = KeepAwake(
        enabled=True, held=held.inhibitor is not None, via=held.via, reason=held.reason,
        since=utcnow() if held.inhibitor is not None else None,
    )  # fmt: skip
    if held.inhibitor is None:
        # Not a line of every run's output: where no inhibitor exists (a server, a container, no session bus) it
        # would be noise before each result and each one-line error. `status` and the journal say it.
        log.debug("keep awake: not held: %s", held.reason)
    return held.inhibitor


def _let_sleep(inhibitor: Inhibitor | None, summary: RunSummary, journal: Journal) -> None:
    """Release the inhibitor at the end of the session's drive, and say so in the summary."""
    if inhibitor is None:
        return
    inhibitor.release()
    summary.keep_awake.held = False
    with contextlib.suppress(HarnessError):
        journal.write_summary(summary)


def _clear_stop(control: ControlFile) -> None:
    control.stop_requested = False
    control.stop_mode = None
    control.stop_note = None
    control.stop_requested_at = None


def _workspace(backend: Backend, summary: RunSummary) -> Workspace:
    return Workspace(
        backend=backend,
        run_dir=RunDir(
            Path(summary.run_dir),
            seed=Path(summary.worktree.seed) if summary.worktree.seed else None,
            lower=Path(summary.worktree.lower) if summary.worktree.lower else None,
        ),
        image=images.DEFAULT_IMAGE,  # the helpers need git and python3, whatever the agent's image holds
        run_image=summary.image,
        limits=summary.limits,
        session=summary.session_id,
        repo_key=repo_key(Path(summary.repo)),
        runtime=summary.runtime,
    )


def _ensure_copy(workspace: Workspace, git: HostGit, summary: RunSummary, journal: Journal) -> None:
    """Make the copy if it does not exist (a new run, or a lost copy rebuilt from the branch)."""
    # Only the copy's own directory is looked at: never anything the agent can write inside it.
    if workspace.dir.workspace.is_dir():
        return
    start = git.ref_commit(branch_for(summary.session_id)) or summary.worktree.base_commit
    with contextlib.suppress(WorkspaceError):
        workspace.delete()  # a half-made copy
    owner = RunOwner(
        session_id=summary.session_id, repo=summary.repo, journal_dir=str(journal.dir), backend=summary.backend
    )
    workspace.create(
        source_git_dir=git.info().common_dir, base_commit=start, branch=f"harness/{summary.session_id}", owner=owner
    )
    summary.head_commit = start
