"""The supervisor's rules, apart from the loop that applies them: whether a run ends and how, what an
iteration came to, how long to wait for a provider that said "later", and how an iteration's record moves
the run's counters. Pure functions of the journal's models (and the clock): the unit tests drive them directly.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from runner.backends.base import ContainerResult
from runner.base.layout import STATUS_FILE
from runner.base.saferead import UnsafeFileError, read_untrusted
from runner.record.models import (
    AgentReport,
    ControlFile,
    FailureClass,
    GatewayUsage,
    IterationRecord,
    NotifyEvent,
    Outcome,
    RunState,
    RunSummary,
    StatusReport,
    StopReason,
    UsageLimitFact,
    utcnow,
)

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 64 * 1024
FAILURE_OUTCOMES = frozenset(
    {Outcome.TIMED_OUT, Outcome.OOM_KILLED, Outcome.AGENT_ERROR, Outcome.NO_REPORT, Outcome.CHECK_FAILED,
     Outcome.NOT_STARTED}
)  # fmt: skip
LIMIT_JITTER_SECONDS = 15.0  # most added to a usage limit's reset, so that many sessions do not restart at once
RATE_LIMIT_STATUSES = frozenset({429, 529})  # 529: Anthropic's "overloaded"


@dataclass(frozen=True)
class Decision:
    state: RunState
    reason: StopReason


def decide(
    summary: RunSummary,
    control: ControlFile,
    elapsed: float,
    last: IterationRecord | None,
    *,
    interrupted: bool = False,
    terminated: bool = False,
) -> Decision | None:
    """Whether the run ends now, and how. Pure: the unit tests drive it directly."""
    limits = summary.limits
    if last is not None:
        if last.disk_exceeded:  # even a "done": its work was not harvested
            return Decision(RunState.STOPPED, StopReason.MAX_DISK)
        if last.outcome is Outcome.DONE:
            return Decision(RunState.COMPLETED, StopReason.AGENT_DONE)
        if last.outcome is Outcome.BLOCKED:
            return Decision(RunState.BLOCKED, StopReason.AGENT_BLOCKED)
        if summary.consecutive_failures >= limits.max_consecutive_failures:
            return Decision(RunState.FAILED, StopReason.REPEATED_FAILURES)
        if summary.unchanged_iterations >= limits.stuck_after:
            return Decision(RunState.STUCK, StopReason.NO_PROGRESS)
        if summary.backoff.consecutive > limits.max_backoffs:
            return Decision(RunState.STOPPED, StopReason.RATE_LIMITED)
        if last.outcome is Outcome.BUDGET:
            tokens = last.usage is not None and last.usage.refused_tokens > 0
            return Decision(RunState.STOPPED, StopReason.MAX_TOKENS if tokens else StopReason.MAX_COST)
        if last.outcome is Outcome.USAGE_LIMIT and last.backoff_seconds is None and summary.usage_limit.until is None:
            return Decision(RunState.STOPPED, StopReason.USAGE_LIMIT)  # it reopens later than the run may wait
    if limits.max_cost_usd is not None and summary.usage.cost_usd >= limits.max_cost_usd:
        return Decision(RunState.STOPPED, StopReason.MAX_COST)
    if limits.max_tokens is not None and summary.usage.budget_tokens >= limits.max_tokens:
        return Decision(RunState.STOPPED, StopReason.MAX_TOKENS)
    if interrupted:  # SIGTERM is the system's (a shutdown), SIGINT the user's
        return (
            Decision(RunState.INTERRUPTED, StopReason.TERMINATED)
            if terminated
            else Decision(RunState.STOPPED, StopReason.INTERRUPTED)
        )
    if control.stop_requested:
        return Decision(RunState.STOPPED, StopReason.STOP_REQUESTED)
    if summary.counted_iterations >= summary.max_iterations:
        return Decision(RunState.STOPPED, StopReason.MAX_ITERATIONS)
    max_time = summary.limits.max_time_seconds
    if max_time is not None and elapsed >= max_time:
        return Decision(RunState.STOPPED, StopReason.MAX_TIME)
    return None


def end_event(summary: RunSummary) -> NotifyEvent:
    """The notification of a run that has ended: the most telling event its end is (`end` when none is)."""
    if summary.status is RunState.BLOCKED:
        return NotifyEvent.BLOCKED
    if summary.stop_reason in {StopReason.MAX_COST, StopReason.MAX_TOKENS}:
        return NotifyEvent.BUDGET
    if summary.stop_reason is StopReason.USAGE_LIMIT:
        return NotifyEvent.USAGE_LIMIT
    if summary.status in {RunState.FAILED, RunState.STUCK}:
        return NotifyEvent.FAILURES
    return NotifyEvent.END


def classify(
    result: ContainerResult, report: StatusReport | None, report_error: str | None
) -> tuple[Outcome, FailureClass | None]:
    """The outcome of one iteration from how the container ended and what the agent reported."""
    if result.failure is not None:
        return Outcome.NOT_STARTED, FailureClass.NOT_STARTED
    if result.cancelled:
        return Outcome.INTERRUPTED, FailureClass.INTERRUPTED
    if result.timed_out:
        return Outcome.TIMED_OUT, FailureClass.TIMEOUT
    if result.disk_exceeded:
        return Outcome.DISK_EXCEEDED, FailureClass.DISK
    if result.oom_killed:
        return Outcome.OOM_KILLED, FailureClass.OOM
    if result.exit_code != 0:
        return Outcome.AGENT_ERROR, FailureClass.EXIT_NONZERO
    if report is None:
        missing = report_error is None or "does not exist" in report_error
        return Outcome.NO_REPORT, FailureClass.MISSING_REPORT if missing else FailureClass.INVALID_REPORT
    return Outcome(report.state), None


def rate_limit(
    outcome: Outcome, usage: GatewayUsage | None, last_status: int | None, report: AgentReport | None
) -> tuple[bool, float | None]:
    """(rate limited, the wait the provider asked for) from structured facts only: what the gateway
    saw last from the upstream, then the agent's own structured events. Never from free text."""
    if outcome not in {Outcome.AGENT_ERROR, Outcome.NO_REPORT}:
        return False, None
    if last_status in RATE_LIMIT_STATUSES:
        return True, usage.retry_after_seconds if usage else None
    if report is not None and report.rate_limited:
        return True, report.retry_after_seconds
    return False, None


def read_report(outbox: Path) -> tuple[StatusReport | None, str | None]:
    """The agent's status report, read as untrusted data; (None, why) when unusable."""
    name = Path(STATUS_FILE).name
    try:
        raw = read_untrusted(outbox, name, max_bytes=MAX_REPORT_BYTES)
        return StatusReport.model_validate(json.loads(raw.decode("utf-8"))), None
    except UnsafeFileError as exc:
        return None, str(exc)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"status file is not valid JSON: {exc}"
    except ValidationError as exc:
        err = exc.errors()[0]
        return None, f"status report rejected: {'.'.join(map(str, err['loc']))}: {err['msg']}"


def schedule_limit_wait(
    summary: RunSummary, fact: UsageLimitFact, remaining: float | None, *, iteration: bool = True
) -> float | None:
    """The wait for a spent usage window: until its reset and a little jitter, or (no reset given) a bounded
    backoff; None when that is longer than --wait-on-limit (default: the rest of --max-time) allows.
    Recorded in the summary, so that a restarted supervisor goes on waiting."""
    state, limits = summary.usage_limit, summary.limits
    state.total += 1 if iteration else 0  # a probe's answer is not an iteration
    state.resets_at, state.window = fact.resets_at, fact.window
    now = utcnow()
    if fact.resets_at is not None:
        state.probes = 0
        wait = max(1.0, (fact.resets_at - now).total_seconds())
        wait += random.uniform(0.0, min(LIMIT_JITTER_SECONDS, wait * 0.05))  # noqa: S311 - spreads the restarts
    else:
        state.probes += 1
        wait = float(min(limits.backoff_base_seconds * 2.0 ** (state.probes - 1), limits.backoff_max_seconds))
    cap = limits.wait_on_limit_seconds if limits.wait_on_limit_seconds is not None else remaining
    if cap is not None and wait > cap:
        state.until = None
        log.warning("session %s: the %s usage limit reopens later than the run may wait: stopping",
                    summary.session_id, fact.window or "provider's")  # fmt: skip
        return None
    state.until = now + timedelta(seconds=wait)
    state.total_wait_seconds += wait
    log.warning("session %s: usage limit (%s window): waiting until %s", summary.session_id,
                fact.window or "unnamed", state.until.isoformat(timespec="seconds"))  # fmt: skip
    return wait


def schedule_backoff(summary: RunSummary, retry_after: float | None = None) -> float:
    """The provider's own Retry-After when it gave one (a usage limit resets at a known time),
    else an exponential, bounded wait; recorded in the summary."""
    state = summary.backoff
    state.consecutive += 1
    state.total += 1
    limits = summary.limits
    wait = float(min(limits.backoff_base_seconds * 2.0 ** (state.consecutive - 1), limits.backoff_max_seconds))
    if retry_after is not None:
        wait = max(1.0, retry_after)
    state.last_wait_seconds = wait
    state.total_wait_seconds += wait
    state.until = utcnow() + timedelta(seconds=wait)
    log.warning("session %s: the agent is rate limited; waiting %.0fs", summary.session_id, wait)
    return wait


def absorb(summary: RunSummary, record: IterationRecord) -> None:
    summary.iteration_count = record.iteration
    summary.last_iteration = record.iteration
    summary.last_outcome = record.outcome
    summary.last_summary = record.summary or None
    if record.head_commit:
        summary.head_commit = record.head_commit
    if record.usage is not None:
        summary.usage = summary.usage + record.usage
    if record.outcome in {Outcome.BACKOFF, Outcome.USAGE_LIMIT}:
        return  # neither progress nor failure: the provider said "later"
    summary.backoff.consecutive = 0
    summary.backoff.until = None
    failed = record.outcome in FAILURE_OUTCOMES
    summary.consecutive_failures = summary.consecutive_failures + 1 if failed else 0
    if record.outcome is Outcome.NOT_STARTED:
        return  # the agent never ran: neither progress nor being stuck, only a failure
    changed = bool(record.commits) or record.harvest_error is not None
    summary.unchanged_iterations = 0 if changed else summary.unchanged_iterations + 1
