"""`harness report` and the morning verdict on a recorded journal and a real git repository (no engine):
the page has every fact, flagged paths first, and agent-written text stays inert in md, HTML and a terminal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runner.cli.report_render import to_html, to_markdown
from runner.record.journal import Journal, ensure_excluded
from runner.record.models import (
    AgentInfo,
    AgentReport,
    CheckResult,
    GatewayUsage,
    IterationRecord,
    Limits,
    Note,
    Outcome,
    RunState,
    RunSummary,
    StopReason,
    TokenUsage,
    WorktreeInfo,
    utcnow,
)
from runner.usecases.report import ReportRequest, SessionReport, build_report
from tests.helpers import GitRepo, harness

EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m<script>alert(1)</script><img src=x onerror=alert(2)>|*[x](javascript:y)"


def record(repo: GitRepo, session: str = "night", *, state: RunState = RunState.COMPLETED) -> Journal:
    """What a supervisor leaves: two iterations (gateway-counted, then agent-counted with a check), a note
    delivered and one waiting, and one commit on harness/<session> that changes .envrc and app.py."""
    ensure_excluded(repo.path / ".git")
    base = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "-b", f"harness/{session}")
    (repo.path / ".envrc").write_text("export X=1\n")
    (repo.path / "app.py").write_text("print('hello, world')\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "agent work")
    head = repo.git("rev-parse", "HEAD")
    repo.git("checkout", "-q", "main")
    journal = Journal.for_repo(repo.path, session)
    journal.create("Make it <b>better</b>")
    now = utcnow()
    summary = RunSummary(
        session_id=session, objective="Make it <b>better</b>", status=state,
        stop_reason=StopReason.AGENT_DONE if state is RunState.COMPLETED else StopReason.MAX_ITERATIONS,
        iteration_count=2, max_iterations=5, last_iteration=2, last_outcome=Outcome.DONE, last_summary=EVIL,
        worktree=WorktreeInfo(base_ref="HEAD", base_commit=base, path="/nonexistent/copy", branch=f"harness/{session}"),
        repo=str(repo.path), run_dir="/nonexistent", image="harness-base:latest",
        agent=AgentInfo(name="custom", command=["sh", "-c", "true"]), limits=Limits(max_cost_usd=5.0),
        check_command="make test", head_commit=head,
        usage=GatewayUsage(requests=3, tokens=TokenUsage(input_tokens=1000, output_tokens=500), cost_usd=1.23),
        created_at=now - timedelta(hours=8), finished_at=now - timedelta(hours=1),
    )  # fmt: skip
    journal.write_summary(summary)
    check = CheckResult(command="make test", passed=True, exit_code=0, duration_seconds=4.0, log_file="c.log",
                        output_tail=f"ok {EVIL}")  # fmt: skip
    for n, outcome in ((1, Outcome.WORKING), (2, Outcome.DONE)):
        journal.write_iteration(IterationRecord(
            session_id=session, iteration=n, outcome=outcome, summary=f"step {n} {EVIL}", next_action=EVIL,
            log_file=journal.log_path(n).name, limits=summary.limits, started_at=now - timedelta(hours=3 - n),
            duration_seconds=600.0 * n, commits=[head] if n == 2 else [],
            usage=GatewayUsage(requests=3, tokens=TokenUsage(input_tokens=1000, output_tokens=500), cost_usd=1.23)
            if n == 1 else None,
            agent_report=AgentReport(usage=TokenUsage(input_tokens=10, output_tokens=5), cost_usd=0.01)
            if n == 2 else None,
            check=check if n == 2 else None,
        ))  # fmt: skip

    def notes(control: object) -> None:
        control.notes = [  # type: ignore[attr-defined]
            Note(id="n1", text=f"use pytest {EVIL}", consumed_iteration=2, consumed_at=now),
            Note(id="n2", text="later", created_at=now),
        ]

    journal.update_control(notes)
    return journal


def test_the_report_holds_every_fact_with_flagged_paths_first(repo: GitRepo) -> None:
    record(repo)
    r = build_report(ReportRequest(repo=repo.path, session="night"))
    assert isinstance(r, SessionReport)
    assert (r.status, r.stop_reason) == (RunState.COMPLETED, StopReason.AGENT_DONE)
    assert r.verdict == "completed  2 iterations, 1 commit, $1.23, 1 flagged: review the flagged paths, then merge"
    assert [(f.path, [x.value for x in f.reasons]) for f in r.flagged] == [(".envrc", ["runs-later"])]
    assert [(i.iteration, i.outcome, i.tokens, i.cost_usd, i.check_passed) for i in r.iterations] == [
        (1, Outcome.WORKING, 1500, 1.23, None), (2, Outcome.DONE, 15, 0.01, True)
    ]  # fmt: skip
    assert r.last_check is not None and r.last_check.passed and r.check_command == "make test"
    assert r.diff_stat is not None and (r.diff_stat.files_changed, r.diff_stat.insertions) == (2, 2)
    assert sorted(r.findings.files) == [".envrc", "app.py"]
    assert [(n.id, n.delivered_in_iteration) for n in r.notes] == [("n1", 2), ("n2", None)]
    assert [c.command for c in r.commands] == [
        f"harness diff --session night --repo {repo.path}",
        f"harness merge --accept-flagged --session night --repo {repo.path}",
        f"harness discard --session night --repo {repo.path}",
    ]
    md = to_markdown(r)
    order = [md.index(h) for h in ("# Session night", "## Review first", "## What to do", "## Iterations",
                                   "## Check", "## Notes given", "## Files changed")]  # fmt: skip
    assert order == sorted(order)
    html = to_html(r)
    assert html.index('id="flagged"') < html.index('id="commands"') < html.index('id="iterations"')
    assert html.count('<tr class="iteration"') == 2


@pytest.mark.parametrize("render", [to_markdown, to_html], ids=["md", "html"])
def test_agent_text_is_inert_in_md_and_html(repo: GitRepo, render: object) -> None:
    record(repo)
    r = build_report(ReportRequest(repo=repo.path, session="night"))
    assert EVIL in r.iterations[0].summary  # positive control: the model holds the bytes as written
    page = render(r)  # type: ignore[operator]
    for bad in ("\x1b", "\x07", "\x9b"):
        assert bad not in page, (bad, render)
    # Markup only inside markdown's indented code blocks (the objective, the check's output), which no
    # renderer interprets; everywhere else it is escaped.
    outside = page if render is to_html else "\n".join(ln for ln in page.splitlines() if not ln.startswith("    "))
    for bad in ("<script", "<img", "<b>better"):
        assert bad not in outside, (bad, render)
    assert "pwned" in page and "alert(1)" in page  # shown, as text
    if render is to_html:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "Make it &lt;b&gt;better&lt;/b&gt;" in page
        assert "http:" not in page and "https:" not in page and "<link" not in page  # nothing to fetch
    else:
        # Markdown: no raw HTML, no table cell broken by '|', no link made of '[x](...)'.
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "\\|\\*\\[x\\](javascript:y)" in page


def test_terminal_views_of_the_report_and_the_verdicts_are_inert(repo: GitRepo) -> None:
    record(repo)
    for args in (("report", "--session", "night"), ("status",), ("status", "--session", "night"), ("list",)):
        shown = harness(*args, cwd=repo.path)
        assert shown.code == 0, (args, shown.stderr)
        assert not {"\x1b", "\x07", "\x9b"} & set(shown.stdout + shown.stderr), args
    line = harness("status", cwd=repo.path).stdout.strip()
    assert line.startswith("night  completed  2 iterations, 1 commit, $1.23, 1 flagged: review the flagged paths")
    listed = harness("status", "--json", cwd=repo.path).json()
    assert listed[0]["verdict"].startswith("completed  2 iterations") and listed[0]["flagged"] == [".envrc"]
    assert listed[0]["sessionId"] == "night" and "iterationCount" in listed[0]  # the old fields stay


def test_report_options_and_errors(repo: GitRepo) -> None:
    record(repo)
    bad = harness("report", "--session", "night", "--format", "pdf", cwd=repo.path)
    assert bad.code == 2 and "--format" in bad.stderr
    nowhere = harness("report", "--session", "night", "--output", str(repo.path / "no/such/dir/r.md"), cwd=repo.path)
    assert nowhere.code == 2 and "--output" in nowhere.stderr
    assert harness("report", "--session", "nope", cwd=repo.path).code == 7  # SESSION_NOT_FOUND
    out = repo.path.parent / "r.html"
    wrote = harness("report", "--session", "night", "--format", "html", "-o", str(out), cwd=repo.path)
    assert wrote.code == 0 and wrote.stdout == "" and out.read_text().startswith("<!DOCTYPE html>")


def test_a_discarded_branch_is_reported_with_the_command_that_restores_it(repo: GitRepo) -> None:
    record(repo, "gone", state=RunState.STOPPED)
    tip = repo.git("rev-parse", "harness/gone")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    repo.git("update-ref", f"refs/harness-discarded/gone/{stamp}", tip)  # as discard --keep-journal leaves it
    repo.git("branch", "-D", "harness/gone")
    r = build_report(ReportRequest(repo=repo.path, session="gone"))
    assert r.head_commit is None and r.discarded_ref == f"refs/harness-discarded/gone/{stamp}"
    assert r.flagged == [] and r.diff_stat is None
    assert [c.command for c in r.commands] == [f"harness restore --session gone --repo {repo.path}"]
    assert r.verdict.endswith("branch discarded: 'harness restore' brings it back")


def test_the_report_json_loads_back_into_the_same_report(repo: GitRepo) -> None:
    """What `report --format json` prints is the model: loaded back, it is the report the use case builds
    (its findings, printed as flat keys, included), and it prints the same JSON again."""
    record(repo)
    repo.git("checkout", "-q", "harness/night")
    (repo.path / "link").symlink_to("app.py")  # a link: flagged, with its target
    (repo.path / "notes.txt").write_text("the agent's\n")  # untracked in the user's tree: a merge would replace it
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "a link and notes")
    repo.git("checkout", "-q", "main")
    (repo.path / "notes.txt").write_text("the user's own\n")
    printed = harness("report", "--session", "night", "--format", "json", cwd=repo.path)
    assert printed.code == 0, printed.stderr
    loaded = SessionReport.model_validate_json(printed.stdout)
    built = build_report(ReportRequest(repo=repo.path, session="night"))
    assert built.findings.links == {"link": "app.py"} and built.findings.would_overwrite == ["notes.txt"]  # control
    assert set(built.findings.reasons) == {".envrc", "link"} and "notes.txt" in built.findings.files
    assert loaded.findings == built.findings
    assert loaded.model_copy(update={"generated_at": built.generated_at}) == built
    assert loaded.model_dump_json(by_alias=True, indent=2) + "\n" == printed.stdout
