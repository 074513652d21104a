"""Which sessions the user service resumes after a reboot (runner/usecases/autoresume.py `why_resume`), rule by
rule, and its wait for an engine that starts after it. The service's work on the real engine is tested in
tests/integration/test_service_resume.py."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from runner.backends.base import EngineInfo
from runner.base.errors import EngineUnavailableError
from runner.record.models import (
    AutoResume,
    ControlFile,
    RunState,
    RunSummary,
    StopReason,
    SupervisorInfo,
    utcnow,
)
from runner.usecases import autoresume
from tests.unit.test_models import summary as a_summary

BOOT = utcnow()
BEFORE = BOOT - timedelta(minutes=5)  # the supervisor's last sign of life: before this boot
HERE = socket.gethostname()


def dead_before_boot(status: RunState, reason: StopReason | None = None, **changes: object) -> RunSummary:
    supervisor = SupervisorInfo(pid=1, host=HERE)
    live = {"status": status, "stop_reason": reason, "updated_at": BEFORE, "supervisor": supervisor}
    return a_summary().model_copy(update={**live, **changes})


def why(summary: RunSummary, *, alive: bool = False, stop: bool = False) -> str | None:
    control = ControlFile(session_id=summary.session_id, stop_requested=stop)
    return autoresume.why_resume(summary, control, alive=alive, booted_at=BOOT)


def test_live_when_it_died_before_this_boot_is_resumed() -> None:
    assert why(dead_before_boot(RunState.RUNNING)) == "its supervisor died while it ran"
    assert why(dead_before_boot(RunState.QUEUED)) == "its supervisor died while it waited in the queue"
    terminated = dead_before_boot(RunState.INTERRUPTED, StopReason.TERMINATED, supervisor=None)
    assert why(terminated) == "its supervisor was terminated (SIGTERM) while it ran"
    parked = dead_before_boot(RunState.QUEUED, StopReason.TERMINATED, supervisor=None)
    assert why(parked) == "its supervisor was terminated (SIGTERM) while it waited in the queue"
    fault = dead_before_boot(RunState.INTERRUPTED, StopReason.INFRASTRUCTURE, supervisor=None, error="engine gone")
    assert why(fault) == "an infrastructure fault ended it: engine gone"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (RunState.STOPPED, StopReason.STOP_REQUESTED),  # the user stopped it
        (RunState.STOPPED, StopReason.INTERRUPTED),  # Ctrl-C: the user's
        (RunState.INTERRUPTED, StopReason.INTERRUPTED),  # Ctrl-C twice
        (RunState.QUEUED, None),  # parked in the queue by Ctrl-C (no supervisor recorded, no SIGTERM)
        (RunState.COMPLETED, StopReason.AGENT_DONE),
        (RunState.BLOCKED, StopReason.AGENT_BLOCKED),
        (RunState.FAILED, StopReason.REPEATED_FAILURES),
        (RunState.STUCK, StopReason.NO_PROGRESS),
        (RunState.STOPPED, StopReason.MAX_ITERATIONS),
    ],
)
def test_what_the_user_stopped_or_what_ended_is_never_resumed(status: RunState, reason: StopReason | None) -> None:
    assert why(dead_before_boot(status, reason, supervisor=None)) is None


def test_a_live_supervisor_a_stop_request_a_later_death_another_host_or_a_given_up_session_are_left() -> None:
    running = dead_before_boot(RunState.RUNNING)
    assert why(running, alive=True) is None
    assert why(running, stop=True) is None  # asked to stop before the machine went down
    assert why(running.model_copy(update={"updated_at": BOOT + timedelta(seconds=1)})) is None  # died since boot
    other = running.model_copy(update={"supervisor": SupervisorInfo(pid=1, host=f"not-{HERE}")})
    assert why(other) is None
    assert why(running.model_copy(update={"auto_resume": AutoResume(gave_up="it keeps dying")})) is None
    no_boot = autoresume.why_resume(
        running.model_copy(update={"updated_at": utcnow()}), ControlFile(session_id="nightly"), alive=False,
        booted_at=None,
    )  # fmt: skip
    assert no_boot == "its supervisor died while it ran"  # no boot time known: any dead supervisor counts


class SlowEngine:
    """An engine that answers on its third check (Docker starting after the user's service)."""

    def __init__(self) -> None:
        self.checks = 0

    def check(self) -> EngineInfo:
        self.checks += 1
        if self.checks < 3:
            raise EngineUnavailableError("Cannot connect to the Docker daemon")
        return EngineInfo(name="docker", version="20.10", runtimes=("runc",))


def test_the_service_waits_for_the_engine_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = SlowEngine()
    monkeypatch.setattr(autoresume, "open_engine", lambda ref: engine)
    monkeypatch.setattr(autoresume, "ENGINE_POLL_SECONDS", 0.01)
    assert autoresume._engine_when_up(a_summary(), 10.0) is engine and engine.checks == 3
    never = SlowEngine()
    never.checks = -10_000
    monkeypatch.setattr(autoresume, "open_engine", lambda ref: never)
    with pytest.raises(EngineUnavailableError, match=r"did not answer within 0.05s: Cannot connect"):
        autoresume._engine_when_up(a_summary(), 0.05)
