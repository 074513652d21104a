import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from runner.base.errors import JournalError
from runner.record.journal import Journal, load_model
from runner.record.models import (
    AgentInfo,
    ControlFile,
    IterationRecord,
    Limits,
    Note,
    Outcome,
    RunState,
    RunSummary,
    StatusReport,
    WorktreeInfo,
)

SHA = "a" * 40


def summary() -> RunSummary:
    return RunSummary(
        session_id="nightly",
        objective="do it",
        max_iterations=5,
        worktree=WorktreeInfo(base_ref="HEAD", base_commit=SHA, path="/x/workspace", branch="harness/nightly"),
        repo="/repo",
        run_dir="/x",
        image="harness-base:latest",
        agent=AgentInfo(name="demo", command=["harness-demo-agent"]),
        limits=Limits(),
    )


def test_run_summary_round_trips_with_the_original_field_names(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "nightly")
    original = summary()
    journal.write_summary(original)
    raw = json.loads(journal.summary_path.read_text())
    for key in (
        "schemaVersion",
        "kind",
        "sessionId",
        "objective",
        "status",
        "iterationCount",
        "lastIteration",
        "lastOutcome",
        "stopRequested",
        "worktree",
        "createdAt",
        "updatedAt",
    ):
        assert key in raw, key
    assert raw["kind"] == "solo-harness.run-summary"
    assert raw["worktree"] == {
        "enabled": True,
        "baseRef": "HEAD",
        "baseCommit": SHA,
        "path": "/x/workspace",
        "branch": "harness/nightly",
        "seed": None,
        "lower": None,
    }
    again = journal.read_summary()
    assert again == original.model_copy(update={"updated_at": again.updated_at})


def test_iteration_record_round_trips(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "s")
    record = IterationRecord(
        session_id="s",
        iteration=3,
        outcome=Outcome.TIMED_OUT,
        timed_out=True,
        log_file="iteration-0003.log",
        limits=Limits(),
        started_at=datetime.now(UTC),
        commits=[SHA],
    )
    journal.write_iteration(record)
    raw = json.loads(journal.iteration_path(3).read_text())
    assert raw["outcome"] == "timed-out" and raw["timedOut"] is True and raw["shouldStop"] is False
    assert "failureClass" in raw and "nextAction" in raw
    assert journal.read_iteration(3) == record


def test_the_journal_names_its_files(tmp_path: Path) -> None:
    """The names of design §3 and docs/journal.md, which the original tool's readers know."""
    journal = Journal(tmp_path, "s")
    named = {
        journal.objective_path: "objective.md",
        journal.summary_path: "run-summary.json",
        journal.control_path: "control.json",
        journal.iteration_path(12): "iteration-0012.json",
        journal.log_path(12): "iteration-0012.log",
        journal.check_log_path(12): "iteration-0012.check.log",
        journal.setup_log_path: "setup.log",
        journal.supervisor_log_path: "supervisor.log",
    }
    assert all(path == tmp_path / name for path, name in named.items())
    for n in (10, 2):
        journal.log_path(n).write_text("")
    journal.check_log_path(11).write_text("")  # a check's log is not an iteration's
    (tmp_path / "iteration-0003.log.tmp").write_text("")
    assert journal.logged_iterations() == [2, 10]  # in order of iteration


def test_control_round_trips(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "s")
    journal.update_control(lambda c: c.notes.append(Note(id="n1", text="use pytest")))
    control = journal.read_control()
    assert control.kind == "solo-harness.control"
    assert [n.text for n in control.notes] == ["use pytest"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(kind="solo-harness.iteration"),
        lambda d: d.update(iterationCount=-1),
        lambda d: d.update(status="sleeping"),
        lambda d: d["worktree"].update(baseCommit="not-a-sha"),
        lambda d: d.update(schemaVersion=99),
        lambda d: d.pop("sessionId"),
        lambda d: d["limits"].update(cpus=0),
    ],
)
def test_bad_summaries_are_rejected_with_the_file_named(tmp_path: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(summary().dump_json())
    mutate(data)
    path = tmp_path / "run-summary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(JournalError) as info:
        load_model(path, RunSummary)
    assert str(path) in info.value.message


@pytest.mark.parametrize("content", ["", "{", "[]", "null", '{"kind": "solo-harness.control"}'])
def test_corrupt_files_give_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "control.json"
    path.write_text(content)
    with pytest.raises(JournalError, match=r"control\.json"):
        load_model(path, ControlFile)


def test_status_report_accepts_only_the_protocol_states() -> None:
    assert StatusReport.model_validate({"state": "done", "summary": "ok"}).state == "done"
    for bad in ({"state": "finished"}, {"summary": "no state"}, {"state": "done", "summary": "x" * 20_000}):
        with pytest.raises(ValidationError):
            StatusReport.model_validate(bad)


def test_state_values_are_stable() -> None:
    assert {s.value for s in RunState} == {
        "running",
        "completed",
        "blocked",
        "stopped",
        "failed",
        "interrupted",
        "stuck",
        "queued",
    }


def test_sessions_of_a_repository_are_found_by_their_summaries(tmp_path: Path) -> None:
    from runner.record.journal import list_sessions

    for session in ("b-night", "a-night"):
        journal = Journal.for_repo(tmp_path, session)
        journal.create("x")
        journal.write_summary(summary().model_copy(update={"session_id": session}))
    Journal.for_repo(tmp_path, "no-summary-yet").create("x")
    assert list_sessions(tmp_path) == ["a-night", "b-night"]
