"""The hud on recorded journals and a fake backend, rendered to a recorded rich Console (no engine)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from runner.backends.base import ContainerStats
from runner.backends.fake import FakeBackend
from runner.base.paths import repo_key
from runner.cli import render
from runner.record.journal import Journal
from runner.record.models import (
    GatewayUsage,
    IterationRecord,
    Limits,
    Note,
    Outcome,
    RunState,
    StopReason,
    TokenUsage,
    utcnow,
)
from runner.sandbox.container import labels
from runner.usecases import hud as hud_core
from runner.usecases.hud import HudRequest, HudSnapshot, snapshot
from tests.helpers import GitRepo
from tests.unit.test_readers import record_session


@pytest.fixture
def held() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def text_of(snap: HudSnapshot, width: int = 140) -> str:
    console = Console(record=True, width=width, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(render.hud(snap))
    return console.export_text()


def row(text: str, key: str) -> str:
    """The value of one header row ('│ key   value   │' -> 'value')."""
    for line in text.splitlines():
        cells = line.strip("│ ").split(None, 1)
        if cells and cells[0] == key:
            return cells[1].rstrip("│ ").strip()
    raise AssertionError(f"no row {key!r} in:\n{text}")


def assert_clock(text: str, pattern: str, elapsed: int, limit: int) -> None:
    """`text` reads `pattern`, whose groups are an elapsed and a left time as XmYYs: `elapsed` seconds or up to
    10 more (the clock runs on while the test does: seconds on a loaded machine), and the two make `limit`."""
    found = re.fullmatch(pattern, text)
    assert found, (pattern, text)
    used, left = (int(found[i]) * 60 + int(found[i + 1]) for i in (1, 3))
    assert elapsed <= used < elapsed + 10 and used + left == limit, text


def running_session(repo: GitRepo, held: ExitStack) -> tuple[Journal, FakeBackend]:
    """Iteration 4 of 6 runs (its agent prints), 3 are recorded, one note waits; the supervisor lives."""
    limits = Limits(max_iterations=6, max_time_seconds=3600, iteration_timeout_seconds=1800)
    journal = record_session(
        repo, "h1", state=RunState.RUNNING, iterations=3, live=True, limits=limits,
        notes=[Note(id="n-old", text="seen", consumed_at=utcnow(), consumed_iteration=2),
               Note(id="n-new", text="use the new API\nsecond line", created_at=utcnow())],
        logs={4: b"step a\nstep b\n\x1b[2Jstep c\n"},
    )  # fmt: skip
    usage = GatewayUsage(requests=3, tokens=TokenUsage(input_tokens=12000, output_tokens=800), cost_usd=0.42)
    record = journal.read_iteration(2).model_copy(update={"usage": usage})
    journal.write_iteration(record)
    held.enter_context(journal.supervisor_lock())
    top = repo.path.resolve()
    backend = FakeBackend()
    backend.existing["c-agent"] = labels("h1", repo_key(top), "agent")
    backend.existing["c-helper"] = labels("h1", repo_key(top), "helper")
    now = utcnow()
    backend.samples["c-agent"] = ContainerStats(
        container_id="c-agent", cpu_seconds=60.0, cpus_limit=1.0, memory_bytes=256 * 1024**2,
        memory_limit_bytes=2 * 1024**3, pids=5, pids_limit=512, started_at=now - timedelta(seconds=120), read_at=now,
    )  # fmt: skip
    return journal, backend


def test_the_hud_shows_time_container_use_tokens_and_waiting_notes(repo: GitRepo, held: ExitStack) -> None:
    _, backend = running_session(repo, held)
    snap = snapshot(HudRequest(repo=repo.path, session="h1"), backend)
    assert snap.status.status is RunState.RUNNING and snap.running_iteration == 4
    assert snap.current_iteration == 4 and "step c" in snap.log_tail and "\x1b" not in snap.log_tail
    assert snap.time_left_seconds is not None and 3290 < snap.time_left_seconds <= 3300  # 5 min of 1 h used
    assert snap.iteration_timeout_seconds == 1800
    assert snap.iteration_elapsed_seconds is not None and 119 < snap.iteration_elapsed_seconds < 130
    assert snap.container is not None and snap.container.container_id == "c-agent"
    assert snap.container.cpus == pytest.approx(0.5, rel=0.01)  # 60 CPU-seconds over 120 s
    assert [n.id for n in snap.notes_waiting] == ["n-new"]

    text = text_of(snap)
    assert row(text, "state") == "running" and row(text, "iterations") == "3 of 6"
    assert "(1 commit ahead of" in row(text, "branch")
    assert_clock(row(text, "time"), r"(\d+)m(\d\d)s elapsed, (\d+)m(\d\d)s left of 1h00m", 300, 3600)
    assert_clock(row(text, "iteration"), r"4 running for (\d+)m(\d\d)s, (\d+)m(\d\d)s left of 30m00s", 120, 1800)
    assert row(text, "container") == "0.50 CPU of 1, 256 MiB of 2 GiB memory, 5 of 512 processes"
    assert row(text, "notes") == "1 note for the next iteration: use the new API"
    assert "TOKENS / COST" in text and "12.8k, $0.42" in text
    assert "output of iteration 4" in text and "step c" in text


def test_the_cpu_rate_is_measured_between_two_frames(repo: GitRepo, held: ExitStack) -> None:
    _, backend = running_session(repo, held)
    request = HudRequest(repo=repo.path, session="h1")
    first = snapshot(request, backend)
    assert first.container is not None
    old = backend.samples["c-agent"]
    backend.samples["c-agent"] = ContainerStats(
        **{**old.__dict__, "cpu_seconds": old.cpu_seconds + 1.5, "read_at": old.read_at + timedelta(seconds=2)}
    )
    second = snapshot(request, backend, previous=first)
    assert second.container is not None and second.container.cpus == pytest.approx(0.75)


def test_an_unreachable_engine_leaves_the_rest_of_the_hud(repo: GitRepo, held: ExitStack) -> None:
    from runner.base.errors import EngineUnavailableError

    _, backend = running_session(repo, held)

    def unreachable(labels: dict[str, str]) -> dict[str, dict[str, str]]:
        raise EngineUnavailableError("cannot reach the Docker engine")

    backend.list_containers = unreachable  # type: ignore[method-assign]
    snap = snapshot(HudRequest(repo=repo.path, session="h1"), backend)
    assert snap.container is None and snap.container_error == "cannot reach the Docker engine"
    assert row(text_of(snap), "container") == "use unknown: cannot reach the Docker engine"
    assert row(text_of(snap), "iterations") == "3 of 6"


def test_header_and_table_come_from_one_moment(repo: GitRepo, held: ExitStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor has written iteration 4 (done) but not yet the summary that ends the run:
    the snapshot reads again, and the header never lags its own table."""
    journal, backend = running_session(repo, held)
    record = journal.read_iteration(3).model_copy(update={"iteration": 4, "outcome": Outcome.DONE, "summary": "fin"})
    journal.write_iteration(record)
    waits = []

    def supervisor_catches_up(seconds: float) -> None:
        # Instead of waiting: what the supervisor does next (absorb the record, end the run).
        waits.append(seconds)
        summary = journal.read_summary()
        summary.iteration_count = summary.last_iteration = 4
        summary.last_outcome, summary.status = Outcome.DONE, RunState.COMPLETED
        summary.stop_reason = StopReason.AGENT_DONE
        summary.supervisor, summary.finished_at = None, utcnow()
        journal.write_summary(summary)

    monkeypatch.setattr(hud_core.time, "sleep", supervisor_catches_up)
    snap = snapshot(HudRequest(repo=repo.path, session="h1"), backend)
    assert waits, "the inconsistent first read was not noticed"
    text = text_of(snap)
    assert row(text, "state").startswith("completed") and row(text, "iterations") == "4 of 6"
    assert [r.iteration for r in snap.iterations] == [1, 2, 3, 4] and snap.running_iteration is None
    assert "iteration" not in [line.strip("│ ").split(None, 1)[0] for line in text.splitlines() if line.strip("│ ")]


def test_when_the_journal_stays_inconsistent_the_header_counts_the_table(
    repo: GitRepo, held: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, backend = running_session(repo, held)
    record = journal.read_iteration(3).model_copy(update={"iteration": 4, "outcome": Outcome.WORKING})
    journal.write_iteration(record)
    monkeypatch.setattr(hud_core.time, "sleep", lambda seconds: None)
    snap = snapshot(HudRequest(repo=repo.path, session="h1"), backend)
    assert row(text_of(snap), "iterations") == "4 of 6" and snap.status.last_outcome is Outcome.WORKING


def test_a_finished_run_shows_its_duration_and_no_live_rows(repo: GitRepo) -> None:
    record_session(repo, "h2", iterations=1, max_iterations=3)
    snap = snapshot(HudRequest(repo=repo.path, session="h2"), FakeBackend())
    text = text_of(snap)
    assert row(text, "state").startswith("completed") and row(text, "iterations") == "1 of 3"
    assert row(text, "time").endswith("elapsed") and "left" not in row(text, "time")
    assert snap.container is None and snap.running_iteration is None and "TOKENS" not in text


def test_agent_text_in_the_hud_is_never_markup_or_escapes(repo: GitRepo, held: ExitStack) -> None:
    journal, backend = running_session(repo, held)
    journal.update_control(lambda c: c.notes.append(Note(id="n-evil", text="[bold red]x[/] \x1b]0;t\x07")))
    record: IterationRecord = journal.read_iteration(1).model_copy(update={"summary": "[link=x]y[/link] \x1b[2J"})
    journal.write_iteration(record)
    text = text_of(snapshot(HudRequest(repo=repo.path, session="h1"), backend))
    assert "[bold red]x[/]" in text and "[link=x]y[/link]" in text and "\x1b" not in text


def test_status_says_one_commit(repo: GitRepo, tmp_path: Path) -> None:
    record_session(repo, "h3")
    from runner.usecases.status import StatusRequest, get_status

    console = Console(record=True, width=120, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(render._session_grid(get_status(StatusRequest(repo=repo.path, session="h3")), detailed=True))
    assert "(1 commit ahead of" in console.export_text()


def test_a_session_waiting_for_a_usage_limit_says_until_when_in_the_hud_and_status(
    repo: GitRepo, held: ExitStack
) -> None:
    from runner.record.models import UsageLimitWait

    journal, backend = running_session(repo, held)
    summary = journal.read_summary()
    resets = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    summary.usage_limit = UsageLimitWait(total=1, resets_at=resets, window="5-hour", until=resets)
    journal.write_summary(summary)
    snap = snapshot(HudRequest(repo=repo.path, session="h1"), backend)
    local = resets.astimezone()
    when = local.strftime("%H:%M") if local.date() == datetime.now().astimezone().date() else local.strftime("%a %H:%M")
    expected = f"waiting for the limit to reset at {when} (5-hour window)"
    assert snap.usage_limit == expected
    assert any(line.strip("│ ").startswith("usage limit") and expected in line for line in text_of(snap).splitlines())
    assert expected in snap.status.verdict
    # Control: once the wait is over, neither says it.
    summary.usage_limit = summary.usage_limit.model_copy(update={"until": None})
    journal.write_summary(summary)
    after = snapshot(HudRequest(repo=repo.path, session="h1"), backend)
    assert after.usage_limit is None and "waiting for the limit" not in after.status.verdict
