"""Pydantic models of every file the harness persists (the journal of design §3).

Field names follow the original Solo Harness (camelCase, `schemaVersion`, `kind`) so its readers keep
working; ours add what a container run needs. Old schema versions are upgraded on read by named steps
in `runner.record.journal`.

Why one module of this size: every model of the journal in one file, as its schema and its generated
reference (docs/journal.md, docs/schema/) are one; each model is small and only describes fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic_core import CoreSchema

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
        defer_build=True,
    )

    def dump_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


class JournalModel(CamelModel):
    """Base of every persisted model."""


class DescribedEnum(StrEnum):
    """A StrEnum whose every value has a meaning, given by `describe()`: docs/journal.md renders them and the
    JSON Schema carries them as `enumDescriptions` (in the order of `enum`)."""

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        """The meaning of each value (a subclass defines it; a unit test checks that none is missing)."""
        raise NotImplementedError

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        schema = handler(core_schema)
        meanings = cls.describe()
        handler.resolve_ref_schema(schema)["enumDescriptions"] = [meanings.get(value, "") for value in cls]
        return schema


class RunState(DescribedEnum):
    """The state of a session (`status` in run-summary.json)."""

    RUNNING = "running"
    COMPLETED = "completed"
    BLOCKED = "blocked"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    STUCK = "stuck"
    QUEUED = "queued"

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return {
            cls.QUEUED: "Waiting in the machine-wide queue for a slot (`harness queue`), with no container yet; "
            "when its supervisor is gone (kill -9, a reboot) it keeps its place until `resume`.",
            cls.RUNNING: "A supervisor is iterating (`status` shows `interrupted` when its lock is free).",
            cls.COMPLETED: "The agent reported done and the --check command, if any, passed.",
            cls.BLOCKED: "The agent reported blocked: it needs a human. Resumable.",
            cls.STOPPED: "A limit or a stop request ended the run. Resumable.",
            cls.FAILED: "The agent failed `maxConsecutiveFailures` iterations in a row. Resumable.",
            cls.INTERRUPTED: "The supervisor died, was terminated (SIGTERM) or interrupted twice, or hit an "
            "infrastructure fault. Resumable.",
            cls.STUCK: "The agent changed nothing for `stuckAfter` iterations in a row. Resumable.",
        }


class StopReason(DescribedEnum):
    """Why a run ended (`stopReason` in run-summary.json)."""

    AGENT_DONE = "agent-done"
    AGENT_BLOCKED = "agent-blocked"
    MAX_ITERATIONS = "max-iterations"
    MAX_TIME = "max-time"
    MAX_DISK = "max-disk"
    STOP_REQUESTED = "stop-requested"
    REPEATED_FAILURES = "repeated-failures"
    SUPERVISOR_GONE = "supervisor-gone"
    INTERRUPTED = "interrupted"
    TERMINATED = "terminated"
    INFRASTRUCTURE = "infrastructure-error"
    NO_PROGRESS = "no-progress"
    RATE_LIMITED = "rate-limited"
    MAX_COST = "max-cost"
    MAX_TOKENS = "max-tokens"
    SETUP_FAILED = "setup-failed"
    USAGE_LIMIT = "usage-limit"
    NOT_STARTED = "not-started"

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return {
            cls.AGENT_DONE: "The agent reported done (and the --check command passed): state `completed`.",
            cls.AGENT_BLOCKED: "The agent reported blocked: state `blocked`.",
            cls.MAX_ITERATIONS: "--max-iterations counted iterations ran (backoff iterations do not count).",
            cls.MAX_TIME: "--max-time elapsed.",
            cls.MAX_DISK: "The copy grew past --max-disk; that iteration's work was not harvested.",
            cls.STOP_REQUESTED: "`harness stop` asked for it.",
            cls.REPEATED_FAILURES: "`maxConsecutiveFailures` failed iterations in a row: state `failed`.",
            cls.SUPERVISOR_GONE: "Shown by `status` for a `running` session whose supervisor no longer holds its lock.",
            cls.NOT_STARTED: "Shown by `status` for a session created whose supervisor never started (a detached "
            "process that failed at once, a machine gone down first): state `interrupted`; `resume` starts it.",
            cls.INTERRUPTED: "Ctrl-C (SIGINT) reached the supervisor: state `stopped` (twice: `interrupted`).",
            cls.TERMINATED: "SIGTERM reached the supervisor (the machine shutting down, or a `kill`): state "
            "`interrupted`; the user service resumes it after a reboot (`harness service`).",
            cls.INFRASTRUCTURE: "A fault outside the agent (engine, copy, journal) ended it; `error` says which.",
            cls.NO_PROGRESS: "No change for --stuck-after iterations in a row: state `stuck`.",
            cls.RATE_LIMITED: "The agent's provider kept refusing (rate or usage limit) after `maxBackoffs` waits.",
            cls.MAX_COST: "The model gateway counted --max-cost spent.",
            cls.MAX_TOKENS: "The model gateway counted --max-tokens spent.",
            cls.SETUP_FAILED: "The setup command (--setup or the devcontainer's) failed: state `failed`. Resumable "
            "after a fix (resume runs the setup again).",
            cls.USAGE_LIMIT: "A subscription's usage window is spent and reopens later than --wait-on-limit allows "
            "(or --no-wait-on-limit): resumable.",
        }


class Outcome(DescribedEnum):
    """What one iteration came to (`outcome` of an iteration, `lastOutcome` of the run)."""

    WORKING = "working"
    DONE = "done"
    BLOCKED = "blocked"
    TIMED_OUT = "timed-out"
    OOM_KILLED = "oom-killed"
    AGENT_ERROR = "agent-error"
    NO_REPORT = "no-report"
    DISK_EXCEEDED = "disk-exceeded"
    BACKOFF = "backoff"
    BUDGET = "budget"
    CHECK_FAILED = "check-failed"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not-started"
    USAGE_LIMIT = "usage-limit"

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return {
            cls.WORKING: "The agent reported progress; the run goes on.",
            cls.DONE: "The agent reported done (and the --check command, if any, passed).",
            cls.BLOCKED: "The agent reported that it needs a human.",
            cls.TIMED_OUT: "The iteration ran past --iteration-timeout; its container was stopped. A failure.",
            cls.OOM_KILLED: "The container hit its --memory cap and was killed. A failure.",
            cls.AGENT_ERROR: "The agent exited non-zero. A failure.",
            cls.NO_REPORT: "The agent exited 0 without a valid status report. A failure.",
            cls.DISK_EXCEEDED: "The copy grew past --max-disk; the run stops `max-disk`.",
            cls.BACKOFF: "The agent hit a rate or usage limit; retried after a wait, not counted as an iteration.",
            cls.BUDGET: "The model gateway refused a request because --max-cost or --max-tokens is spent; the run "
            "stops `max-cost` or `max-tokens`.",
            cls.CHECK_FAILED: "The agent reported done but the --check command did not pass. A failure.",
            cls.INTERRUPTED: "Ctrl-C, SIGTERM or `stop --now` stopped the container mid-iteration.",
            cls.NOT_STARTED: "The backend could not start the agent (on Kubernetes: no node fits its limits); "
            "`backendError` says why. A failure.",
            cls.USAGE_LIMIT: "The provider said a subscription's usage window is spent; the run waits for it to "
            "reopen. Neither a failure nor counted against --max-iterations.",
        }


class FailureClass(DescribedEnum):
    """Why an iteration counts as failed (`failureClass` of an iteration)."""

    TIMEOUT = "timeout"
    OOM = "oom"
    EXIT_NONZERO = "exit-nonzero"
    MISSING_REPORT = "missing-report"
    INVALID_REPORT = "invalid-report"
    DISK = "disk"
    CHECK = "check"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not-started"

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return {
            cls.TIMEOUT: "The wall-clock watchdog stopped the container (--iteration-timeout).",
            cls.OOM: "The kernel killed the agent at the memory cap.",
            cls.EXIT_NONZERO: "The agent's command exited with a non-zero code.",
            cls.MISSING_REPORT: "The agent wrote no status file.",
            cls.INVALID_REPORT: "The status file was unsafe, too large or not valid JSON of the expected shape.",
            cls.DISK: "The copy grew past --max-disk.",
            cls.CHECK: "The --check command failed, timed out or could not run.",
            cls.INTERRUPTED: "The iteration was stopped by Ctrl-C, SIGTERM or `stop --now`.",
            cls.NOT_STARTED: "The backend could not start the container (the scheduler's reason is recorded).",
        }


class NotifyEvent(DescribedEnum):
    """What a notification (--notify) tells (`event` of a notification; `--notify-on` selects them)."""

    END = "end"
    BLOCKED = "blocked"
    USAGE_LIMIT = "usage-limit"
    BUDGET = "budget"
    FAILURES = "failures"

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return {
            cls.END: "The run ended (any way: selecting `end` selects every end, each sent with its own event). "
            "Sent as `end` when no event below says more.",
            cls.BLOCKED: "The run ended `blocked`: the agent needs a human.",
            cls.USAGE_LIMIT: "A wait for a spent usage window began, or the run stopped `usage-limit`.",
            cls.BUDGET: "The run stopped because --max-cost or --max-tokens is spent.",
            cls.FAILURES: "The run ended `failed` (repeated failures, a failed setup) or `stuck`.",
        }


class TokenUsage(JournalModel):
    """Tokens of one or more model requests, as the provider's usage fields report them."""

    input_tokens: int = Field(default=0, ge=0, description="Input tokens, not counting cache reads and writes.")
    output_tokens: int = Field(default=0, ge=0, description="Output tokens.")
    cache_read_tokens: int = Field(default=0, ge=0, description="Input tokens read from the provider's cache.")
    cache_write_tokens: int = Field(default=0, ge=0, description="Input tokens written to the provider's cache.")
    reasoning_tokens: int = Field(
        default=0, ge=0, description="Reasoning tokens, part of outputTokens where a provider says so."
    )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(**{k: getattr(self, k) + getattr(other, k) for k in TokenUsage.model_fields})

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class AgentReport(JournalModel):
    """What the agent's own structured output said about its run (never free text)."""

    usage: TokenUsage | None = Field(default=None, description="Tokens as the agent counted them.")
    cost_usd: float | None = Field(
        default=None, description="Cost as the agent computed it (Claude Code's total_cost_usd, aider's Cost)."
    )
    num_turns: int | None = Field(default=None, description="Model turns the agent took.")
    is_error: bool | None = Field(default=None, description="Whether the agent's result event said it failed.")
    subtype: str | None = Field(
        default=None, description="Claude Code's result subtype (success, error_max_turns, ...)."
    )
    model: str | None = Field(default=None, description="The model the agent said it used.")
    rate_limited: bool = Field(
        default=False, description="A structured rate-limit or usage-limit error event was seen."
    )
    retry_after_seconds: float | None = Field(default=None, description="The wait that event asked for, if it did.")


class UsageLimitFact(JournalModel):
    """A subscription's usage window the provider said is spent (issue: usage limits are facts, not guesses)."""

    resets_at: datetime | None = Field(
        default=None, description="When the provider said the window reopens; null when it did not say."
    )
    window: str | None = Field(default=None, description="Which window, as a person reads it (`5-hour`, `weekly`).")
    provider: str | None = Field(default=None, description="The provider that said so (`anthropic`, `openai`).")


class GatewayUsage(JournalModel):
    """What the model gateway counted (the authoritative figures: it saw every request)."""

    requests: int = Field(default=0, ge=0, description="Model requests the agent made.")
    refused_budget: int = Field(
        default=0, ge=0, description="Requests refused because --max-cost or --max-tokens was spent."
    )
    refused_tokens: int = Field(default=0, ge=0, description="Of those, the ones refused for --max-tokens.")
    rate_limited: int = Field(default=0, ge=0, description="Requests the upstream answered with 429 or 529.")
    errors: int = Field(default=0, ge=0, description="Other upstream or gateway errors.")
    unpriced_requests: int = Field(
        default=0, ge=0, description="Requests for a model missing from the price table (priced by the fallback)."
    )
    tokens: TokenUsage = Field(default_factory=TokenUsage, description="Tokens of all those requests.")
    budget_tokens: int = Field(
        default=0,
        ge=0,
        description="Tokens counted against --max-tokens: each request's total, or what it "
        "reserved when its usage never arrived.",
    )
    cost_usd: float = Field(default=0.0, ge=0, description="Their cost in US dollars.")
    retry_after_seconds: float | None = Field(
        default=None, description="Retry-After of the last upstream 429/529 that sent one."
    )
    usage_limited: int = Field(
        default=0,
        ge=0,
        description="Requests refused because a subscription's usage window is spent (a 429 that "
        "says so in its structured answer; also counted in rateLimited).",
    )
    usage_limit: UsageLimitFact | None = Field(default=None, description="The last of those refusals.")

    def __add__(self, other: GatewayUsage) -> GatewayUsage:
        return GatewayUsage(
            requests=self.requests + other.requests,
            refused_budget=self.refused_budget + other.refused_budget,
            refused_tokens=self.refused_tokens + other.refused_tokens,
            budget_tokens=self.budget_tokens + other.budget_tokens,
            rate_limited=self.rate_limited + other.rate_limited,
            errors=self.errors + other.errors,
            unpriced_requests=self.unpriced_requests + other.unpriced_requests,
            tokens=self.tokens + other.tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
            retry_after_seconds=other.retry_after_seconds,
            usage_limited=self.usage_limited + other.usage_limited,
            usage_limit=other.usage_limit or self.usage_limit,
        )


class Limits(JournalModel):
    """Hard limits of the agent container and of the run."""

    cpus: float = Field(default=1.0, gt=0, le=512, description="CPUs of the agent container (--cpus).")
    memory_bytes: int = Field(
        default=2 * 1024**3, ge=6 * 1024**2, description="Memory cap of the container, swap included (--memory)."
    )
    pids: int = Field(default=512, ge=16, description="Process cap of the container (--pids).")
    iteration_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="Wall clock of one iteration (--iteration-timeout)."
    )
    max_time_seconds: float | None = Field(
        default=None, gt=0, description="Wall clock of the whole run (--max-time); null for none."
    )
    max_disk_bytes: int | None = Field(
        default=10 * 1024**3, ge=1024**2, description="Size the copy may grow to (--max-disk); null for none."
    )
    max_iterations: int = Field(default=10, ge=1, description="Counted iterations allowed (--max-iterations).")
    max_consecutive_failures: int = Field(
        default=3, ge=1, description="Failed iterations in a row that end the run `failed`."
    )
    stuck_after: int = Field(
        default=3, ge=1, description="Iterations in a row without any change that end the run `stuck` (--stuck-after)."
    )
    backoff_base_seconds: float = Field(
        default=60.0, gt=0, description="First wait after a rate limit without Retry-After (--backoff-base)."
    )
    backoff_max_seconds: float = Field(default=1800.0, gt=0, description="Longest wait after a rate limit.")
    max_backoffs: int = Field(
        default=8, ge=1, description="Rate-limited iterations in a row before the run stops `rate-limited`."
    )
    output_cap_bytes: int = Field(
        default=8 * 1024**2, ge=1024, description="Bytes of output kept per iteration log (then a truncation marker)."
    )
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="US dollars of model calls allowed (--max-cost); the gateway refuses past it."
    )
    max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Tokens of model calls allowed (--max-tokens: a subscriber's budget, whose "
        "dollars are not metered); reserved and counted at the gateway like --max-cost.",
    )
    wait_on_limit_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Longest wait for a spent usage window to reopen (--wait-on-limit); null: "
        "the rest of --max-time (no bound without it); 0: never wait (--no-wait-on-limit).",
    )


class WorktreeInfo(JournalModel):
    """The run's isolated copy of the repository and the branch its work is harvested onto."""

    enabled: bool = Field(default=True, description="Always true: every run works on its own copy.")
    base_ref: str = Field(description="The ref the copy started from (--base).")
    base_commit: str = Field(pattern=r"^[0-9a-f]{40}$", description="The commit that ref named when the run began.")
    path: str = Field(description="The isolated copy on the host (owned by the agent's uid).")
    branch: str = Field(description="The branch in the user's repository that receives the harvested commits.")
    seed: str | None = Field(
        default=None,
        description="The repository's shared seed on the host, whose objects the copy borrows (read-only, through "
        "objects/info/alternates); null: the copy is a full clone.",
    )
    lower: str | None = Field(
        default=None,
        description="The seed's checkout of the base commit that the copy is an overlay of (read-only, shared by the "
        "copies over it; `path` then holds only the copy's changes and its .git); null: the copy has a checkout of "
        "its own.",
    )


class AgentInfo(JournalModel):
    """The agent that runs in the container."""

    name: str = Field(description='Adapter name (--agent), or "custom" for --agent-cmd.')
    command: list[str] = Field(description="The command run in the container each iteration.")
    model: str | None = Field(default=None, description="--model, passed to the agent.")
    max_turns: int | None = Field(default=None, description="--max-turns, passed to the agent.")


class SupervisorInfo(JournalModel):
    """The process that drives the session (null in run-summary.json when none runs)."""

    pid: int = Field(description="Its process id.")
    host: str = Field(description="The host it runs on.")
    started_at: datetime = Field(default_factory=utcnow, description="When it started.")
    heartbeat_at: datetime = Field(
        default_factory=utcnow, description="Its last sign of life (every 10 s), for readers on other hosts."
    )


class KeepAwake(JournalModel):
    """The sleep inhibitor the supervisor holds while the session lives (`keep_awake`, --no-keep-awake)."""

    enabled: bool = Field(default=True, description="Whether the session asks for one (false: --no-keep-awake).")
    held: bool = Field(default=False, description="Whether the supervisor holds it now (false once the run ends).")
    via: str | None = Field(
        default=None, description="The inhibitor: `systemd-inhibit` (Linux) or `caffeinate` (macOS); null: none known."
    )
    reason: str | None = Field(default=None, description="Why it is not held, when it was asked for and is not.")
    since: datetime | None = Field(default=None, description="When the supervisor last took it (UTC).")


class AutoResume(JournalModel):
    """What the user service (`harness service`) did for the session after the machine went down."""

    resumed_at: list[datetime] = Field(
        default_factory=list,
        description="When the service resumed it, within the restart budget's window (older ones are dropped).",
    )
    gave_up: str | None = Field(
        default=None,
        description="Why the service no longer resumes it (it keeps dying); null while it does. A resume by hand "
        "clears it.",
    )


class BackoffState(JournalModel):
    """Waiting out a usage or rate limit of the agent's provider."""

    consecutive: int = Field(default=0, description="Rate-limited iterations in a row.")
    total: int = Field(default=0, description="Backoff iterations so far; they do not count against --max-iterations.")
    last_wait_seconds: float | None = Field(default=None, description="The last wait.")
    total_wait_seconds: float = Field(default=0.0, description="All waits added up.")
    until: datetime | None = Field(default=None, description="When the current wait ends; null when not waiting.")


class UsageLimitWait(JournalModel):
    """Waiting for a subscription's usage window to reopen (`usage-limit` iterations)."""

    total: int = Field(default=0, ge=0, description="Iterations that ended `usage-limit`; not counted as iterations.")
    probes: int = Field(
        default=0, ge=0, description="Waits in a row for a window whose reset the provider did not give."
    )
    resets_at: datetime | None = Field(default=None, description="When the provider said the window reopens.")
    window: str | None = Field(default=None, description="Which window is spent (`5-hour`, `weekly`, ...).")
    until: datetime | None = Field(
        default=None, description="When the run goes on (the reset and a little jitter); null when not waiting."
    )
    total_wait_seconds: float = Field(default=0.0, ge=0, description="All these waits added up.")


class EngineRef(JournalModel):
    """Which engine runs a session's containers, with that engine's own configuration: an object whose `type` names
    the engine and whose other fields are the engine's (docs/journal.md, "Engine configurations"). The journal
    keeps it as the engine wrote it; the engine validates it (unknown fields are refused) when the session's
    engine is opened (runner.backends.open_engine)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        default="docker", pattern=r"^[a-z][a-z0-9-]{0,39}$", description="The engine: `docker` or `kubernetes`."
    )


class NotifyInfo(JournalModel):
    """Where a session's notifications go, as the journal may show it: each target's kind and host, never
    its path, query or credentials (they are kept outside the journal, readable only by the user)."""

    targets: list[str] = Field(
        default_factory=list, description="Each --notify target, redacted (`slack+https://hooks.slack.com/…`)."
    )
    events: list[NotifyEvent] = Field(default_factory=list, description="The events that are sent (--notify-on).")


class EndNotice(JournalModel):
    """Whether the end of a session (run-summary.json) or of a race (race.json) has been told (--notify). Written
    `pending` in the same write as the end itself, so that a supervisor that dies before the send is done leaves it
    owed: `harness resume --session S` (or the user service, at the next login) then sends it."""

    event: NotifyEvent = Field(
        description="What is told: the end's most telling event (`end`, `blocked`, `budget`, `failures`, "
        "`usage-limit`; a race's: `end`, or `budget` when the pooled budget ended it)."
    )
    state: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: not sent to its end yet (the supervisor sends it, or died while it did: `resume "
        "--session S` or the user service sends it); `delivered`: every target took it; `failed`: sent, and a target "
        "did not take it after its attempts (notifications.json says why; `resume --session S` sends it to that one "
        "again)."
    )
    owed: list[int] = Field(
        default_factory=list,
        description="The targets that have not taken it, by their place (from 0) among the --notify targets "
        "(kept outside the journal, as given).",
    )
    sends: int = Field(
        default=0, ge=0, description="How many times it was sent (by the supervisor, `resume`, the user service)."
    )


class SetupRecord(JournalModel):
    """The session's setup phase: its command, run in the copy before the agent, without the model gateway."""

    command: str = Field(description="The setup command (sh -c, in the copy, as the agent's uid).")
    source: Literal["flag", "config", "devcontainer"] = Field(
        description="Where the command came from: `flag` (--setup), `config` (a settings file or the environment) or "
        "`devcontainer` (devcontainer.json's create commands)."
    )
    passed: bool = Field(description="Whether it exited 0 in time.")
    exit_code: int | None = Field(description="Its exit code; null when it did not exit by itself.")
    timed_out: bool = Field(default=False, description="Whether it ran out of time (--iteration-timeout).")
    duration_seconds: float = Field(default=0.0, description="How long it ran.")
    log_file: str = Field(description="Its output (redacted), in the journal directory.")
    inputs_digest: str | None = Field(
        default=None, description="Digest of the input files it ran with; a change runs it again on resume."
    )
    outputs: list[str] = Field(
        default_factory=list,
        description="What it left in the copy outside git (a virtualenv, node_modules): never committed.",
    )
    runs: int = Field(default=1, ge=1, description="How many times the setup has run in this session.")
    restored: bool = Field(
        default=False,
        description="Whether its outputs were restored from the package cache's snapshot of an identical setup "
        "(same image, command, network and inputs) instead of running the command again.",
    )
    finished_at: datetime = Field(default_factory=utcnow, description="When it last ended (UTC).")


class QueueRecord(JournalModel):
    """The session and the machine-wide queue: the cap it runs under and its last wait for a slot."""

    slots: int | None = Field(
        default=None,
        ge=1,
        description="--slots: sessions that may run at once on this machine; null: the default from what the "
        "session's engine holds against its limits (docs/configuration.md).",
    )
    default_slots: int | None = Field(
        default=None,
        ge=1,
        description="The default cap its supervisor found when it last looked for a slot without --slots: what its "
        "engine holds at its limits (this machine's cores and memory, or the cluster's nodes); null: not looked yet.",
    )
    default_basis: str | None = Field(
        default=None, description="How that default was found (or, for a cluster that cannot be asked, why not)."
    )
    queued_at: datetime | None = Field(
        default=None, description="When the session last had to wait for a slot; null when it never had to."
    )
    started_at: datetime | None = Field(default=None, description="When it last took a slot (UTC).")
    slot: int | None = Field(default=None, ge=0, description="The slot it took (slots/slot-K.lock in the home).")


class RunSummary(JournalModel):
    """run-summary.json: the current state and progress (written only by the supervisor)."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.run-summary"] = Field(
        default="solo-harness.run-summary", description="Always `solo-harness.run-summary`."
    )
    session_id: str = Field(description="The session id (--session).")
    objective: str = Field(description="What the agent was asked to achieve.")
    status: RunState = Field(default=RunState.RUNNING, description="The state of the run.")
    stop_reason: StopReason | None = Field(default=None, description="Why the run ended; null while it runs.")
    iteration_count: int = Field(default=0, ge=0, description="Iterations run, backoff iterations included.")
    max_iterations: int = Field(ge=1, description="Counted iterations allowed (resume adds to it).")
    last_iteration: int | None = Field(default=None, description="Number of the last iteration.")
    last_outcome: Outcome | None = Field(default=None, description="Outcome of the last iteration.")
    last_summary: str | None = Field(default=None, description="The agent's summary in the last iteration.")
    stop_requested: bool = Field(default=False, description="Whether the run ended because of `harness stop`.")
    consecutive_failures: int = Field(
        default=0, ge=0, description="Failed iterations in a row (the run fails at `limits.maxConsecutiveFailures`)."
    )
    unchanged_iterations: int = Field(
        default=0,
        ge=0,
        description="Iterations in a row that changed nothing (the run is stuck at `limits.stuckAfter`).",
    )
    backoff: BackoffState = Field(default_factory=BackoffState, description="Waits for rate and usage limits.")
    usage_limit: UsageLimitWait = Field(
        default_factory=UsageLimitWait, description="Waits for a subscription's usage window to reopen."
    )
    worktree: WorktreeInfo = Field(description="The isolated copy and the branch.")
    repo: str = Field(description="The user's repository (its top directory).")
    run_dir: str = Field(description="The run's directory on the host (the copy and its working files).")
    image: str = Field(description="The agent's container image.")
    backend: EngineRef = Field(default_factory=EngineRef, description="Where the containers run (--backend).")
    runtime: Literal["runc", "runsc"] = Field(
        default="runc", description="Container runtime: `runc` (Docker's default) or `runsc` (gVisor)."
    )
    network: Literal["none", "allowlist"] = Field(
        default="none",
        description="`none`: no network but the model gateway; `allowlist`: also the --allow-host targets, "
        "through the egress proxy.",
    )
    allow_hosts: list[str] = Field(
        default_factory=list, description="HOST[:PORT] the agent may reach (--allow-host, with --network allowlist)."
    )
    auth: Literal["api-key", "subscription"] | None = Field(
        default=None,
        description="Which kind of the host's model credentials serves the run (--auth): `api-key` or "
        "`subscription`; null: an API key when the host has one, else a subscription.",
    )
    agent: AgentInfo = Field(description="The agent and its command.")
    env_names: list[str] = Field(
        default_factory=list, description="Variables passed with --env (names only: values are never stored)."
    )
    check_command: str | None = Field(
        default=None, description="--check: must pass in the container before `done` completes the run."
    )
    protected_paths: list[str] = Field(
        default_factory=list,
        description="--protect: the paths (patterns from the repository's top) the check runs with as the base "
        "commit has them; empty: none (no check, --no-protect, or a session from before protection).",
    )
    protect_source: Literal["flag", "config", "default", "off"] | None = Field(
        default=None,
        description="Where `protectedPaths` came from: `flag`, `config`, `default` (chosen from the check and the "
        "base's tree), or `off` (--no-protect); null: no check.",
    )
    limits: Limits = Field(description="The limits in force.")
    setup_command: str | None = Field(
        default=None, description="The setup command, run in the copy before the first iteration (null: none)."
    )
    setup_source: Literal["flag", "config", "devcontainer"] | None = Field(
        default=None, description="Where the setup command came from: `flag`, `config` or `devcontainer`."
    )
    setup_allow_hosts: list[str] = Field(
        default_factory=list, description="HOST:PORT the setup may reach through its own egress proxy."
    )
    setup_inputs: list[str] = Field(
        default_factory=list, description="Files whose change runs the setup again on resume (lockfiles)."
    )
    setup: SetupRecord | None = Field(default=None, description="The last run of the setup; null before it ran.")
    container_env: dict[str, str] = Field(
        default_factory=dict,
        description="Variables every container of the run gets (a devcontainer.json's containerEnv); not secrets.",
    )
    head_commit: str | None = Field(default=None, description="The last commit harvested onto the branch.")
    usage: GatewayUsage = Field(
        default_factory=GatewayUsage, description="The model gateway's count over every request of the session."
    )
    notify: NotifyInfo | None = Field(
        default=None, description="Where notifications go (--notify), redacted; null: none are sent."
    )
    end_notice: EndNotice | None = Field(
        default=None,
        description="Whether the run's last end was told to its targets; null: nothing to tell (no target, the "
        "event not chosen, a second Ctrl-C) or the run has not ended.",
    )
    supervisor: SupervisorInfo | None = Field(default=None, description="The live supervisor; null when none runs.")
    keep_awake: KeepAwake = Field(
        default_factory=KeepAwake, description="The sleep inhibitor held while a supervisor drives the session."
    )
    queue: QueueRecord = Field(
        default_factory=QueueRecord, description="Its cap of sessions at once and its last wait in the queue."
    )
    auto_resume: AutoResume = Field(
        default_factory=AutoResume, description="The user service's automatic resumes after a reboot."
    )
    error: str | None = Field(default=None, description="The infrastructure fault that ended the run, if one did.")
    created_at: datetime = Field(default_factory=utcnow, description="When the session was created (UTC).")
    updated_at: datetime = Field(default_factory=utcnow, description="When this file was last written (UTC).")
    finished_at: datetime | None = Field(default=None, description="When the run last ended (UTC).")

    @property
    def counted_iterations(self) -> int:
        """Iterations that count against max_iterations (backoff retries and usage-limit waits do not)."""
        return self.iteration_count - self.backoff.total - self.usage_limit.total


class RunOwner(JournalModel):
    """owner.json in a run directory: which session a copy belongs to (for `list` and `gc`)."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.run-owner"] = Field(
        default="solo-harness.run-owner", description="Always `solo-harness.run-owner`."
    )
    session_id: str = Field(description="The session that owns the run directory.")
    repo: str = Field(description="That session's repository.")
    journal_dir: str = Field(description="That session's journal directory.")
    backend: EngineRef = Field(default_factory=EngineRef, description="Where that session's containers run (for `gc`).")
    created_at: datetime = Field(default_factory=utcnow, description="When the run directory was made (UTC).")


class StatusReport(BaseModel):
    """What the agent writes to $HARNESS_STATUS_FILE (untrusted input)."""

    model_config = ConfigDict(extra="ignore", str_max_length=16_384)

    state: Literal["working", "done", "blocked"] = Field(
        description="`working`: progress, go on; `done`: the objective is met; `blocked`: a human is needed."
    )
    summary: str = Field(default="", description="What the agent did in this iteration.")
    next: str = Field(default="", description="What it means to do next.")


class DiffStat(JournalModel):
    """What the harvested commits changed."""

    files_changed: int = Field(default=0, description="Files changed.")
    insertions: int = Field(default=0, description="Lines added.")
    deletions: int = Field(default=0, description="Lines removed.")


class ProtectedChange(JournalModel):
    """A protected path (--protect) the agent changed: the check ran with the base's version instead."""

    path: str = Field(description="The repository path.")
    change: Literal["added", "modified", "deleted"] = Field(
        description="`added`: not in the base; `modified`: other content, type or executable bit; `deleted`: "
        "only in the base."
    )


class CheckResult(JournalModel):
    """The --check command, run after the agent reported done (in a container like the agent's)."""

    command: str = Field(description="The --check command.")
    passed: bool = Field(description="Whether it exited 0 in time.")
    exit_code: int | None = Field(description="Its exit code; null when it did not exit by itself.")
    timed_out: bool = Field(default=False, description="Whether it ran out of time.")
    duration_seconds: float = Field(default=0.0, description="How long it ran.")
    log_file: str = Field(description="Its full output, in the journal directory.")
    output_tail: str = Field(
        default="", description="The end of its output (redacted), also handed to the next prompt."
    )
    protected: list[str] = Field(
        default_factory=list,
        description="The protected paths it ran with as the base commit has them (empty: on the copy as the "
        "agent left it).",
    )
    protected_changes: list[ProtectedChange] = Field(
        default_factory=list,
        description="The protected paths the agent changed in its copy (tracked, untracked or ignored alike), "
        "which the check did not see; at most 1000.",
    )
    protected_changes_more: int = Field(
        default=0, description="How many more changed protected paths there were than `protectedChanges` lists."
    )


class IterationRecord(JournalModel):
    """iteration-NNNN.json: what happened in one iteration."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.iteration"] = Field(
        default="solo-harness.iteration", description="Always `solo-harness.iteration`."
    )
    session_id: str = Field(description="The session id.")
    iteration: int = Field(ge=1, description="The iteration's number, from 1.")
    outcome: Outcome = Field(description="What the iteration came to.")
    summary: str = Field(default="", description="The agent's summary, from its status report.")
    next_action: str = Field(default="", description="What the agent means to do next, from its status report.")
    should_stop: bool = Field(default=False, description="Whether this outcome ends the run.")
    failure_class: FailureClass | None = Field(
        default=None, description="Why the iteration counts as failed; null when it did not fail."
    )
    report_error: str | None = Field(default=None, description="Why the status report was not accepted.")
    container_id: str | None = Field(default=None, description="The agent's container.")
    exit_code: int | None = Field(default=None, description="The agent's exit code.")
    timed_out: bool = Field(default=False, description="Whether the watchdog stopped it (--iteration-timeout).")
    oom_killed: bool = Field(default=False, description="Whether it was killed at the memory cap.")
    disk_exceeded: bool = Field(default=False, description="Whether the copy grew past --max-disk.")
    disk_bytes: int | None = Field(default=None, description="Size of the copy after the iteration.")
    duration_seconds: float = Field(default=0.0, ge=0, description="Wall-clock time of the iteration.")
    log_file: str = Field(description="The iteration's output, in the journal directory.")
    log_bytes: int = Field(default=0, description="Bytes of output kept in it.")
    log_truncated: bool = Field(default=False, description="Whether the output passed `limits.outputCapBytes`.")
    commits: list[str] = Field(
        default_factory=list, description="Commits harvested onto the branch in this iteration, oldest first."
    )
    head_commit: str | None = Field(default=None, description="The branch's commit after the harvest.")
    diff_stat: DiffStat = Field(default_factory=DiffStat, description="What those commits changed.")
    harvest_error: str | None = Field(default=None, description="Why the harvest failed, if it did.")
    backend_error: str | None = Field(
        default=None, description="Why the backend could not start the agent (outcome `not-started`)."
    )
    backoff_seconds: float | None = Field(
        default=None, description="How long the supervisor waited after a rate limit."
    )
    check: CheckResult | None = Field(default=None, description="The --check command's result, when it ran.")
    usage: GatewayUsage | None = Field(default=None, description="The model gateway's count for this iteration.")
    agent_report: AgentReport | None = Field(default=None, description="What the agent's own structured output said.")
    notes_delivered: list[str] = Field(
        default_factory=list, description="Ids of the user's notes this iteration's prompt carried."
    )
    limits: Limits = Field(description="The limits in force.")
    started_at: datetime = Field(description="When the iteration started (UTC).")
    created_at: datetime = Field(default_factory=utcnow, description="When this record was written (UTC).")


class Note(JournalModel):
    """A note from the user to the agent (`harness note`)."""

    id: str = Field(description="The note's id.")
    text: str = Field(max_length=65_536, description="What the note says.")
    created_at: datetime = Field(default_factory=utcnow, description="When it was given (UTC).")
    consumed_at: datetime | None = Field(default=None, description="When a prompt carried it; null until then.")
    consumed_iteration: int | None = Field(default=None, description="The iteration whose prompt carried it.")


class ControlFile(JournalModel):
    """control.json: stop requests and notes (written when the session is created, then by `stop` and
    `note`; read by the supervisor)."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.control"] = Field(
        default="solo-harness.control", description="Always `solo-harness.control`."
    )
    session_id: str = Field(description="The session id.")
    stop_requested: bool = Field(default=False, description="Whether `harness stop` asked the run to stop.")
    stop_mode: Literal["graceful", "now"] | None = Field(
        default=None,
        description="`graceful`: at the end of the current iteration; `now`: stop the running container (--now).",
    )
    stop_note: str | None = Field(default=None, description="Why (stop --note).")
    stop_requested_at: datetime | None = Field(default=None, description="When the stop was asked (UTC).")
    notes: list[Note] = Field(default_factory=list, description="The user's notes, in the order given.")
    updated_at: datetime = Field(default_factory=utcnow, description="When this file was last written (UTC).")


class RaceState(DescribedEnum):
    """The state of a race (`state` in race.json)."""

    RUNNING = "running"
    FINISHED = "finished"

    @classmethod
    def describe(cls) -> Mapping[str, str]:
        return {
            cls.RUNNING: "The race's supervisor watches its racers (`status` shows `interrupted` when its lock is "
            "free: `resume --session S` goes on).",
            cls.FINISHED: "Every racer has ended (`endReason` says how the race came to its end).",
        }


class Racer(JournalModel):
    """One racer of a race: an ordinary session `S-k` with its own journal, copy and branch."""

    session_id: str = Field(description="The racer's session (`S-1` ... `S-N`).")
    agent: str = Field(description='Its agent (--agents, or --agent for each racer with --n; "custom": --agent-cmd).')
    model: str | None = Field(default=None, description="Its model (--models, in turn), if one was given.")
    started: bool = Field(default=False, description="Whether the race has started its supervisor.")
    stopped_by_race: bool = Field(
        default=False, description="Whether the race stopped it (--first once a racer won, or the pooled budget)."
    )


class RaceRecord(JournalModel):
    """race.json in the journal of the race's own id S: the racers `S-1` ... `S-N`, how they are judged,
    and who won (written only by `race` and the race's supervisor)."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.race"] = Field(default="solo-harness.race", description="Always `solo-harness.race`.")
    session_id: str = Field(description="The race's id (--session S).")
    objective: str = Field(description="What every racer was asked to achieve.")
    repo: str = Field(description="The user's repository (its top directory).")
    check_command: str = Field(description="The --check command that judges the racers.")
    racers: list[Racer] = Field(description="The racers, in the order they were started.")
    judge: Literal["first", "all"] = Field(
        default="first", description="`first`: the first racer whose check passes wins; `all`: every such racer."
    )
    first: bool = Field(default=False, description="--first: the others are stopped at once when a racer wins.")
    budget: Literal["per-racer", "pooled"] = Field(
        default="per-racer",
        description="How --max-cost counts: `per-racer` (each racer may spend it) or `pooled` (all racers "
        "together; docs/race.md).",
    )
    max_cost_usd: float | None = Field(default=None, description="--max-cost, counted as `budget` says.")
    winners: list[str] = Field(default_factory=list, description="The winning racers' sessions, in order of passing.")
    state: RaceState = Field(default=RaceState.RUNNING, description="The state of the race.")
    end_reason: Literal["all-ended", "won-first", "max-cost", "stopped"] | None = Field(
        default=None,
        description="`all-ended`: every racer ended by itself; `won-first`: a racer won and --first stopped the "
        "others; `max-cost`: the pooled budget was spent; `stopped`: the race was interrupted (Ctrl-C; SIGTERM leaves "
        "it unfinished, for `resume`).",
    )
    supervisor: SupervisorInfo | None = Field(default=None, description="The race's live supervisor; null when none.")
    notify: NotifyInfo | None = Field(
        default=None,
        description="Where the race's notifications go (--notify), redacted; null: none. The race sends its end, "
        "its racers the other events chosen (docs/race.md).",
    )
    end_notice: EndNotice | None = Field(
        default=None,
        description="Whether the race's end was told to its targets; null: nothing to tell (no target, or the event "
        "not chosen) or the race has not ended.",
    )
    created_at: datetime = Field(default_factory=utcnow, description="When the race was created (UTC).")
    updated_at: datetime = Field(default_factory=utcnow, description="When this file was last written (UTC).")
    finished_at: datetime | None = Field(default=None, description="When the race ended (UTC).")


class NotificationRecord(JournalModel):
    """One notification (--notify) to one target, after its last attempt."""

    event: NotifyEvent = Field(description="What it told.")
    target: str = Field(description="Where it went, redacted: kind and host only (`ntfy+https://ntfy.sh/…`).")
    iteration: int | None = Field(default=None, description="The last iteration of the run when it was sent.")
    state: RunState | None = Field(
        default=None, description="The run's state when it was sent; null for a race's end (`raceEnd` says it)."
    )
    race_end: Literal["all-ended", "won-first", "max-cost", "stopped"] | None = Field(
        default=None,
        description="A race's end (in the race's journal): how the race ended, as its `endReason` says "
        "(`all-ended`, `won-first`, `max-cost` or `stopped`); null for a session's notification.",
    )
    winners: list[str] | None = Field(default=None, description="A race's end: its winning racers (none: empty).")
    attempts: int = Field(ge=0, description="Attempts made (transient failures are tried again, a few times).")
    delivered: bool = Field(description="Whether the target took it (HTTP 2xx, or the command exited 0).")
    error: str | None = Field(default=None, description="Why the last attempt failed (redacted); null when delivered.")
    http_status: int | None = Field(default=None, description="The HTTP status of the last attempt, when it had one.")
    exit_code: int | None = Field(default=None, description="The command's exit code (cmd: targets).")
    output: str | None = Field(
        default=None, description="The command's output, stdout and stderr (capped, redacted; cmd: targets)."
    )
    duration_seconds: float = Field(default=0.0, ge=0, description="How long all its attempts took.")
    created_at: datetime = Field(default_factory=utcnow, description="When its last attempt ended (UTC).")


class NotificationLog(JournalModel):
    """notifications.json: every notification sent for the session (--notify), oldest first. A failure to notify
    is recorded here and never changes the run's outcome."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.notifications"] = Field(
        default="solo-harness.notifications", description="Always `solo-harness.notifications`."
    )
    session_id: str = Field(description="The session id.")
    notifications: list[NotificationRecord] = Field(default_factory=list, description="The notifications.")
    updated_at: datetime = Field(default_factory=utcnow, description="When this file was last written (UTC).")


class NotifyTargets(JournalModel):
    """A session's notification targets as given (secrets included): kept in the harness home, readable only
    by the user, never in the journal (runner/record/notify.py)."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of this file's schema.")
    kind: Literal["solo-harness.notify-targets"] = Field(
        default="solo-harness.notify-targets", description="Always `solo-harness.notify-targets`."
    )
    session_id: str = Field(description="The session id.")
    repo: str = Field(description="That session's repository.")
    journal_dir: str | None = Field(
        default=None, description="That session's journal: `gc` removes this file once the journal is gone."
    )
    targets: list[str] = Field(default_factory=list, description="The --notify targets, as given.")
    events: list[NotifyEvent] = Field(default_factory=list, description="The events that are sent (--notify-on).")


JOURNAL_MODELS: dict[str, type[JournalModel]] = {
    "run-summary": RunSummary,
    "iteration": IterationRecord,
    "control": ControlFile,
    "race": RaceRecord,
    "notifications": NotificationLog,
}
