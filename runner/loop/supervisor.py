"""The iteration loop: prompt, agent container with a watchdog, report, harvest, journal.

Agent outcomes are data (recorded per iteration); only infrastructure faults raise. The summary
is saved after every iteration and in a `finally`, so a crash leaves a resumable journal.

Why one module of this size: the Supervisor is one object whose methods share its write lock, journal, copy
and stop event (the loop, an iteration, the setup phase, the check, the waits); its rules are pure functions
in decisions.py and the agent's container is built in agent_container.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from runner.agents import agent_report
from runner.backends.base import Backend, ContainerResult, ContainerSpec, ImageStore, Service
from runner.backends.watchdog import run_container
from runner.base.atomic import write_atomic
from runner.base.errors import HarnessError, JournalError, WorkspaceError
from runner.base.layout import WORKSPACE, with_merged_output
from runner.base.names import branch_for
from runner.base.output import CappedBuffer, CappedFile
from runner.base.paths import data_home
from runner.base.redact import RedactingSink, Redactor
from runner.gateway.services import RunNetwork, setup_network
from runner.loop.agent_container import agent_spec, setup_env
from runner.loop.decisions import (
    Decision,
    absorb,
    classify,
    decide,
    end_event,
    rate_limit,
    read_report,
    schedule_backoff,
    schedule_limit_wait,
)
from runner.loop.prompt import build_prompt
from runner.loop.setup import (
    CACHE_DIR,
    CACHE_ENV,
    ensure_cache,
    inputs_digest,
    setup_allow_rules,
    snapshot_key,
    snapshot_path,
)
from runner.loop.workspace import Workspace
from runner.record.gitops import HostGit
from runner.record.journal import SETUP_LOG, Journal
from runner.record.models import (
    CheckResult,
    ControlFile,
    EndNotice,
    FailureClass,
    IterationRecord,
    Note,
    NotifyEvent,
    Outcome,
    RunState,
    RunSummary,
    SetupRecord,
    StopReason,
    SupervisorInfo,
    UsageLimitFact,
    utcnow,
)
from runner.sandbox.container import bind, hardened_spec, labels

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
STOP_GRACE_SECONDS = 10.0
CHECK_TAIL_LINES = 40


class StopEvent(threading.Event):
    """The stop event of a command's signal handler: set by the first SIGINT or SIGTERM, and which one it was."""

    signum: int | None = None

    @property
    def terminated(self) -> bool:
        return self.signum == signal.SIGTERM


class Notifier(Protocol):
    """Tells the user's targets (--notify) what happened. The loop says when; the sender (built by the use case
    that drives the session, runner/usecases/notify.py) decides whether the event is selected, what is sent and
    how. It must return at once: delivery, retries and the journal's record happen in its own threads. An end is
    told at least once: what it owes (`owe`) is written with the end, and the driver tells it after the run."""

    def owe(self, event: NotifyEvent, summary: RunSummary) -> EndNotice | None: ...

    def send(self, event: NotifyEvent, summary: RunSummary) -> None: ...


class Supervisor:
    """Drives one session's iterations until a stop decision. One per session (journal lock)."""

    def __init__(
        self,
        *,
        backend: Backend,
        journal: Journal,
        workspace: Workspace,
        git: HostGit,
        secrets: dict[str, str] | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        network: RunNetwork | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.backend = backend
        self.notifier = notifier
        self.journal = journal
        self.workspace = workspace
        self.git = git
        self.secrets = secrets or {}
        self.network = network  # None only in unit tests on the fake backend
        # The real model keys never enter a container; redacting them anyway keeps a key that
        # leaks some other way (an upstream echoing it) out of every log.
        self.redactor = Redactor({**self.secrets, **(network.secrets if network else {})})
        # Set by the first Ctrl-C or SIGTERM: stop the running container, record, end resumable.
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        # Every change of the summary and every write of it holds this lock: the heartbeat thread
        # saves the same object while the loop changes it.
        self._write_lock = threading.RLock()

    def _save(self, summary: RunSummary) -> None:
        with self._write_lock:
            self.journal.write_summary(summary)

    def _notify(self, event: NotifyEvent, summary: RunSummary) -> None:
        """Hand a copy of the summary to the notifier: a failure to notify never changes the run."""
        if self.notifier is None:
            return
        with self._write_lock:
            snapshot = summary.model_copy(deep=True)
        try:
            self.notifier.send(event, snapshot)
        except Exception as exc:
            log.warning("session %s: the %s notification was not sent: %s", summary.session_id, event.value, exc)

    def _heartbeat(self, summary: RunSummary, done: threading.Event) -> None:
        # Proves to `status` that this supervisor lives, even during a long iteration.
        while not done.wait(self.heartbeat_seconds):
            with self._write_lock:
                if summary.supervisor is None:
                    return
                summary.supervisor.heartbeat_at = utcnow()
                try:
                    self.journal.write_summary(summary)
                except HarnessError as exc:
                    log.warning("heartbeat: %s", exc.message)

    def run(self, summary: RunSummary) -> RunSummary:
        """Iterate until done; the journal holds the result. Raises only infrastructure faults."""
        started = self.clock()
        summary.status = RunState.RUNNING
        summary.stop_reason = None
        summary.error = None
        summary.finished_at = None
        summary.end_notice = None  # a new end will owe its own (the driver told the last one first)
        summary.supervisor = SupervisorInfo(pid=os.getpid(), host=socket.gethostname())
        self._save(summary)
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(summary, beating), daemon=True)
        heart.start()
        try:
            last: IterationRecord | None = None
            self._resume_limit_wait(summary, started)
            ready = self._set_up(summary)
            while ready:
                control = self.journal.read_control()
                interrupted = self.stop_event.is_set()
                terminated = isinstance(self.stop_event, StopEvent) and self.stop_event.terminated
                with self._write_lock:
                    decision = decide(summary, control, self.clock() - started, last, interrupted=interrupted,
                                      terminated=terminated)  # fmt: skip
                    if decision is not None:
                        self._finish(summary, decision)
                if decision is not None:
                    break
                if last is not None and last.backoff_seconds:
                    if last.outcome is Outcome.USAGE_LIMIT:
                        self.workspace.close()  # a wait of hours holds no container (the next checkpoint starts one)
                    if self._wait_out(last.backoff_seconds) and last.outcome is Outcome.USAGE_LIMIT:
                        still = self._probe(summary, last)
                        with self._write_lock:
                            if still is not None:  # no room yet: wait again, without an iteration
                                wait = schedule_limit_wait(summary, still, self._remaining(summary, started),
                                                                 iteration=False)  # fmt: skip
                                self._save(summary)
                                last = last.model_copy(update={"backoff_seconds": wait})
                                continue
                            summary.usage_limit.until = None  # the window has reopened
                            self._save(summary)
                        last = None  # nothing to decide from a refusal that is over
                    else:
                        last = last.model_copy(update={"backoff_seconds": None})
                    continue  # decide again: a stop request or Ctrl-C may have come meanwhile
                last = self.iterate(summary, control, self._remaining(summary, started))
                with self._write_lock:
                    absorb(summary, last)
                    self._save(summary)
                if last.outcome is Outcome.USAGE_LIMIT and last.backoff_seconds:
                    self._notify(NotifyEvent.USAGE_LIMIT, summary)  # a wait begins
        except KeyboardInterrupt:
            with self._write_lock:
                self._finish(summary, Decision(RunState.INTERRUPTED, StopReason.INTERRUPTED), tell=False)
            self._save_after_fault(summary, beating)
            raise
        except HarnessError as exc:
            with self._write_lock:
                summary.error = exc.message
                self._finish(summary, Decision(RunState.INTERRUPTED, StopReason.INFRASTRUCTURE))
            self._save_after_fault(summary, beating)
            self._notify(end_event(summary), summary)
            raise
        beating.set()
        with self._write_lock:
            summary.supervisor = None
        self._save(summary)
        self._notify(end_event(summary), summary)
        return summary

    def _set_up(self, summary: RunSummary) -> bool:
        """Run the setup phase when it is due (never passed, or its inputs changed at the branch's head);
        False when it failed, and the run has ended `setup-failed`."""
        if summary.setup_command is None:
            return True
        digest = inputs_digest(self.git, summary.head_commit or summary.worktree.base_commit, summary.setup_inputs)
        last = summary.setup
        if last is not None and last.passed and last.inputs_digest == digest:
            return True
        record = self._run_setup(summary, digest, runs=last.runs + 1 if last is not None else 1)
        with self._write_lock:
            summary.setup = record
            if not record.passed:
                self._finish(summary, Decision(RunState.FAILED, StopReason.SETUP_FAILED))
            self._save(summary)
        return record.passed

    def _run_setup(self, summary: RunSummary, digest: str, *, runs: int) -> SetupRecord:
        """The setup in the copy: the agent's image, uid and hardening; its own egress proxy and the package
        cache; no model gateway, no key and no --env value.

        A session's first setup is first looked up in the cache: when an identical one (same image content,
        command, network and inputs) passed before, its outputs are restored instead of running it again;
        when this one passes, its outputs are kept there for the next."""
        assert summary.setup_command is not None  # noqa: S101 - only called with a setup
        path = self.journal.setup_log_path
        cache = ensure_cache(data_home())
        image_id = self.backend.image_id(summary.image) if isinstance(self.backend, ImageStore) else None
        key = snapshot_key(image_id, summary.setup_command, summary.setup_allow_hosts, digest) if image_id else None
        snapshot = snapshot_path(cache, key) if key else None
        first = runs == 1 and summary.iteration_count == 0  # nothing of the agent's is in the copy yet
        if first and snapshot is not None and snapshot.is_file():
            log.info("session %s: restoring the setup's outputs from %s", summary.session_id, snapshot.name)
            restore = f'tar -xf "{CACHE_DIR}/setups/{snapshot.name}" -C {WORKSPACE}'
            result = self._setup_container(summary, restore, cache, path, (), {})
            if result.exit_code == 0 and not result.timed_out and not result.cancelled:
                outputs, _ = self.workspace.outside_git()
                return self._setup_record(summary, digest, runs, result, outputs, restored=True)
            log.warning("session %s: restoring the setup failed: running it", summary.session_id)
        log.info("session %s: setting up: %s", summary.session_id, summary.setup_command)
        rules = setup_allow_rules(summary.setup_allow_hosts)
        with setup_network(self.workspace.dir.setup_net, rules, self.journal.setup_egress_log_path) as net:
            result = self._setup_container(summary, summary.setup_command, cache, path, *net)
        outputs, tracked = self.workspace.outside_git()
        record = self._setup_record(summary, digest, runs, result, outputs, restored=False)
        if record.passed and first and snapshot is not None and outputs and not tracked:
            # Only a setup that changed no tracked file is kept: its outputs are then all it did.
            name = f"{CACHE_DIR}/setups/{snapshot.name}"
            save = (f'mkdir -p {CACHE_DIR}/setups && cd {WORKSPACE} && printf \'%s\\n\' "$HARNESS_OUTPUTS" | '
                    f'tar -cf "{name}.tmp" -T - && mv "{name}.tmp" "{name}"')  # fmt: skip
            kept = self._setup_container(summary, save, cache, None, (), {"HARNESS_OUTPUTS": "\n".join(outputs)})
            if kept.exit_code != 0:
                log.warning(
                    "session %s: the setup's outputs could not be kept for the next session", summary.session_id
                )
        return record

    def _setup_container(
        self, summary: RunSummary, script: str, cache: Path, log_path: Path | None, services: tuple[Service, ...],
        env: dict[str, str],
    ) -> ContainerResult:  # fmt: skip
        """One container of the setup phase: the copy and the package cache writable, nothing else."""
        spec = hardened_spec(
            image=summary.image,
            command=with_merged_output(["sh", "-c", script]),
            services=services,
            limits=summary.limits,
            mounts=(
                *self.workspace.dir.copy_mounts(read_only=False),
                bind(cache, CACHE_DIR, read_only=False),
            ),
            labels=labels(summary.session_id, self.workspace.repo_key, "setup"),
            env={
                **CACHE_ENV,
                **env,
                **summary.container_env,
                "HARNESS_SESSION": summary.session_id,
                "HARNESS_PHASE": "setup",
            },
            runtime=summary.runtime,
        )
        timeout = summary.limits.iteration_timeout_seconds
        if log_path is None:
            return run_container(self.backend, spec, timeout=timeout, output=CappedBuffer())
        result, _ = self._run_captured(spec, log_path, summary, timeout)
        return result

    @staticmethod
    def _setup_record(
        summary: RunSummary, digest: str, runs: int, result: ContainerResult, outputs: list[str], *, restored: bool
    ) -> SetupRecord:
        passed = result.exit_code == 0 and not result.timed_out and not result.cancelled
        log.info("session %s: setup %s in %.1fs%s", summary.session_id, "passed" if passed else "failed",
                 result.duration_seconds, " (restored)" if restored else "")  # fmt: skip
        return SetupRecord(
            command=summary.setup_command or "",
            source=summary.setup_source or "flag",
            passed=passed,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            duration_seconds=round(result.duration_seconds, 3),
            log_file=SETUP_LOG,
            inputs_digest=digest,
            outputs=outputs,
            runs=runs,
            restored=restored,
        )

    def _save_after_fault(self, summary: RunSummary, beating: threading.Event) -> None:
        """Record how the run ended, if the journal still can: the first fault is the one reported
        (on a full disk the summary keeps its last good version, and `status` sees no supervisor)."""
        beating.set()
        with self._write_lock:
            summary.supervisor = None
        try:
            self._save(summary)
        except HarnessError as exc:
            log.warning("could not record the end of the run: %s", exc.message)

    def _wait_out(self, seconds: float) -> bool:
        """Sleep through a backoff, waking early for Ctrl-C or a stop request; True when it slept it all."""
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            if self.stop_event.wait(min(left, 1.0)):
                return False
            try:
                if self.journal.read_control().stop_requested:
                    return False
            except HarnessError:
                continue
        return True

    def _remaining(self, summary: RunSummary, started: float) -> float | None:
        """Seconds left of --max-time, None without one."""
        max_time = summary.limits.max_time_seconds
        return None if max_time is None else max_time - (self.clock() - started)

    def _probe(self, summary: RunSummary, last: IterationRecord) -> UsageLimitFact | None:
        """After a wait for a window whose reset was not given: whether it is still spent, asked with the
        provider's cheapest request rather than a whole iteration (None: room, or nothing to ask)."""
        fact = last.usage.usage_limit if last.usage is not None else None
        if self.network is None or summary.usage_limit.resets_at is not None or fact is None:
            return None
        if fact.provider not in {"anthropic", "openai"}:
            return None
        try:
            limit = self.network.probe("anthropic" if fact.provider == "anthropic" else "openai")
        except (TimeoutError, RuntimeError) as exc:
            log.warning("session %s: the usage-limit probe failed: %s", summary.session_id, exc)
            return None
        if limit is None:
            return None
        return UsageLimitFact(resets_at=limit.resets_at, window=limit.window, provider=fact.provider)

    def _resume_limit_wait(self, summary: RunSummary, started: float) -> None:
        """A wait for a usage window that a stopped or killed supervisor left: go on waiting for what is left of
        it, when the run may wait that long; otherwise try now (the next refusal decides again)."""
        until = summary.usage_limit.until
        if until is None:
            return
        left = (until - utcnow()).total_seconds()
        limits = summary.limits
        cap = limits.wait_on_limit_seconds
        if cap is None and limits.max_time_seconds is not None:
            cap = limits.max_time_seconds - (self.clock() - started)
        if left > 0 and (cap is None or left <= cap):
            log.info("session %s: still waiting for the usage limit to reset", summary.session_id)
            if not self._wait_out(left):
                return
        with self._write_lock:
            summary.usage_limit.until = None
            self._save(summary)

    def _finish(self, summary: RunSummary, decision: Decision, *, tell: bool = True) -> None:
        """End the run (the caller holds the write lock): with what the end owes the targets, so that the write
        that records the end records that too (`tell`: False for a second Ctrl-C, which tells nothing)."""
        summary.status = decision.state
        summary.stop_reason = decision.reason
        summary.stop_requested = decision.reason is StopReason.STOP_REQUESTED
        summary.finished_at = utcnow()
        summary.end_notice = None
        if tell and self.notifier is not None:
            try:
                summary.end_notice = self.notifier.owe(end_event(summary), summary)
            except Exception as exc:  # a failure to notify never changes the run
                log.warning("session %s: what its end owes its targets is unknown: %s", summary.session_id, exc)
        log.info("session %s ends: %s (%s)", summary.session_id, decision.state.value, decision.reason.value)

    def iterate(self, summary: RunSummary, control: ControlFile, remaining: float | None) -> IterationRecord:
        n = summary.iteration_count + 1
        started_at = utcnow()
        notes = [note for note in control.notes if note.consumed_at is None]
        self._write_prompt(summary, n, notes)
        timeout = summary.limits.iteration_timeout_seconds
        if remaining is not None:
            timeout = max(1.0, min(timeout, remaining))
        log.info("session %s: iteration %d of %d", summary.session_id, n, summary.max_iterations)
        if self.network is not None:
            self.network.gateway.begin_iteration(n)

        result, log_file = self._run_captured(self._agent_spec(summary, n), self.journal.log_path(n), summary, timeout)
        report, report_error = read_report(self.workspace.dir.outbox)
        outcome, failure = classify(result, report, report_error)
        usage = self.network.iteration_usage() if self.network else None
        agent = agent_report(summary.agent.name, self.journal.log_path(n))
        if usage is not None and usage.refused_budget and outcome is not Outcome.DONE:
            outcome, failure = Outcome.BUDGET, None  # the gateway refused: --max-cost is spent
        wait = None
        last_status = self.network.gateway.last_upstream_status() if self.network else None
        limited, retry_after = rate_limit(outcome, usage, last_status, agent)
        if usage is not None and usage.usage_limited and outcome not in {Outcome.DONE, Outcome.BUDGET}:
            # The provider said the subscription's window is spent: wait for it to reopen, whatever the agent
            # made of the refusal (it may have exited 0 with a report, or not at all).
            outcome, failure = Outcome.USAGE_LIMIT, None
            with self._write_lock:
                wait = schedule_limit_wait(summary, usage.usage_limit or UsageLimitFact(), remaining)
        elif limited:
            outcome, failure = Outcome.BACKOFF, None
            with self._write_lock:
                wait = schedule_backoff(summary, retry_after)
        redact = self.redactor.text

        record = IterationRecord(
            session_id=summary.session_id,
            iteration=n,
            outcome=outcome,
            summary=redact(report.summary) if report else "",
            next_action=redact(report.next) if report else "",
            should_stop=outcome in {Outcome.DONE, Outcome.BLOCKED},
            failure_class=failure,
            report_error=redact(report_error) if report_error else None,
            container_id=result.container_id,
            exit_code=result.exit_code,
            backend_error=redact(result.failure) if result.failure else None,
            timed_out=result.timed_out,
            oom_killed=result.oom_killed,
            disk_exceeded=result.disk_exceeded,
            duration_seconds=round(result.duration_seconds, 3),
            log_file=self.journal.log_path(n).name,
            log_bytes=log_file.written,
            log_truncated=log_file.truncated,
            notes_delivered=[note.id for note in notes],
            backoff_seconds=wait,
            usage=usage,
            agent_report=agent,
            limits=summary.limits,
            started_at=started_at,
        )
        if outcome is Outcome.DONE and summary.check_command:
            record.check = self._check(summary, n, timeout)
            if not record.check.passed:
                record.outcome, record.failure_class, record.should_stop = (
                    Outcome.CHECK_FAILED,
                    FailureClass.CHECK,
                    False,
                )
        if record.outcome is not Outcome.NOT_STARTED and result.ran:  # else the agent never ran: the copy is as it was
            self._harvest(summary, record)
        self.journal.write_iteration(record)
        if notes:
            self._consume_notes({note.id for note in notes}, n)
        return record

    def _harvest(self, summary: RunSummary, record: IterationRecord) -> None:
        last = summary.head_commit or summary.worktree.base_commit
        try:
            harvest = self.workspace.checkpoint_and_harvest(
                git=self.git,
                iteration=record.iteration,
                base=summary.worktree.base_commit,
                last=last,
                dest_ref=branch_for(summary.session_id),
                max_disk=summary.limits.max_disk_bytes,
                keep_out=summary.setup.outputs if summary.setup is not None else (),
            )
        except WorkspaceError as exc:
            # The work stays in the copy; the next harvest brings it. Recorded, never hidden.
            log.warning("harvest after iteration %d failed: %s", record.iteration, exc.message)
            record.harvest_error = exc.message
            return
        record.head_commit = harvest.head
        record.commits = harvest.commits
        record.diff_stat = harvest.diff_stat
        record.disk_bytes = harvest.disk_bytes
        limit = summary.limits.max_disk_bytes
        if harvest.over_limit or (limit is not None and harvest.disk_bytes is not None and harvest.disk_bytes > limit):
            record.disk_exceeded = True
        if harvest.over_limit:
            record.harvest_error = (
                f"the copy holds {harvest.disk_bytes} bytes, over --max-disk: not harvested "
                "(free space in the copy or raise --max-disk, then resume)"
            )

    def _run_captured(
        self, spec: ContainerSpec, path: Path, summary: RunSummary, timeout: float
    ) -> tuple[ContainerResult, CappedFile]:
        """Run a container with its output redacted and capped into `path` of the journal."""
        log_file = CappedFile(path, summary.limits.output_cap_bytes)
        sink = RedactingSink(self.redactor, log_file)
        try:
            result = run_container(
                self.backend,
                spec,
                timeout=timeout,
                output=sink,
                stop_grace=STOP_GRACE_SECONDS,
                cancel=self._cancel_requested,
            )
        finally:
            sink.flush()
            log_file.close()
        if log_file.error is not None:
            # The journal's disk is full or failing: stop before recording half the truth. The work
            # stays in the copy and is harvested by the next iteration after `resume`.
            raise JournalError(f"{path}: cannot write ({log_file.error.strerror or log_file.error})")
        return result, log_file

    def _check(self, summary: RunSummary, n: int, timeout: float) -> CheckResult:
        """Run --check on the copy as the agent left it, or with its protected paths as the base has them
        (runner/loop/protect.py): read-only, same sandbox, its own log."""
        assert summary.check_command is not None  # noqa: S101 - only called with a check
        patterns = summary.protected_paths
        if not patterns:
            return self._run_check(summary, n, timeout, self.workspace.dir.workspace)
        try:
            with self.workspace.check_view(git=self.git, base=summary.worktree.base_commit, patterns=patterns) as view:
                result = self._run_check(summary, n, timeout, view.path)
        except WorkspaceError as exc:
            # Never the copy as it is instead: a view the agent could make fail would switch protection off.
            log.warning("session %s: %s", summary.session_id, exc.message)
            why = f"the check did not run: {exc.message}"
            write_atomic(self.journal.check_log_path(n), why + "\n")
            return CheckResult(
                command=summary.check_command, passed=False, exit_code=None,
                log_file=self.journal.check_log_path(n).name, output_tail=why, protected=list(patterns),
            )  # fmt: skip
        return result.model_copy(
            update={"protected": list(patterns), "protected_changes": view.changes, "protected_changes_more": view.more}
        )

    def _run_check(self, summary: RunSummary, n: int, timeout: float, workspace: Path) -> CheckResult:
        """The check's container, with `workspace` (the copy, or its view) read-only at /workspace (and the seed
        the copy borrows its objects from, when it has one)."""
        assert summary.check_command is not None  # noqa: S101 - only called with a check
        path = self.journal.check_log_path(n)
        mounts = self.workspace.dir.copy_mounts(read_only=True)
        if workspace != self.workspace.dir.workspace:
            mounts = (bind(workspace, WORKSPACE, read_only=True), *mounts[1:])
        spec = hardened_spec(
            image=summary.image,
            command=with_merged_output(["sh", "-c", summary.check_command]),
            limits=summary.limits,
            mounts=mounts,
            labels=labels(summary.session_id, self.workspace.repo_key, "check"),
            env={
                **summary.container_env,
                **setup_env(summary),
                "HARNESS_SESSION": summary.session_id,
                "HARNESS_ITERATION": str(n),
                **self.secrets,
            },
            runtime=summary.runtime,
        )
        log.info("session %s: running the check: %s", summary.session_id, summary.check_command)
        result, _ = self._run_captured(spec, path, summary, timeout)
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8192))
            tail = "\n".join(handle.read().decode("utf-8", "replace").splitlines()[-CHECK_TAIL_LINES:])
        return CheckResult(
            command=summary.check_command,
            passed=result.exit_code == 0 and not result.timed_out and not result.cancelled,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            duration_seconds=round(result.duration_seconds, 3),
            log_file=path.name,
            output_tail=tail,
        )

    def _cancel_requested(self) -> bool:
        if self.stop_event.is_set():
            return True
        if self.network is not None and self.network.gateway.iteration_usage().refused_budget:
            return True  # --max-cost is spent: every further model call would be refused
        try:
            return self.journal.read_control().stop_mode == "now"
        except HarnessError:
            return False  # a control file being replaced: look again at the next poll

    def _consume_notes(self, ids: set[str], iteration: int) -> None:
        def mark(control: ControlFile) -> None:
            for note in control.notes:
                if note.id in ids and note.consumed_at is None:
                    note.consumed_at = utcnow()
                    note.consumed_iteration = iteration

        self.journal.update_control(mark)

    def _write_prompt(self, summary: RunSummary, n: int, notes: list[Note]) -> None:
        prompt = build_prompt(
            objective=summary.objective,
            session=summary.session_id,
            iteration=n,
            max_iterations=summary.max_iterations,
            branch=f"harness/{summary.session_id}",
            history=self.journal.iterations(),
            notes=notes,
            check=summary.check_command,
            protected=summary.protected_paths,
        )
        write_atomic(self.workspace.dir.prompt / "prompt.md", prompt)
        write_atomic(self.workspace.dir.prompt / "objective.md", summary.objective)

    def _agent_spec(self, summary: RunSummary, n: int) -> ContainerSpec:
        return agent_spec(
            summary=summary,
            iteration=n,
            run_dir=self.workspace.dir,
            repo_key=self.workspace.repo_key,
            secrets=self.secrets,
            wiring=self.network.wiring if self.network is not None else None,
        )
