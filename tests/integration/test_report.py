"""`harness report` of a real run (real engine, real git), and its HTML page in a real headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runner.record.flagged import FlagReason
from runner.usecases.report import SessionReport
from tests.helpers import GitRepo, harness, run_args

pytestmark = pytest.mark.docker

EVIL = "\x1b]0;pwned\x07\x1b[31m<script>alert('x')</script><img src=x onerror=alert(1)>"

# The agent: a commit per iteration, a flagged file in iteration 2, and a summary full of markup and
# escape sequences (JSON-escaped by json.dump, so the status file is valid).
AGENT = f"""\
import json, os, pathlib, subprocess
it = int(os.environ["HARNESS_ITERATION"])
with open("progress.txt", "a") as f:
    f.write(f"{{it}}\\n")
if it == 2:
    pathlib.Path(".vscode").mkdir(exist_ok=True)
    pathlib.Path(".vscode/tasks.json").write_text("{{}}\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-qm", f"step {{it}}"], check=True)
report = {{"state": "done" if it == 2 else "working", "summary": f"step {{it}} " + {EVIL!r}, "next": "more"}}
with open(os.environ["HARNESS_STATUS_FILE"], "w") as f:
    json.dump(report, f)
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a local file, offline, with a new empty profile."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is missing under CI ('make test' installs it through scripts/ensure-test-tools.sh)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    profile.mkdir()
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--window-size=1200,1500", *args, page.as_uri()],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


@pytest.fixture
def finished(repo: GitRepo) -> GitRepo:
    """Session 'rep': iteration 1 stops at --max-iterations, a note is added, iteration 2 says done and the
    check passes."""
    (repo.path / "agent.py").write_text(AGENT)
    repo.git("add", "agent.py")
    repo.git("commit", "-q", "-m", "the agent script")
    first = harness(*run_args("rep", "--check", "test -s progress.txt", cmd="python3 agent.py",
                              objective="Write progress <b>now</b>", iterations=1, as_json=False),
                    cwd=repo.path)  # fmt: skip
    assert first.code == 21, first.stderr  # stopped: max-iterations
    assert harness("note", "--session", "rep", "please add <em>tests</em>", cwd=repo.path).code == 0
    second = harness("resume", "--session", "rep", "--max-iterations", "1", cwd=repo.path)
    assert second.code == 0, second.stderr
    return repo


def test_report_json_has_everything_needed_to_decide(finished: GitRepo) -> None:
    repo = finished
    r = harness("report", "--session", "rep", "--format", "json", cwd=repo.path)
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["status"] == "completed" and rep["stopReason"] == "agent-done"
    assert rep["verdict"].startswith("completed  2 iterations, 2 commits, 1 flagged")
    assert rep["objective"] == "Write progress <b>now</b>"
    assert [f["path"] for f in rep["flagged"]] == [".vscode/tasks.json"]
    assert rep["flagged"][0]["reasons"] == ["runs-later"]
    assert [(it["iteration"], it["outcome"], len(it["commits"])) for it in rep["iterations"]] == [
        (1, "working", 1), (2, "done", 1)
    ]  # fmt: skip
    assert rep["iterations"][1]["summary"] == "step 2 " + EVIL  # JSON keeps the agent's bytes, as data
    assert rep["iterations"][1]["checkPassed"] is True and rep["lastCheck"]["passed"] is True
    assert rep["checkCommand"] == "test -s progress.txt"
    assert rep["diffStat"] == {"filesChanged": 2, "insertions": 3, "deletions": 0}
    assert rep["headCommit"] == repo.git("rev-parse", "harness/rep")
    assert [(n["text"], n["deliveredInIteration"]) for n in rep["notes"]] == [("please add <em>tests</em>", 2)]
    commands = [c["command"] for c in rep["commands"]]
    assert commands == [
        f"harness diff --session rep --repo {repo.path}",
        f"harness merge --accept-flagged --session rep --repo {repo.path}",  # flagged: after the review
        f"harness discard --session rep --repo {repo.path}",
    ]
    # The same as --json, and the same numbers as status.
    assert harness("report", "--session", "rep", "--json", cwd=repo.path).json()["verdict"] == rep["verdict"]
    # The JSON is the model: it loads back, and prints the same again.
    loaded = SessionReport.model_validate_json(r.stdout)
    assert loaded.findings.reasons == {".vscode/tasks.json": [FlagReason.RUNS_LATER]}
    assert loaded.model_dump_json(by_alias=True, indent=2) + "\n" == r.stdout
    st = harness("status", "--session", "rep", "--json", cwd=repo.path).json()
    assert st["verdict"] == rep["verdict"] and st["reasons"] == {".vscode/tasks.json": ["runs-later"]}


def test_report_md_and_terminal_views_keep_agent_text_inert(finished: GitRepo) -> None:
    repo = finished
    md = harness("report", "--session", "rep", cwd=repo.path)
    assert md.code == 0, md.stderr
    text = md.stdout
    assert text.index("## Review first: flagged paths") < text.index("## Iterations")  # flagged first
    assert "\x1b" not in text and "\x07" not in text and "<script" not in text and "<img" not in text
    assert "step 2 \\\\x1b\\]0;pwned\\\\x07\\\\x1b\\[31m&lt;script&gt;alert('x')&lt;/script&gt;" in text  # text
    assert "please add &lt;em&gt;tests&lt;/em&gt;" in text
    assert "\n\n    Write progress <b>now</b>\n" in text  # an indented code block shows it as written
    for view in (harness("status", cwd=repo.path), harness("status", "--session", "rep", cwd=repo.path),
                 harness("list", cwd=repo.path)):  # fmt: skip
        assert view.code == 0, view.stderr
        assert "\x1b" not in view.stdout + view.stderr and "\x07" not in view.stdout
    line = next(ln for ln in harness("status", cwd=repo.path).stdout.splitlines() if ln.startswith("rep"))
    assert "completed  2 iterations, 2 commits, 1 flagged: review the flagged paths, then merge" in line


def test_report_html_is_one_inert_page_a_browser_shows(finished: GitRepo, tmp_path: Path) -> None:
    repo = finished
    page = tmp_path / "report.html"
    r = harness("report", "--session", "rep", "--format", "html", "--output", str(page), cwd=repo.path)
    assert r.code == 0, r.stderr
    assert r.stdout == "" and page.is_file()
    html = page.read_text()
    assert "<script" not in html.lower() and "<img" not in html.lower() and "\x1b" not in html
    assert "http://" not in html and "https://" not in html and "<link" not in html  # nothing fetched
    assert "default-src 'none'" in html  # and the page's own policy forbids it anyway

    shot = tmp_path / "report.png"
    taken = browse(page, tmp_path, f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dom = browse(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    tree = dom.stdout
    assert '<tr class="iteration" id="iteration-1">' in tree and '<tr class="iteration" id="iteration-2">' in tree
    assert '<section class="flagged" id="flagged">' in tree and ".vscode/tasks.json" in tree
    # The summary is text in the DOM: no element was made of it.
    assert "<script" not in tree.lower() and "<img" not in tree.lower()
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in tree
