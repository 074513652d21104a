"""The review's findings are one model embedded in the results of diff, merge, status and report, and
their JSON keeps the flat shape it has always had: the same keys, in the same order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runner.record.flagged import FlagReason
from runner.record.models import DiffStat, GatewayUsage, RunState
from runner.usecases.hud import HudSnapshot
from runner.usecases.merge import DiffResult, MergeResult
from runner.usecases.report import FlaggedPath, SessionReport
from runner.usecases.review.findings import Findings
from runner.usecases.status import SessionStatus

T = datetime(2026, 1, 1, tzinfo=UTC)
FOUND = Findings(
    files=["x", "y"],
    reasons={".envrc": [FlagReason.RUNS_LATER]},
    links={"l": "t"},
    would_overwrite=["w"],
    journal_paths=["j"],
)


def status(findings: Findings) -> SessionStatus:
    return SessionStatus(session_id="s", repo="/r", status=RunState.COMPLETED, stop_reason=None,
                         supervisor_alive=False, iteration_count=1, max_iterations=2, last_outcome=None,
                         last_summary=None, branch="b", base_commit="a", head_commit="h", commits_ahead=1,
                         objective="o", journal_dir="/j", workspace="/w", error=None, usage=GatewayUsage(),
                         max_cost_usd=None, network="none", created_at=T, updated_at=T, finished_at=None,
                         findings=findings)  # fmt: skip


def as_json(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return data


def test_diff_prints_the_findings_after_its_own_files() -> None:
    result = DiffResult(session_id="s", branch="b", base_commit="a", head_commit="h", files=["x"],
                        findings=FOUND, diff_stat=DiffStat(), patch="p")  # fmt: skip
    data = as_json(result)
    assert list(data) == ["sessionId", "branch", "baseCommit", "headCommit", "files", "flagged", "reasons", "links",
                          "wouldOverwrite", "journalPaths", "diffStat", "patch"]  # fmt: skip
    assert data["files"] == ["x"]  # the patch's files, not the findings' (which add what a merge into HEAD writes)
    assert data["flagged"] == [".envrc"] and data["reasons"] == {".envrc": ["runs-later"]}
    assert (data["links"], data["wouldOverwrite"], data["journalPaths"]) == ({"l": "t"}, ["w"], ["j"])
    python = ["session_id", "branch", "base_commit", "head_commit", "files", "flagged", "reasons", "links",
              "would_overwrite", "journal_paths", "diff_stat", "patch"]  # fmt: skip
    assert list(result.model_dump()) == python


def test_merge_prints_the_flagged_paths_and_their_reasons() -> None:
    result = MergeResult(session_id="s", branch="b", into="main", squash=False, merged_commit="c", findings=FOUND)
    assert as_json(result) == {"sessionId": "s", "branch": "b", "into": "main", "squash": False, "mergedCommit": "c",
                               "flagged": [".envrc"], "reasons": {".envrc": ["runs-later"]}}  # fmt: skip
    assert list(as_json(result)) == ["sessionId", "branch", "into", "squash", "mergedCommit", "flagged", "reasons"]


def test_status_prints_the_findings_where_it_always_did_also_inside_the_hud() -> None:
    data = as_json(status(FOUND))
    keys = list(data)
    assert keys[keys.index("commitsAhead") + 1] == "flagged"
    assert keys[keys.index("usageLimit") + 1 : keys.index("discardedRef")] == [
        "reasons",
        "wouldOverwrite",
        "journalPaths",
    ]
    assert "links" not in data and "files" not in data
    assert (data["flagged"], data["wouldOverwrite"], data["journalPaths"]) == ([".envrc"], ["w"], ["j"])
    empty = as_json(status(Findings.none()))
    assert (empty["flagged"], empty["reasons"], empty["wouldOverwrite"], empty["journalPaths"]) == ([], {}, [], [])
    hud = HudSnapshot(status=status(FOUND), iterations=[], current_iteration=None, log_tail="", taken_at=T,
                      elapsed_seconds=1.0, max_time_seconds=None, time_left_seconds=None)  # fmt: skip
    assert as_json(hud)["status"] == data


def test_report_prints_its_own_flagged_paths_and_the_findings_a_merge_refuses_over() -> None:
    flagged = [FlaggedPath(path=".envrc", reasons=[FlagReason.RUNS_LATER], why=["w"], link_target=None)]
    report = SessionReport(session_id="s", repo="/r", objective="o", status=RunState.COMPLETED, stop_reason=None,
                           verdict="v", error=None, flagged=flagged, commands=[], iteration_count=1, max_iterations=2,
                           iterations=[], check_command=None, last_check=None, branch="b", base_commit="a",
                           head_commit="h", commits_ahead=1, discarded_ref=None, diff_stat=None, notes=[],
                           stop_note=None, usage=GatewayUsage(), max_cost_usd=None, created_at=T, finished_at=None,
                           findings=FOUND)  # fmt: skip
    data = as_json(report)
    keys = list(data)
    assert keys[keys.index("flagged") : keys.index("flagged") + 4] == ["flagged", "wouldOverwrite", "journalPaths",
                                                                        "commands"]  # fmt: skip
    assert keys[keys.index("diffStat") + 1 : keys.index("diffStat") + 3] == ["files", "notes"]
    assert data["flagged"][0]["path"] == ".envrc" and data["files"] == ["x", "y"]
    assert "reasons" not in data and "links" not in data


def test_a_report_read_back_from_its_json_has_its_findings_again() -> None:
    found = Findings(files=["x", ".envrc", "l"], reasons={".envrc": [FlagReason.RUNS_LATER], "l": [FlagReason.LINK]},
                     links={"l": "t"}, would_overwrite=["x"], journal_paths=["j"])  # fmt: skip
    flagged = [FlaggedPath(path=".envrc", reasons=[FlagReason.RUNS_LATER], why=["w"], link_target=None),
               FlaggedPath(path="l", reasons=[FlagReason.LINK], why=["a link"], link_target="t")]  # fmt: skip
    report = SessionReport(session_id="s", repo="/r", objective="o", status=RunState.COMPLETED, stop_reason=None,
                           verdict="v", error=None, flagged=flagged, commands=[], iteration_count=1, max_iterations=2,
                           iterations=[], check_command=None, last_check=None, branch="b", base_commit="a",
                           head_commit="h", commits_ahead=1, discarded_ref=None, diff_stat=None, notes=[],
                           stop_note=None, usage=GatewayUsage(), max_cost_usd=None, created_at=T, finished_at=None,
                           findings=found)  # fmt: skip
    text = report.model_dump_json(by_alias=True)
    assert SessionReport.model_validate_json(text) == report
    assert SessionReport.model_validate(report.model_dump()) == report  # by field names too
    assert SessionReport.model_validate(report.model_dump(by_alias=True)).model_dump_json(by_alias=True) == text
