"""The supervisor's stop decisions, driven through the fake backend (no Docker)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.backends.base import ContainerSpec
from runner.backends.fake import FakeBackend, FakeRun, mount_source
from runner.base.layout import OUTBOX_DIR, PROMPT_DIR
from runner.loop.decisions import Decision, decide, rate_limit
from runner.loop.supervisor import StopEvent, Supervisor
from runner.loop.workspace import RunDir, Workspace
from runner.record.gitops import HostGit
from runner.record.journal import Journal
from runner.record.models import (
    AgentInfo,
    ControlFile,
    FailureClass,
    IterationRecord,
    Limits,
    Note,
    Outcome,
    RunState,
    RunSummary,
    StopReason,
    WorktreeInfo,
)
from tests.helpers import GitRepo
from tests.unit.fake_copy import helper_exec, with_helpers


def report(state: str, summary: str = "") -> Callable[[ContainerSpec], FakeRun]:
    def act(spec: ContainerSpec) -> FakeRun:
        (mount_source(spec, OUTBOX_DIR) / "status.json").write_text(json.dumps({"state": state, "summary": summary}))
        return FakeRun(output=f"agent says {state}\n".encode())

    return act


def script(*steps: Callable[[ContainerSpec], FakeRun]) -> Callable[[ContainerSpec], FakeRun]:
    queue = list(steps)

    def act(spec: ContainerSpec) -> FakeRun:
        return queue.pop(0)(spec) if len(queue) > 1 else queue[0](spec)

    return act


def crash(spec: ContainerSpec) -> FakeRun:
    return FakeRun(exit_code=2, output=b"boom\n")


def timeout(spec: ContainerSpec) -> FakeRun:
    return FakeRun(hang=True)  # until the watchdog's deadline (a short --iteration-timeout below)


class Harness:
    def __init__(self, tmp_path: Path, repo: GitRepo, behaviour, **limits: object) -> None:  # type: ignore[no-untyped-def]
        self.agent = behaviour  # the agent's containers; the copy's helpers answer "nothing new" (fake_copy)
        self.backend = FakeBackend(behaviour=with_helpers(self._agent), on_exec=helper_exec)
        self.journal = Journal(tmp_path / "journal", "s")
        self.journal.create("objective")
        run_dir = RunDir(tmp_path / "run")
        for d in (run_dir.workspace, run_dir.outbox, run_dir.export, run_dir.prompt):
            d.mkdir(parents=True)
        limits.setdefault("stuck_after", 100)  # the fake harvest brings no commits: not what most tests are about
        lim = Limits(**limits)  # type: ignore[arg-type]
        base = repo.git("rev-parse", "HEAD")
        self.summary = RunSummary(
            session_id="s", objective="make it so", max_iterations=lim.max_iterations,
            worktree=WorktreeInfo(base_ref="HEAD", base_commit=base, path=str(run_dir.workspace), branch="harness/s"),
            repo=str(repo.path), run_dir=str(run_dir.root), image="harness-base:latest",
            agent=AgentInfo(name="fake", command=["fake:agent"]), limits=lim, head_commit=base,
        )  # fmt: skip
        self.workspace = Workspace(
            backend=self.backend, run_dir=run_dir, image="harness-base:latest", limits=lim, session="s", repo_key="k"
        )
        self.git = HostGit(repo.path)

    def _agent(self, spec: ContainerSpec) -> FakeRun:
        return self.agent(spec)  # type: ignore[no-any-return]  # the one a test set last

    def run(self) -> RunSummary:
        return Supervisor(backend=self.backend, journal=self.journal, workspace=self.workspace, git=self.git).run(
            self.summary
        )


def test_done_completes_the_run(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, script(report("working", "one"), report("done", "two")), max_iterations=5)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (RunState.COMPLETED, StopReason.AGENT_DONE, 2)
    assert result.last_summary == "two"
    assert [r.outcome for r in h.journal.iterations()] == [Outcome.WORKING, Outcome.DONE]
    assert h.journal.log_path(1).read_text() == "agent says working\n"
    assert h.journal.read_summary().status is RunState.COMPLETED


def test_blocked_ends_the_run_as_needing_a_human(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("blocked", "need the API key"), max_iterations=5)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (
        RunState.BLOCKED,
        StopReason.AGENT_BLOCKED,
        1,
    )


def test_max_iterations_stops_a_working_agent(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("working"), max_iterations=3)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (
        RunState.STOPPED,
        StopReason.MAX_ITERATIONS,
        3,
    )
    agent_runs = [s for s in h.backend.runs if s.command[-1] == "fake:agent"]
    assert [s.env["HARNESS_ITERATION"] for s in agent_runs] == ["1", "2", "3"]


def test_repeated_failures_end_the_run_as_failed(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(
        tmp_path,
        repo,
        script(report("working"), crash, timeout, crash),
        max_iterations=10,
        max_consecutive_failures=3,
        iteration_timeout_seconds=0.3,
    )
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (
        RunState.FAILED,
        StopReason.REPEATED_FAILURES,
        4,
    )
    records = h.journal.iterations()
    assert [r.failure_class for r in records] == [
        None,
        FailureClass.EXIT_NONZERO,
        FailureClass.TIMEOUT,
        FailureClass.EXIT_NONZERO,
    ]
    assert records[2].timed_out and records[2].outcome is Outcome.TIMED_OUT


def test_an_agent_the_backend_cannot_place_fails_the_run_without_a_harvest(tmp_path: Path, repo: GitRepo) -> None:
    reason = "no node can run it: 0/3 nodes are available: 3 Insufficient cpu."
    # stuck_after equal to the failure limit: a not-started iteration must not count as "no change".
    h = Harness(tmp_path, repo, lambda spec: FakeRun(failure=reason), max_iterations=10, stuck_after=3)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (
        RunState.FAILED,
        StopReason.REPEATED_FAILURES,
        3,
    )
    records = h.journal.iterations()
    assert [(r.outcome, r.failure_class, r.backend_error) for r in records] == [
        (Outcome.NOT_STARTED, FailureClass.NOT_STARTED, reason)
    ] * 3
    assert not [s for s in h.backend.runs if s.labels.get("io.solo-harness.role") == "helper"]  # nothing to harvest


def test_a_success_resets_the_failure_count(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(
        tmp_path,
        repo,
        script(crash, crash, report("working"), crash, crash, report("done")),
        max_iterations=10,
        max_consecutive_failures=3,
    )
    assert h.run().status is RunState.COMPLETED


def test_missing_and_invalid_reports_are_recorded(tmp_path: Path, repo: GitRepo) -> None:
    def garbage(spec: ContainerSpec) -> FakeRun:
        (mount_source(spec, OUTBOX_DIR) / "status.json").write_text("{not json")
        return FakeRun()

    h = Harness(tmp_path, repo, script(lambda s: FakeRun(), garbage, report("done")), max_iterations=5)
    h.run()
    first, second, _ = h.journal.iterations()
    assert (first.outcome, first.failure_class) == (Outcome.NO_REPORT, FailureClass.MISSING_REPORT)
    assert (second.outcome, second.failure_class) == (Outcome.NO_REPORT, FailureClass.INVALID_REPORT)
    assert second.report_error and "not valid JSON" in second.report_error


def test_a_stop_request_is_honoured_at_the_iteration_boundary(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, None, max_iterations=10)

    def working_then_stop(spec: ContainerSpec) -> FakeRun:
        h.journal.update_control(lambda c: setattr(c, "stop_requested", True))  # `harness stop` mid-iteration
        return report("working")(spec)

    h.agent = working_then_stop
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (
        RunState.STOPPED,
        StopReason.STOP_REQUESTED,
        1,
    )


def test_max_time_stops_the_run(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("working"), max_iterations=10, max_time_seconds=100)
    ticks = iter([0.0, 0.0, 10.0, 50.0, 120.0, 130.0, 140.0])
    sup = Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git, clock=lambda: next(ticks))
    result = sup.run(h.summary)
    assert result.stop_reason is StopReason.MAX_TIME
    assert result.iteration_count == 2


def test_notes_reach_the_next_prompt_once(tmp_path: Path, repo: GitRepo) -> None:
    prompts: list[str] = []

    def read_prompt(spec: ContainerSpec) -> FakeRun:
        prompts.append((mount_source(spec, PROMPT_DIR) / "prompt.md").read_text())
        return report("working")(spec)

    h = Harness(tmp_path, repo, read_prompt, max_iterations=2)
    h.journal.update_control(lambda c: c.notes.append(Note(id="n1", text="prefer small commits")))
    h.run()
    assert "prefer small commits" in prompts[0]
    assert "prefer small commits" not in prompts[1]
    note = h.journal.read_control().notes[0]
    assert note.consumed_iteration == 1 and note.consumed_at is not None
    assert h.journal.read_iteration(1).notes_delivered == ["n1"]
    assert "Iteration 1: working" in prompts[1]


def test_decide_is_pure_and_ordered(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, None, max_iterations=1)
    control = h.journal.read_control()
    assert decide(h.summary, control, 0.0, None) is None
    control.stop_requested = True
    decision = decide(h.summary, control, 0.0, None)
    assert decision is not None and decision.reason is StopReason.STOP_REQUESTED


def test_agent_containers_get_the_protocol_environment(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("done"), max_iterations=4)
    h.run()
    spec = next(s for s in h.backend.runs if s.command[-1] == "fake:agent")
    assert spec.env["HARNESS_SESSION"] == "s"
    assert spec.env["HARNESS_MAX_ITERATIONS"] == "4"
    assert spec.env["HARNESS_STATUS_FILE"] == "/harness-out/status.json"
    assert spec.env["HARNESS_OBJECTIVE_FILE"] == "/harness/objective.md"
    assert {m.target: m.read_only for m in spec.mounts} == {
        "/workspace": False,
        "/harness": True,
        "/harness-out": False,
    }
    assert spec.user == "10001:10001" and spec.network == "none"


def test_the_summary_is_saved_when_the_backend_breaks(tmp_path: Path, repo: GitRepo) -> None:
    from runner.base.errors import TransientBackendError

    def broken(spec: ContainerSpec) -> FakeRun:
        raise TransientBackendError("lost the Docker engine")

    h = Harness(tmp_path, repo, script(report("working"), broken), max_iterations=5)
    with pytest.raises(TransientBackendError):
        h.run()
    saved = h.journal.read_summary()
    assert (saved.status, saved.stop_reason, saved.iteration_count) == (
        RunState.INTERRUPTED,
        StopReason.INFRASTRUCTURE,
        1,
    )
    assert saved.error == "lost the Docker engine"


def test_an_agent_that_changes_nothing_ends_as_stuck(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("working", "thinking"), max_iterations=10, stuck_after=2)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (RunState.STUCK, StopReason.NO_PROGRESS, 2)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agents" / "claude-code"


def rate_limited_answer(spec: ContainerSpec) -> FakeRun:
    """Claude Code's real stream-json output when the API answered 429 (structured error events)."""
    return FakeRun(exit_code=1, output=(FIXTURES / "rate-limit-429.jsonl").read_bytes())


def says_429_and_fails(spec: ContainerSpec) -> FakeRun:
    return FakeRun(exit_code=1, output=b"all 429 tests passed\nAPI Error: 429 Too Many Requests\nrate limit\n")


def _as_claude_code(h: Harness) -> Harness:
    h.summary.agent = AgentInfo(name="claude-code", command=["fake:agent"])
    return h


def test_rate_limits_back_off_without_using_iterations(tmp_path: Path, repo: GitRepo) -> None:
    h = _as_claude_code(Harness(tmp_path, repo, script(rate_limited_answer, rate_limited_answer, report("done")),
                                max_iterations=1, backoff_base_seconds=0.01, backoff_max_seconds=0.02))  # fmt: skip
    result = h.run()
    assert (result.status, result.iteration_count, result.counted_iterations) == (RunState.COMPLETED, 3, 1)
    records = h.journal.iterations()
    assert [r.outcome for r in records] == [Outcome.BACKOFF, Outcome.BACKOFF, Outcome.DONE]
    assert [r.backoff_seconds for r in records] == [0.01, 0.02, None]  # exponential, capped
    assert records[0].agent_report is not None and records[0].agent_report.rate_limited
    assert result.backoff.total == 2 and result.backoff.consecutive == 0
    assert result.consecutive_failures == 0


def test_endless_rate_limits_end_the_run_bounded(tmp_path: Path, repo: GitRepo) -> None:
    h = _as_claude_code(Harness(tmp_path, repo, rate_limited_answer, max_iterations=1, backoff_base_seconds=0.01,
                                backoff_max_seconds=0.01, max_backoffs=3))  # fmt: skip
    result = h.run()
    assert (result.status, result.stop_reason, result.backoff.total) == (RunState.STOPPED, StopReason.RATE_LIMITED, 4)


@pytest.mark.parametrize("agent", ["claude-code", "custom", "demo", "codex", "aider"])
def test_text_that_mentions_429_is_a_failure_never_a_backoff(tmp_path: Path, repo: GitRepo, agent: str) -> None:
    h = Harness(tmp_path, repo, says_429_and_fails, max_iterations=1, backoff_base_seconds=0.01)
    h.summary.agent = AgentInfo(name=agent, command=["fake:agent"])
    result = h.run()
    record = h.journal.iterations()[0]
    assert (record.outcome, record.backoff_seconds, result.backoff.total) == (Outcome.AGENT_ERROR, None, 0)


def test_rate_limit_facts_come_from_the_gateway_first_then_structured_events() -> None:
    from runner.record.models import AgentReport, GatewayUsage

    seen = GatewayUsage(rate_limited=1, retry_after_seconds=7.0)
    assert rate_limit(Outcome.AGENT_ERROR, seen, 429, None) == (True, 7.0)
    assert rate_limit(Outcome.NO_REPORT, seen, 529, None) == (True, 7.0)
    # A 429 the agent recovered from (its last answer was a 200) does not make a later failure a backoff.
    assert rate_limit(Outcome.AGENT_ERROR, seen, 200, None) == (False, None)
    assert rate_limit(Outcome.AGENT_ERROR, None, None, AgentReport(rate_limited=True, retry_after_seconds=3)) == (
        True, 3)  # fmt: skip
    assert rate_limit(Outcome.DONE, seen, 429, AgentReport(rate_limited=True)) == (False, None)
    assert rate_limit(Outcome.TIMED_OUT, seen, 429, None) == (False, None)


def test_max_cost_spent_stops_the_run_before_another_iteration(tmp_path: Path, repo: GitRepo) -> None:
    from runner.record.models import GatewayUsage

    h = Harness(tmp_path, repo, report("working"), max_iterations=5, max_cost_usd=1.0)
    h.summary.usage = GatewayUsage(requests=3, cost_usd=1.25)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (RunState.STOPPED, StopReason.MAX_COST, 0)
    h.summary.limits = h.summary.limits.model_copy(update={"max_cost_usd": 2.0})
    assert decide(h.summary, ControlFile(session_id="s"), 0.0, None) is None  # resume with more continues


def test_max_tokens_spent_stops_the_run_and_a_token_refusal_is_named_max_tokens(tmp_path: Path, repo: GitRepo) -> None:
    from runner.record.models import GatewayUsage

    h = Harness(tmp_path, repo, report("working"), max_iterations=5, max_tokens=10_000)
    h.summary.usage = GatewayUsage(requests=3, budget_tokens=10_000)
    result = h.run()
    assert (result.status, result.stop_reason, result.iteration_count) == (RunState.STOPPED, StopReason.MAX_TOKENS, 0)
    h.summary.usage = GatewayUsage(requests=3, budget_tokens=9_999)
    assert decide(h.summary, ControlFile(session_id="s"), 0.0, None) is None  # under the cap: it goes on
    refused = GatewayUsage(refused_budget=1, refused_tokens=1)
    last = IterationRecord(session_id="s", iteration=1, outcome=Outcome.BUDGET, usage=refused, limits=h.summary.limits,
                           log_file="iteration-0001.log", started_at=h.summary.created_at)  # fmt: skip
    assert decide(h.summary, ControlFile(session_id="s"), 0.0, last) == Decision(
        RunState.STOPPED, StopReason.MAX_TOKENS
    )
    dollars = last.model_copy(update={"usage": GatewayUsage(refused_budget=1)})
    assert decide(h.summary, ControlFile(session_id="s"), 0.0, dollars) == Decision(
        RunState.STOPPED, StopReason.MAX_COST
    )


def test_a_graceful_interrupt_stops_the_container_and_ends_stopped(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, None, max_iterations=5)
    sup = Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git)

    def ctrl_c_during_iteration(spec: ContainerSpec) -> FakeRun:
        sup.stop_event.set()  # what the first Ctrl-C does
        return FakeRun(hang=True)  # until the watchdog sees the request and stops it

    h.agent = ctrl_c_during_iteration
    result = sup.run(h.summary)
    assert (result.status, result.stop_reason, result.iteration_count) == (RunState.STOPPED, StopReason.INTERRUPTED, 1)
    record = h.journal.read_iteration(1)
    assert (record.outcome, record.failure_class) == (Outcome.INTERRUPTED, FailureClass.INTERRUPTED)


def test_sigterm_ends_the_run_interrupted_for_the_service_to_resume(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, None, max_iterations=5)
    event = StopEvent()
    sup = Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git, stop_event=event)

    def shutdown_during_iteration(spec: ContainerSpec) -> FakeRun:
        event.signum = signal.SIGTERM  # what the CLI's handler records for the first SIGTERM (a shutdown)
        event.set()
        return FakeRun(hang=True)

    h.agent = shutdown_during_iteration
    result = sup.run(h.summary)
    assert (result.status, result.stop_reason) == (RunState.INTERRUPTED, StopReason.TERMINATED)


def test_the_heartbeat_advances_during_a_long_iteration(tmp_path: Path, repo: GitRepo) -> None:
    import time

    h = Harness(tmp_path, repo, None, max_iterations=1)
    beats = []

    def slow(spec: ContainerSpec) -> FakeRun:
        for _ in range(3):
            time.sleep(0.15)
            info = h.journal.read_summary().supervisor
            assert info is not None
            beats.append(info.heartbeat_at)
        return report("done")(spec)

    h.agent = slow
    Supervisor(backend=h.backend, journal=h.journal, workspace=h.workspace, git=h.git, heartbeat_seconds=0.05).run(
        h.summary
    )
    assert beats == sorted(beats) and len(set(beats)) == 3
    assert h.journal.read_summary().supervisor is None


def test_gvisor_gets_a_host_task_cap_scaled_from_pids() -> None:
    from runner.sandbox.container import hardened_spec, host_task_limit

    lim = Limits(pids=100)
    runc = hardened_spec(image="i", command=["x"], limits=lim, mounts=(), labels={})
    runsc = hardened_spec(image="i", command=["x"], limits=lim, mounts=(), labels={}, runtime="runsc")
    assert runc.pids == 100
    assert runsc.pids == host_task_limit(100, "runsc") > 100 * 18  # room for ~18 host threads a process


def test_helpers_get_their_own_process_floor(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("done"), pids=20)
    h.run()
    helper = next(s for s in h.backend.runs if s.labels.get("io.solo-harness.role") == "helper")
    agent = next(s for s in h.backend.runs if s.labels.get("io.solo-harness.role") == "agent")
    assert agent.pids == 20 and helper.pids >= 512


def test_done_over_the_disk_limit_is_stopped_not_completed(tmp_path: Path, repo: GitRepo) -> None:
    h = Harness(tmp_path, repo, report("done"), max_iterations=3)
    control = h.journal.read_control()
    record = IterationRecord(session_id="s", iteration=1, outcome=Outcome.DONE, disk_exceeded=True,
                             log_file="x", limits=h.summary.limits, started_at=h.summary.created_at)  # fmt: skip
    decision = decide(h.summary, control, 0.0, record)
    assert decision is not None and decision.reason is StopReason.MAX_DISK


def test_done_completes_only_when_the_check_passes(tmp_path: Path, repo: GitRepo) -> None:
    prompts: list[str] = []

    def done_reading_prompt(spec: ContainerSpec) -> FakeRun:
        prompts.append((mount_source(spec, PROMPT_DIR) / "prompt.md").read_text())
        return report("done", "all good")(spec)

    h = Harness(tmp_path, repo, done_reading_prompt, max_iterations=5, max_consecutive_failures=2)
    h.summary.check_command = "pytest -q"
    h.backend.check_exit = 1
    result = h.run()
    assert (result.status, result.stop_reason) == (RunState.FAILED, StopReason.REPEATED_FAILURES)
    first = h.journal.read_iteration(1)
    assert (first.outcome, first.failure_class, first.should_stop) == (Outcome.CHECK_FAILED, FailureClass.CHECK, False)
    assert first.check is not None and not first.check.passed and first.check.exit_code == 1
    assert (h.journal.dir / first.check.log_file).read_text() == "check exited 1\n"
    assert "and `pytest -q` passes" in prompts[0]
    assert "# The check failed" in prompts[1] and "check exited 1" in prompts[1]
    check = next(s for s in h.backend.runs if s.labels.get("io.solo-harness.role") == "check")
    assert [(m.target, m.read_only) for m in check.mounts] == [("/workspace", True)]

    h2 = Harness(tmp_path / "second", repo, report("done"), max_iterations=5)
    h2.summary.check_command = "pytest -q"
    assert h2.run().status is RunState.COMPLETED
    record = h2.journal.read_iteration(1)
    assert record.outcome is Outcome.DONE and record.check is not None and record.check.passed


def test_stop_now_and_the_deadline_end_an_iteration_whose_container_never_starts(tmp_path: Path, repo: GitRepo) -> None:
    """A container still starting (a pod no node takes yet: runner.backends.kubernetes) is under the watchdog:
    `stop --now` and the iteration timeout end it, and nothing is harvested, since the agent never ran."""
    h = Harness(tmp_path, repo, None, max_iterations=5, iteration_timeout_seconds=0.3, max_consecutive_failures=1)
    h.agent = lambda spec: FakeRun(pending=True)
    result = h.run()
    record = h.journal.read_iteration(1)
    assert (result.status, result.stop_reason) == (RunState.FAILED, StopReason.REPEATED_FAILURES)
    assert (record.outcome, record.timed_out, record.exit_code) == (Outcome.TIMED_OUT, True, None)
    assert [s.labels["io.solo-harness.role"] for s in h.backend.runs] == ["agent"]  # no checkpoint helper

    h2 = Harness(tmp_path / "second", repo, None, max_iterations=5)

    def stop_now(spec: ContainerSpec) -> FakeRun:
        h2.journal.update_control(lambda c: (setattr(c, "stop_requested", True), setattr(c, "stop_mode", "now")))
        return FakeRun(pending=True)

    h2.agent = stop_now
    result = h2.run()
    record = h2.journal.read_iteration(1)
    assert (result.status, result.stop_reason, result.iteration_count) == (
        RunState.STOPPED,
        StopReason.STOP_REQUESTED,
        1,
    )
    assert (record.outcome, record.exit_code) == (Outcome.INTERRUPTED, None)
    assert [s.labels["io.solo-harness.role"] for s in h2.backend.runs] == ["agent"]
