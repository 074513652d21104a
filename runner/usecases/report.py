"""Core of `harness report`: everything needed to decide about a session in the morning, as one typed model.

The model is built from the journal and the user's repository (the same review() as diff and merge);
the CLI renders it as markdown, HTML (runner/cli/report_render.py) or JSON.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field
from pydantic.alias_generators import to_camel

from runner.base.names import branch_for, validate_session
from runner.record.flagged import REASON_TEXT, FlagReason
from runner.record.models import (
    CamelModel,
    CheckResult,
    DiffStat,
    GatewayUsage,
    IterationRecord,
    Outcome,
    RunState,
    SetupRecord,
    StopReason,
    utcnow,
)
from runner.usecases.repository import harness_command, open_session
from runner.usecases.review.findings import Findings, ShowsFindings, review
from runner.usecases.status import session_status


class ReportIteration(CamelModel):
    iteration: int
    outcome: Outcome
    duration_seconds: float
    summary: str  # the agent's own words (or why its report was refused): untrusted text
    next_action: str
    commits: list[str]
    tokens: int | None  # all tokens of the iteration, when the gateway or the agent counted them
    cost_usd: float | None
    check_passed: bool | None  # the --check command's result, when it ran in this iteration


class FlaggedPath(CamelModel):
    path: str
    reasons: list[FlagReason]
    why: list[str]  # the reasons in words
    link_target: str | None  # for a symlink or submodule in the branch's history


class ReportNote(CamelModel):
    id: str
    text: str
    created_at: datetime
    delivered_in_iteration: int | None  # None: still waiting for the next iteration


class ReportCommand(CamelModel):
    label: str
    command: str  # a complete command line, quoted for a POSIX shell


class SessionReport(ShowsFindings):
    """Everything about one session needed to decide: merge, resume or discard."""

    SHOWN: ClassVar[dict[str, tuple[str, ...]]] = {
        "flagged": ("would_overwrite", "journal_paths"),  # a merge is refused over these
        "diff_stat": ("files",),
    }

    kind: Literal["solo-harness.report"] = "solo-harness.report"
    session_id: str
    repo: str
    objective: str
    status: RunState
    stop_reason: StopReason | None
    verdict: str  # the one line `status` shows
    error: str | None
    # Flagged paths come first: they are what needs a careful look before anything else.
    flagged: list[FlaggedPath]  # the findings' flagged paths, with their reasons in words
    commands: list[ReportCommand]  # what to type next
    iteration_count: int
    max_iterations: int
    iterations: list[ReportIteration]
    check_command: str | None
    last_check: CheckResult | None
    setup: SetupRecord | None = None  # the setup phase's last run, when the session has one
    branch: str
    base_commit: str
    head_commit: str | None
    commits_ahead: int | None
    discarded_ref: str | None
    diff_stat: DiffStat | None
    notes: list[ReportNote]
    stop_note: str | None
    usage: GatewayUsage
    max_cost_usd: float | None
    created_at: datetime
    finished_at: datetime | None
    generated_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def findings_from(cls, data: dict[str, Any]) -> Findings | None:
        """Its JSON shows every finding: `files`, `wouldOverwrite` and `journalPaths` as they are, and the
        flagged paths with their reasons and link targets in `flagged` (every link of the branch's history is
        flagged, runner/record/flagged.py: none is left out of `links`)."""

        def get(name: str) -> Any:
            return data.get(to_camel(name), data.get(name))

        found = [get(name) for name in ("flagged", "files", "would_overwrite", "journal_paths")]
        if any(value is None for value in found):
            return None
        flagged = [FlaggedPath.model_validate(f) for f in found[0]]
        return Findings(
            files=found[1],
            reasons={f.path: f.reasons for f in flagged},
            links={f.path: f.link_target for f in flagged if f.link_target is not None},
            would_overwrite=found[2],
            journal_paths=found[3],
        )


@dataclass(frozen=True)
class ReportRequest:
    repo: Path
    session: str


def _iteration(rec: IterationRecord) -> ReportIteration:
    tokens = cost = None
    if rec.usage is not None and rec.usage.requests:
        tokens, cost = rec.usage.tokens.total, rec.usage.cost_usd
    elif rec.agent_report is not None:
        tokens = rec.agent_report.usage.total if rec.agent_report.usage else None
        cost = rec.agent_report.cost_usd
    return ReportIteration(
        iteration=rec.iteration,
        outcome=rec.outcome,
        duration_seconds=rec.duration_seconds,
        summary=rec.summary or rec.report_error or rec.harvest_error or "",
        next_action=rec.next_action,
        commits=rec.commits,
        tokens=tokens,
        cost_usd=cost,
        check_passed=rec.check.passed if rec.check else None,
    )


def _commands(report: SessionReport, top: Path) -> list[ReportCommand]:
    s = report.session_id

    def cmd(label: str, *args: str) -> ReportCommand:
        return ReportCommand(label=label, command=harness_command(*args, "--session", s, repo=top))

    if report.status is RunState.RUNNING:
        return [cmd("still running: watch it", "hud"), cmd("or stop it at the end of this iteration", "stop")]
    if report.status is RunState.QUEUED:
        return [cmd("waiting for a slot ('harness queue' reorders): resume it if its supervisor is gone", "resume"),
                cmd("or take it out of the queue", "stop")]  # fmt: skip
    found = []
    if report.head_commit is None:
        if report.discarded_ref:
            found.append(cmd("bring the discarded branch back", "restore"))
        return found
    found.append(cmd("read the whole change", "diff"))
    if report.findings.would_overwrite or report.findings.journal_paths:
        by_hand = shlex.join(["git", "-C", str(top), "log", "-p", f"HEAD..{report.branch}"])
        label = "merge is refused (it would overwrite files git does not track): take what you want by hand"
        found.append(ReportCommand(label=label, command=by_hand))
    elif report.commits_ahead:
        accept = ["--accept-flagged"] if report.flagged else []
        label = "merge after reviewing the flagged paths" if report.flagged else "merge"
        found.append(cmd(label, "merge", *accept))
    if report.status in {RunState.STOPPED, RunState.BLOCKED, RunState.INTERRUPTED, RunState.STUCK}:
        found.append(cmd("or continue it (add a note first with 'harness note')", "resume"))
    found.append(cmd("or throw it away (undo with 'harness restore' until 'harness gc' expires it)", "discard"))
    return found


def build_report(request: ReportRequest) -> SessionReport:
    """The report of one session (read-only: nothing is written anywhere)."""
    session = validate_session(request.session)
    with open_session(request.repo, session) as opened:
        git, top, journal = opened.git, opened.top, opened.journal
        st = session_status(top, session, git)
        records = journal.iterations()
        control = journal.read_control()
        summary = journal.read_summary()
        head = git.ref_commit(branch_for(session))
        onto = git.ref_commit("HEAD")
        protected = summary.protected_paths
        seen = review(git, top, st.base_commit, head, onto=onto, protected=protected) if head else Findings.none()
        flagged = [
            FlaggedPath(path=p, reasons=why, why=[REASON_TEXT[r] for r in why], link_target=seen.links.get(p))
            for p, why in seen.reasons.items()
        ]
        checks = [rec.check for rec in records if rec.check is not None]
        report = SessionReport(
            session_id=session,
            repo=str(top),
            objective=st.objective,
            status=st.status,
            stop_reason=st.stop_reason,
            verdict=st.verdict,
            error=st.error,
            flagged=flagged,
            commands=[],
            iteration_count=st.iteration_count,
            max_iterations=st.max_iterations,
            iterations=[_iteration(rec) for rec in records],
            check_command=summary.check_command,
            last_check=checks[-1] if checks else None,
            setup=st.setup,
            branch=st.branch,
            base_commit=st.base_commit,
            head_commit=head,
            commits_ahead=st.commits_ahead,
            discarded_ref=st.discarded_ref,
            diff_stat=git.diff_stat(st.base_commit, head) if head else None,
            findings=seen,
            notes=[
                ReportNote(id=n.id, text=n.text, created_at=n.created_at, delivered_in_iteration=n.consumed_iteration)
                for n in control.notes
            ],
            stop_note=control.stop_note,
            usage=st.usage,
            max_cost_usd=st.max_cost_usd,
            created_at=st.created_at,
            finished_at=st.finished_at,
        )
        report.commands = _commands(report, top)
        return report
