"""Pydantic models of every file the harness persists (the journal of design §3).

Field names follow the original Solo Harness (camelCase, `schemaVersion`, `kind`) so its readers keep
working; ours add what a container run needs. Old schema versions are upgraded on read by named steps
in `runner.journal`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class CamelModel(BaseModel):
    """camelCase in JSON (on disk and in `--json` output), snake_case in code."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="ignore",  # newer writers may add fields; old readers keep working
        validate_assignment=True,
    )

    def dump_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


class JournalModel(CamelModel):
    """Base of every persisted model."""


class RunState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    BLOCKED = "blocked"  # the agent asked for a human
    STOPPED = "stopped"  # a limit or a stop request ended it; resumable
    FAILED = "failed"  # repeated agent failures
    INTERRUPTED = "interrupted"  # the supervisor died or was interrupted; resumable
    STUCK = "stuck"  # the agent changed nothing for --stuck-after iterations in a row


class StopReason(StrEnum):
    AGENT_DONE = "agent-done"
    AGENT_BLOCKED = "agent-blocked"
    MAX_ITERATIONS = "max-iterations"
    MAX_TIME = "max-time"
    MAX_DISK = "max-disk"
    STOP_REQUESTED = "stop-requested"
    REPEATED_FAILURES = "repeated-failures"
    SUPERVISOR_GONE = "supervisor-gone"
    INTERRUPTED = "interrupted"
    INFRASTRUCTURE = "infrastructure-error"
    NO_PROGRESS = "no-progress"
    RATE_LIMITED = "rate-limited"  # the agent's provider kept refusing after every bounded backoff
    MAX_COST = "max-cost"  # the model gateway counted --max-cost spent


class Outcome(StrEnum):
    """What one iteration came to."""

    WORKING = "working"  # the agent reported progress
    DONE = "done"
    BLOCKED = "blocked"
    TIMED_OUT = "timed-out"
    OOM_KILLED = "oom-killed"
    AGENT_ERROR = "agent-error"  # exited non-zero
    NO_REPORT = "no-report"  # exited 0 without a (valid) status report
    DISK_EXCEEDED = "disk-exceeded"  # the copy grew past --max-disk
    BACKOFF = "backoff"  # the agent hit a usage or rate limit; retried later, not counted
    BUDGET = "budget"  # the gateway refused a model request: --max-cost is spent
    CHECK_FAILED = "check-failed"  # the agent said done, but the --check command did not pass
    INTERRUPTED = "interrupted"


class FailureClass(StrEnum):
    TIMEOUT = "timeout"
    OOM = "oom"
    EXIT_NONZERO = "exit-nonzero"
    MISSING_REPORT = "missing-report"
    INVALID_REPORT = "invalid-report"
    DISK = "disk"
    CHECK = "check"
    INTERRUPTED = "interrupted"


class TokenUsage(JournalModel):
    """Tokens of one or more model requests, as the provider's usage fields report them."""

    input_tokens: int = Field(default=0, ge=0)  # not counting cache reads and writes
    output_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)  # part of output_tokens where a provider says so

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(**{k: getattr(self, k) + getattr(other, k) for k in TokenUsage.model_fields})

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class AgentReport(JournalModel):
    """What the agent's own structured output said about its run (never free text)."""

    usage: TokenUsage | None = None
    cost_usd: float | None = None  # as the agent computed it (Claude Code's total_cost_usd, aider's Cost)
    num_turns: int | None = None
    is_error: bool | None = None
    subtype: str | None = None  # Claude Code's result subtype (success, error_max_turns, ...)
    model: str | None = None
    rate_limited: bool = False  # a structured rate-limit or usage-limit error event
    retry_after_seconds: float | None = None


class GatewayUsage(JournalModel):
    """What the model gateway counted (the authoritative figures: it saw every request)."""

    requests: int = Field(default=0, ge=0)
    refused_budget: int = Field(default=0, ge=0)  # refused because --max-cost was spent
    rate_limited: int = Field(default=0, ge=0)  # upstream answered 429 or 529
    errors: int = Field(default=0, ge=0)  # other upstream or gateway errors
    unpriced_requests: int = Field(default=0, ge=0)  # model missing from the price table: priced by fallback
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = Field(default=0.0, ge=0)
    retry_after_seconds: float | None = None  # from the last upstream 429/529 that said so

    def __add__(self, other: GatewayUsage) -> GatewayUsage:
        return GatewayUsage(
            requests=self.requests + other.requests,
            refused_budget=self.refused_budget + other.refused_budget,
            rate_limited=self.rate_limited + other.rate_limited,
            errors=self.errors + other.errors,
            unpriced_requests=self.unpriced_requests + other.unpriced_requests,
            tokens=self.tokens + other.tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
            retry_after_seconds=other.retry_after_seconds,
        )


class Limits(JournalModel):
    """Hard limits of the agent container and of the run."""

    cpus: float = Field(default=1.0, gt=0, le=512)
    memory_bytes: int = Field(default=2 * 1024**3, ge=6 * 1024**2)
    pids: int = Field(default=512, ge=16)
    iteration_timeout_seconds: float = Field(default=1800.0, gt=0)
    max_time_seconds: float | None = Field(default=None, gt=0)
    max_disk_bytes: int | None = Field(default=10 * 1024**3, ge=1024**2)
    max_iterations: int = Field(default=10, ge=1)
    max_consecutive_failures: int = Field(default=3, ge=1)
    stuck_after: int = Field(default=3, ge=1)  # iterations in a row without any change
    backoff_base_seconds: float = Field(default=60.0, gt=0)
    backoff_max_seconds: float = Field(default=1800.0, gt=0)
    max_backoffs: int = Field(default=8, ge=1)  # consecutive rate-limited iterations before giving up
    output_cap_bytes: int = Field(default=8 * 1024**2, ge=1024)
    max_cost_usd: float | None = Field(default=None, gt=0)  # the model gateway refuses requests past it


class WorktreeInfo(JournalModel):
    enabled: bool = True
    base_ref: str
    base_commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    path: str  # the isolated copy on the host (owned by the agent uid)
    branch: str  # the ref harvested into the user's repository


class AgentInfo(JournalModel):
    name: str  # adapter name, or "custom" for --agent-cmd
    command: list[str]
    model: str | None = None  # --model, passed to the agent
    max_turns: int | None = None  # --max-turns, passed to the agent


class SupervisorInfo(JournalModel):
    pid: int
    host: str
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)


class BackoffState(JournalModel):
    """Waiting out a usage or rate limit of the agent's provider."""

    consecutive: int = 0
    total: int = 0  # backoff iterations so far; they do not count against --max-iterations
    last_wait_seconds: float | None = None
    total_wait_seconds: float = 0.0
    until: datetime | None = None


class RunSummary(JournalModel):
    """run-summary.json: the current state and progress (written only by the supervisor)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["solo-harness.run-summary"] = "solo-harness.run-summary"
    session_id: str
    objective: str
    status: RunState = RunState.RUNNING
    stop_reason: StopReason | None = None
    iteration_count: int = Field(default=0, ge=0)
    max_iterations: int = Field(ge=1)
    last_iteration: int | None = None
    last_outcome: Outcome | None = None
    last_summary: str | None = None
    stop_requested: bool = False
    consecutive_failures: int = Field(default=0, ge=0)
    unchanged_iterations: int = Field(default=0, ge=0)  # in a row, for stuck detection
    backoff: BackoffState = Field(default_factory=BackoffState)
    worktree: WorktreeInfo
    repo: str
    run_dir: str
    image: str
    runtime: Literal["runc", "runsc"] = "runc"
    network: Literal["none", "allowlist"] = "none"
    allow_hosts: list[str] = Field(default_factory=list)  # --allow-host, with --network allowlist
    agent: AgentInfo
    env_names: list[str] = Field(default_factory=list)  # passed with --env; values are never stored
    check_command: str | None = None  # must pass in the container before "done" completes the run
    limits: Limits
    head_commit: str | None = None  # last commit harvested onto the branch
    usage: GatewayUsage = Field(default_factory=GatewayUsage)  # every model request of the session
    supervisor: SupervisorInfo | None = None
    error: str | None = None  # the infrastructure fault that ended the run, if any
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None

    @property
    def counted_iterations(self) -> int:
        """Iterations that count against max_iterations (backoff retries do not)."""
        return self.iteration_count - self.backoff.total


class RunOwner(JournalModel):
    """owner.json in a run directory: which session a copy belongs to (for `list` and `gc`)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["solo-harness.run-owner"] = "solo-harness.run-owner"
    session_id: str
    repo: str
    journal_dir: str
    created_at: datetime = Field(default_factory=utcnow)


class StatusReport(BaseModel):
    """What the agent writes to $HARNESS_STATUS_FILE (untrusted input)."""

    model_config = ConfigDict(extra="ignore", str_max_length=16_384)

    state: Literal["working", "done", "blocked"]
    summary: str = ""
    next: str = ""


class DiffStat(JournalModel):
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0


class CheckResult(JournalModel):
    """The --check command, run after the agent reported done (in a container like the agent's)."""

    command: str
    passed: bool
    exit_code: int | None
    timed_out: bool = False
    duration_seconds: float = 0.0
    log_file: str
    output_tail: str = ""  # the end of its output (redacted), also handed to the next prompt


class IterationRecord(JournalModel):
    """iteration-NNNN.json: what happened in one iteration."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["solo-harness.iteration"] = "solo-harness.iteration"
    session_id: str
    iteration: int = Field(ge=1)
    outcome: Outcome
    summary: str = ""
    next_action: str = ""
    should_stop: bool = False
    failure_class: FailureClass | None = None
    report_error: str | None = None  # why the status report was not accepted
    container_id: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    disk_exceeded: bool = False
    disk_bytes: int | None = None  # size of the copy after the iteration
    duration_seconds: float = Field(default=0.0, ge=0)
    log_file: str
    log_bytes: int = 0
    log_truncated: bool = False
    commits: list[str] = Field(default_factory=list)  # harvested in this iteration, oldest first
    head_commit: str | None = None
    diff_stat: DiffStat = Field(default_factory=DiffStat)
    harvest_error: str | None = None
    backoff_seconds: float | None = None  # how long the supervisor waited after a rate limit
    check: CheckResult | None = None
    usage: GatewayUsage | None = None  # the model gateway's count for this iteration
    agent_report: AgentReport | None = None  # what the agent's own structured output said
    notes_delivered: list[str] = Field(default_factory=list)  # ids of the notes this prompt carried
    limits: Limits
    started_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


class Note(JournalModel):
    id: str
    text: str = Field(max_length=65_536)
    created_at: datetime = Field(default_factory=utcnow)
    consumed_at: datetime | None = None
    consumed_iteration: int | None = None


class ControlFile(JournalModel):
    """control.json: stop requests and notes (written by `stop` and `note`, read by the supervisor)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["solo-harness.control"] = "solo-harness.control"
    session_id: str
    stop_requested: bool = False
    stop_mode: Literal["graceful", "now"] | None = None
    stop_note: str | None = None
    stop_requested_at: datetime | None = None
    notes: list[Note] = Field(default_factory=list)
    updated_at: datetime = Field(default_factory=utcnow)


JOURNAL_MODELS: dict[str, type[JournalModel]] = {
    "run-summary": RunSummary,
    "iteration": IterationRecord,
    "control": ControlFile,
}
